-- The optional per-directory log of raw SCIM requests and responses, for debugging an
-- IdP. scim_log_days = 0 is off (the default): nothing is recorded. Rows are written
-- after the IdP got its answer, with secrets stripped and bodies capped, and pruned by
-- the worker once older than their directory's scim_log_days. No foreign key: a row
-- written just after its directory was deleted must not fail the batch; the prune
-- removes rows of directories that are gone or no longer log.
ALTER TABLE directories ADD COLUMN scim_log_days INTEGER NOT NULL DEFAULT 0;

CREATE TABLE scim_requests (
    -- UUIDv7: newest first is id order.
    id TEXT PRIMARY KEY NOT NULL,
    directory_id TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    -- JSON object of the kept request headers.
    request_headers TEXT NOT NULL,
    request_body TEXT NOT NULL,
    request_truncated BOOLEAN NOT NULL,
    status INTEGER NOT NULL,
    response_body TEXT NOT NULL,
    response_truncated BOOLEAN NOT NULL,
    duration_us BIGINT NOT NULL
);
CREATE INDEX scim_requests_by_directory ON scim_requests (directory_id, id);
CREATE INDEX scim_requests_by_time ON scim_requests (directory_id, received_at);
