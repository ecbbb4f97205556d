-- Whether a directory may remove people it does not know (SPEC §4 "the directory is
-- authoritative"): 'authoritative' or 'provisioning_only'. SCIM directories start
-- provisioning_only until an administrator marks them authoritative; pull
-- directories are authoritative once a full listing has completed
-- (pull_state.last_full_listing is set). Existing SCIM directories become
-- provisioning_only: the safe side (they still remove the people they themselves
-- deactivate or delete).
ALTER TABLE directories ADD COLUMN authority TEXT NOT NULL DEFAULT 'authoritative';
UPDATE directories SET authority = 'provisioning_only' WHERE kind = 'scim';
-- The brake counts removals over this rolling window (seconds).
ALTER TABLE directories ADD COLUMN brake_window_secs BIGINT NOT NULL DEFAULT 3600;

-- Who changed a directory, and how (append-only).
CREATE TABLE directory_audit (
    seq BIGSERIAL PRIMARY KEY,
    directory_id TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    before_json TEXT NOT NULL,
    after_json TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX directory_audit_by_directory ON directory_audit (directory_id, seq);

-- Removals applied per org, for the brake's rolling window (kept a day).
CREATE TABLE removal_log (
    seq BIGSERIAL PRIMARY KEY,
    org_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    removed BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX removal_log_by_org ON removal_log (org_id, created_at);

-- The one held run an org's further removals join while it waits for approval.
CREATE TABLE org_holds (
    org_id TEXT PRIMARY KEY NOT NULL,
    run_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- The member a held or failed item is about.
ALTER TABLE run_items ADD COLUMN member_id TEXT NOT NULL DEFAULT '';
-- Where a run is (waiting_for_lease, listing, reconciling, removing), and for a run
-- holding a suspect full listing, that listing's generation.
ALTER TABLE sync_runs ADD COLUMN phase TEXT NOT NULL DEFAULT '';
ALTER TABLE sync_runs ADD COLUMN held_listing BIGINT;

-- One run at a time reconciles a parent (in any replica): a parent's directories
-- decide together, so a run of one must not decide from what another is changing.
-- Taken and renewed with a conditional UPDATE like the pull lease; a dead holder's
-- lease lapses.
CREATE TABLE reconcile_leases (
    parent_id TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    expires TIMESTAMP NOT NULL
);
