-- People: one across orgs and sources, matched by email (stored lowercased).
CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    email TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- How directories (and SSO) know a person: (directory, external id) -> user.
CREATE TABLE identity_links (
    directory_id TEXT NOT NULL,
    external_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    PRIMARY KEY (directory_id, external_id)
);

-- Memberships. seat_tier is set while active (and the product has tiers);
-- wanted_seat_tier records the mapped tier a pending member waits for.
CREATE TABLE members (
    id TEXT PRIMARY KEY NOT NULL,
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL,
    seat_tier TEXT,
    wanted_seat_tier TEXT,
    status TEXT NOT NULL CHECK (status IN ('active', 'pending_seat')),
    source TEXT NOT NULL CHECK (source IN ('manual', 'jit', 'directory')),
    directory_id TEXT,
    version BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (org_id, user_id)
);
CREATE INDEX members_by_org ON members (org_id, id);
CREATE INDEX members_by_org_status ON members (org_id, status, seat_tier);

-- Seats bought per org and tier; no row, or a NULL count, means unlimited.
CREATE TABLE seats (
    org_id TEXT NOT NULL,
    seat_tier TEXT NOT NULL,
    purchased BIGINT,
    PRIMARY KEY (org_id, seat_tier)
);

-- Append-only audit log.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    reasons TEXT NOT NULL,
    before_json TEXT NOT NULL,
    after_json TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX audit_by_org ON audit_log (org_id, id);

-- The member-event outbox; sequence order is commit order (see the store).
CREATE TABLE member_events (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    event_type TEXT NOT NULL,
    org_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- Answers of Apply batches, by idempotency key, so a retry changes nothing twice.
CREATE TABLE apply_keys (
    org_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response_hex TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (org_id, idempotency_key)
);
