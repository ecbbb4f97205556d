DROP TABLE reconcile_leases;
ALTER TABLE sync_runs DROP COLUMN held_listing;
ALTER TABLE sync_runs DROP COLUMN phase;
ALTER TABLE run_items DROP COLUMN member_id;
DROP TABLE org_holds;
DROP TABLE removal_log;
DROP TABLE directory_audit;
ALTER TABLE directories DROP COLUMN brake_window_secs;
ALTER TABLE directories DROP COLUMN authority;
