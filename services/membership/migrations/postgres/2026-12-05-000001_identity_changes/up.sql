-- What each identity last reported of the person: a change of email or name in one
-- directory updates the person once, and two directories that disagree do not flip
-- the person back and forth on every run.
ALTER TABLE identity_links ADD COLUMN email TEXT;
ALTER TABLE identity_links ADD COLUMN display_name TEXT;
-- A person's identities, read with every member listing.
CREATE INDEX identity_links_by_user ON identity_links (user_id);

-- When a member started waiting for a seat (pending, or active and waiting to move
-- tier): freed seats go to waiting members in this order. Existing waiting members
-- keep the order they had (their last change).
ALTER TABLE members ADD COLUMN waiting_since TIMESTAMP;
UPDATE members SET waiting_since = updated_at WHERE status = 'pending_seat' OR wanted_seat_tier IS NOT NULL;
CREATE INDEX members_by_waiting ON members (org_id, waiting_since);
