DROP INDEX members_by_waiting;
ALTER TABLE members DROP COLUMN waiting_since;
DROP INDEX identity_links_by_user;
ALTER TABLE identity_links DROP COLUMN display_name;
ALTER TABLE identity_links DROP COLUMN email;
