-- When the process running a run last recorded it: runs left 'running' with an old
-- heartbeat belong to a replica that died, and only those are marked failed.
ALTER TABLE sync_runs ADD COLUMN heartbeat_at TIMESTAMP;
