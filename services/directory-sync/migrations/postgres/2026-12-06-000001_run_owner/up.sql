-- Which replica (name#boot) runs each run: a replica that restarts under its name takes
-- over at once what it left running. (A table of its own: sync_runs is at diesel's
-- 16-column limit.)
CREATE TABLE run_owners (
    run_id TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL
);
CREATE INDEX run_owners_owner ON run_owners (owner);
