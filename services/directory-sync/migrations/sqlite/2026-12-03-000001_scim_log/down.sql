DROP TABLE scim_requests;
ALTER TABLE directories DROP COLUMN scim_log_days;
