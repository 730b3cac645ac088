-- Named queries of the embedded job table. Every value is a bound parameter.
-- Times are milliseconds since the epoch. A job is live while expires_at_ms > now; an
-- expired row is never returned and is deleted by sweep_expired. JSON columns hold compact
-- JSON; checkpoints are a list of [stage, object] pairs in the order they were saved.
-- The tables are prefixed jobs_ so that the job table can share a file with the queues.

-- schema --
CREATE TABLE IF NOT EXISTS jobs_items (
    id INTEGER PRIMARY KEY,
    pk TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    day TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    version INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    current_stage TEXT,
    progress REAL NOT NULL,
    stages_completed TEXT NOT NULL,
    checkpoints TEXT NOT NULL,
    input_files TEXT NOT NULL,
    output_files TEXT NOT NULL,
    result TEXT,
    error TEXT,
    attributes TEXT NOT NULL
);
-- One index per listing, as the DynamoDB table's global secondary indexes will be.
CREATE INDEX IF NOT EXISTS jobs_items_by_status
    ON jobs_items (tenant_id, status, created_at_ms, pk);
CREATE INDEX IF NOT EXISTS jobs_items_by_client
    ON jobs_items (tenant_id, client_id, created_at_ms, pk);
CREATE INDEX IF NOT EXISTS jobs_items_by_day
    ON jobs_items (tenant_id, day, created_at_ms, pk);
CREATE INDEX IF NOT EXISTS jobs_items_by_expiry ON jobs_items (expires_at_ms);
CREATE TABLE IF NOT EXISTS jobs_meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

-- remember_secret --
INSERT OR IGNORE INTO jobs_meta (name, value) VALUES ('cursor_secret', :secret);

-- secret --
SELECT value FROM jobs_meta WHERE name = 'cursor_secret';

-- get_job --
SELECT * FROM jobs_items WHERE pk = :pk AND expires_at_ms > :now;

-- delete_expired_job --
DELETE FROM jobs_items WHERE pk = :pk AND expires_at_ms <= :now;

-- insert_job --
INSERT INTO jobs_items (pk, tenant_id, client_id, job_id, status, day, created_at_ms,
                        updated_at_ms, expires_at_ms, version, attempts, current_stage,
                        progress, stages_completed, checkpoints, input_files, output_files,
                        result, error, attributes)
VALUES (:pk, :tenant_id, :client_id, :job_id, :status, :day, :created_at_ms,
        :updated_at_ms, :expires_at_ms, :version, :attempts, :current_stage,
        :progress, :stages_completed, :checkpoints, :input_files, :output_files,
        :result, :error, :attributes);

-- update_job --
UPDATE jobs_items
SET status = :status,
    updated_at_ms = :updated_at_ms,
    version = :version,
    attempts = :attempts,
    current_stage = :current_stage,
    progress = :progress,
    stages_completed = :stages_completed,
    checkpoints = :checkpoints,
    output_files = :output_files,
    result = :result,
    error = :error,
    attributes = :attributes
WHERE pk = :pk;

-- list_by_status --
SELECT * FROM jobs_items INDEXED BY jobs_items_by_status
WHERE tenant_id = :tenant_id AND status = :status
  AND created_at_ms >= :since_ms AND created_at_ms < :until_ms
  AND (created_at_ms, pk) < (:after_created_at_ms, :after_pk)
  AND expires_at_ms > :now
ORDER BY created_at_ms DESC, pk DESC
LIMIT :limit;

-- list_by_client --
SELECT * FROM jobs_items INDEXED BY jobs_items_by_client
WHERE tenant_id = :tenant_id AND client_id = :client_id
  AND created_at_ms >= :since_ms AND created_at_ms < :until_ms
  AND (created_at_ms, pk) < (:after_created_at_ms, :after_pk)
  AND expires_at_ms > :now
ORDER BY created_at_ms DESC, pk DESC
LIMIT :limit;

-- list_by_day --
SELECT * FROM jobs_items INDEXED BY jobs_items_by_day
WHERE tenant_id = :tenant_id AND day = :day
  AND (created_at_ms, pk) < (:after_created_at_ms, :after_pk)
  AND expires_at_ms > :now
ORDER BY created_at_ms DESC, pk DESC
LIMIT :limit;

-- sweep_expired --
DELETE FROM jobs_items
WHERE id IN (SELECT id FROM jobs_items WHERE expires_at_ms <= :now LIMIT :limit);

-- count_by_status --
-- For metrics: every tenant's live jobs, per status (an index scan of the status index).
SELECT status, count(*) FROM jobs_items WHERE expires_at_ms > :now GROUP BY status;
