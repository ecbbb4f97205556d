DROP TABLE pull_state;
DROP INDEX dir_groups_by_generation;
DROP INDEX dir_users_by_generation;
ALTER TABLE dir_members DROP COLUMN seen_generation;
ALTER TABLE dir_groups DROP COLUMN seen_generation;
ALTER TABLE dir_groups DROP COLUMN content_hash;
ALTER TABLE dir_users DROP COLUMN seen_generation;
ALTER TABLE dir_users DROP COLUMN content_hash;
