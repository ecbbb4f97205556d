-- Parent organizations: billing and identity umbrellas.
CREATE TABLE parent_orgs (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('enterprise', 'team', 'console')),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- Organizations; each belongs to one parent, which cannot be deleted while it has any.
CREATE TABLE orgs (
    id TEXT PRIMARY KEY NOT NULL,
    parent_id TEXT NOT NULL REFERENCES parent_orgs (id),
    name TEXT NOT NULL,
    product TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX orgs_by_parent ON orgs (parent_id, id);

-- Current settings per org; absent means the defaults (manual, version 0).
-- Mappings are JSON: they are read and written whole, never queried inside.
CREATE TABLE org_settings (
    org_id TEXT PRIMARY KEY NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    mode TEXT NOT NULL,
    advanced_group_mapping BOOLEAN NOT NULL,
    role_mappings TEXT NOT NULL,
    seat_tier_mappings TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- Every saved version of every org's settings, append-only: who changed what, when.
CREATE TABLE settings_history (
    org_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    mode TEXT NOT NULL,
    advanced_group_mapping BOOLEAN NOT NULL,
    role_mappings TEXT NOT NULL,
    seat_tier_mappings TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (org_id, version)
);
