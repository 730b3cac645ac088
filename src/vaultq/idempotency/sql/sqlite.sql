-- Named queries of the embedded idempotency store. Every value is a bound parameter.
-- Times are milliseconds since the epoch. A record is live while expires_at_ms > now; an
-- expired row is never returned, may be claimed again at once, and is swept later.
-- The table is prefixed idempotency_ so that it can share a file with the queues.

-- schema --
CREATE TABLE IF NOT EXISTS idempotency_records (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    claim_id TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    result TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_records_by_expiry
    ON idempotency_records (expires_at_ms);

-- claim --
-- Takes the key when it is free or its record expired; a live record is left as it is.
INSERT INTO idempotency_records (key, status, claim_id, expires_at_ms, result)
VALUES (:key, 'IN_PROGRESS', :claim_id, :expires_at_ms, NULL)
ON CONFLICT (key) DO UPDATE
    SET status = excluded.status,
        claim_id = excluded.claim_id,
        expires_at_ms = excluded.expires_at_ms,
        result = NULL
    WHERE idempotency_records.expires_at_ms <= :now;

-- get --
SELECT key, status, claim_id, expires_at_ms, result
FROM idempotency_records
WHERE key = :key AND expires_at_ms > :now;

-- complete --
UPDATE idempotency_records
SET status = 'COMPLETED', expires_at_ms = :expires_at_ms, result = :result
WHERE key = :key AND claim_id = :claim_id AND status = 'IN_PROGRESS';

-- release --
DELETE FROM idempotency_records
WHERE key = :key AND claim_id = :claim_id AND status = 'IN_PROGRESS';

-- sweep --
DELETE FROM idempotency_records
WHERE key IN (
    SELECT key FROM idempotency_records WHERE expires_at_ms <= :now LIMIT :limit
);
