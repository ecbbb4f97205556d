-- Directories: one connection to an IdP each, attached to a parent org (in policy).
CREATE TABLE directories (
    id TEXT PRIMARY KEY NOT NULL,
    parent_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    display_name TEXT NOT NULL,
    config_json TEXT NOT NULL,
    sync_interval_secs BIGINT NOT NULL,
    brake_percent INTEGER NOT NULL,
    brake_min INTEGER NOT NULL,
    state TEXT NOT NULL,
    -- SHA-256 (hex) of the SCIM bearer token; the token itself is never stored.
    scim_token_hash TEXT,
    last_error TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX directories_by_token ON directories (scim_token_hash);
CREATE INDEX directories_by_parent ON directories (parent_id, id);

-- The mirror: users as the IdP last told us. Lowercased copies make the lookups IdPs
-- send (userName, externalId, email) indexed and case-insensitive.
CREATE TABLE dir_users (
    id TEXT PRIMARY KEY NOT NULL,
    directory_id TEXT NOT NULL REFERENCES directories (id) ON DELETE CASCADE,
    user_name TEXT NOT NULL,
    user_name_lower TEXT NOT NULL,
    external_id TEXT,
    email_lower TEXT,
    display_name TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    attributes_json TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX dir_users_by_name ON dir_users (directory_id, user_name_lower);
CREATE INDEX dir_users_by_external ON dir_users (directory_id, external_id);
CREATE INDEX dir_users_by_email ON dir_users (directory_id, email_lower);

-- Every email of every user, so the lookups Entra sends (emails[type eq "work"].value eq)
-- are indexed whichever of a user's emails they name.
CREATE TABLE dir_user_emails (
    user_id TEXT NOT NULL REFERENCES dir_users (id) ON DELETE CASCADE,
    directory_id TEXT NOT NULL,
    email_lower TEXT NOT NULL,
    PRIMARY KEY (user_id, email_lower)
);
CREATE INDEX dir_user_emails_by_email ON dir_user_emails (directory_id, email_lower);

CREATE TABLE dir_groups (
    id TEXT PRIMARY KEY NOT NULL,
    directory_id TEXT NOT NULL REFERENCES directories (id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    display_name_lower TEXT NOT NULL,
    external_id TEXT,
    attributes_json TEXT NOT NULL,
    member_count BIGINT NOT NULL,
    version BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX dir_groups_by_name ON dir_groups (directory_id, display_name_lower);
CREATE INDEX dir_groups_by_external ON dir_groups (directory_id, external_id);

-- Direct group memberships, one row each, so a delta costs one indexed write per id.
CREATE TABLE dir_members (
    group_id TEXT NOT NULL REFERENCES dir_groups (id) ON DELETE CASCADE,
    member_id TEXT NOT NULL,
    member_kind TEXT NOT NULL,
    display TEXT,
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX dir_members_by_member ON dir_members (member_id, group_id);

-- Users whose mirror changed and who still need reconciling; written in the same
-- transaction as the change, deleted only after the reconcile is applied.
CREATE TABLE reconcile_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    directory_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    email TEXT NOT NULL,
    display_name TEXT NOT NULL,
    enqueued_at TIMESTAMP NOT NULL
);
CREATE INDEX reconcile_queue_by_directory ON reconcile_queue (directory_id, seq);

-- Directory events (outbox); seq order is commit order.
CREATE TABLE dir_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    directory_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    data_json TEXT NOT NULL,
    previous_json TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX dir_events_by_directory ON dir_events (directory_id, seq);
CREATE INDEX dir_events_by_time ON dir_events (created_at);

CREATE TABLE sync_runs (
    id TEXT PRIMARY KEY NOT NULL,
    directory_id TEXT NOT NULL,
    run_trigger TEXT NOT NULL,
    state TEXT NOT NULL,
    -- Per-org results (counts, brake) as JSON: read and written whole.
    orgs_json TEXT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT NOT NULL,
    processed BIGINT NOT NULL,
    total BIGINT NOT NULL,
    actor TEXT NOT NULL,
    decided_by TEXT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    ended_at TIMESTAMP
);
CREATE INDEX sync_runs_by_directory ON sync_runs (directory_id, id);
CREATE INDEX sync_runs_by_state ON sync_runs (state);

-- People a run held (brake, guardian) or failed on, with what approval needs.
CREATE TABLE run_items (
    run_id TEXT NOT NULL REFERENCES sync_runs (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    org_id TEXT NOT NULL,
    user_ref TEXT NOT NULL,
    email TEXT NOT NULL,
    display_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- The settings version of each directory-driven org last reconciled, so a change in
-- policy is noticed and reconciled.
CREATE TABLE org_watch (
    directory_id TEXT NOT NULL REFERENCES directories (id) ON DELETE CASCADE,
    org_id TEXT NOT NULL,
    settings_version BIGINT NOT NULL,
    PRIMARY KEY (directory_id, org_id)
);
