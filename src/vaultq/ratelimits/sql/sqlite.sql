-- Named queries of the embedded rate limiter. Every value is a bound parameter.
-- Times are milliseconds since the epoch. A key without a row has a full bucket, so a row
-- whose bucket is full again (full_at_ms <= now) carries no information and is swept.
-- The token arithmetic lives in vaultq.runtime.rate_limit, not here: SQL only stores it.
-- The table is prefixed ratelimit_ so that it can share a file with the queues.

-- schema --
CREATE TABLE IF NOT EXISTS ratelimit_buckets (
    key TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    full_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ratelimit_buckets_by_full_at ON ratelimit_buckets (full_at_ms);

-- get --
SELECT tokens, updated_at_ms FROM ratelimit_buckets WHERE key = :key;

-- put --
INSERT INTO ratelimit_buckets (key, tokens, updated_at_ms, full_at_ms)
VALUES (:key, :tokens, :updated_at_ms, :full_at_ms)
ON CONFLICT (key) DO UPDATE
    SET tokens = excluded.tokens,
        updated_at_ms = excluded.updated_at_ms,
        full_at_ms = excluded.full_at_ms;

-- sweep --
DELETE FROM ratelimit_buckets
WHERE key IN (
    SELECT key FROM ratelimit_buckets WHERE full_at_ms <= :now LIMIT :limit
);
