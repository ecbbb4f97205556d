-- Pull directories (Okta, Entra, Google). A full listing marks every row it mentions
-- with the listing's generation and removes, when the listing completes, the rows
-- left with an older one (mark and sweep: nothing of the directory held in memory).
-- content_hash lets a page skip rows that did not change, so an unchanged listing
-- writes no content, no event and no queue row.
ALTER TABLE dir_users ADD COLUMN content_hash TEXT;
ALTER TABLE dir_users ADD COLUMN seen_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE dir_groups ADD COLUMN content_hash TEXT;
ALTER TABLE dir_groups ADD COLUMN seen_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE dir_members ADD COLUMN seen_generation BIGINT NOT NULL DEFAULT 0;
CREATE INDEX dir_users_by_generation ON dir_users (directory_id, seen_generation);
CREATE INDEX dir_groups_by_generation ON dir_groups (directory_id, seen_generation);

-- One row per pull directory: the stored cursor, the listing generation, the schedule,
-- and the lease that lets one replica at a time pull it (taken and renewed with a
-- conditional UPDATE; an expired lease may be taken by anyone).
CREATE TABLE pull_state (
    directory_id TEXT PRIMARY KEY NOT NULL REFERENCES directories (id) ON DELETE CASCADE,
    cursor TEXT,
    listing_generation BIGINT NOT NULL,
    last_full_listing TIMESTAMP,
    last_success TIMESTAMP,
    next_pull_at TIMESTAMP NOT NULL,
    failures INTEGER NOT NULL,
    lease_holder TEXT,
    lease_expires TIMESTAMP
);
