-- Named queries of the embedded send outbox. Times are milliseconds since the epoch.

-- schema --
CREATE TABLE IF NOT EXISTS outbox_sends (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL,
    group_id TEXT,
    deduplication_id TEXT,
    created_at_ms INTEGER NOT NULL,
    claimed_until_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_sends_by_claim ON outbox_sends (claimed_until_ms);

-- add --
INSERT INTO outbox_sends (id, queue, body, attributes, group_id, deduplication_id,
                          created_at_ms, claimed_until_ms, attempts)
VALUES (:id, :queue, :body, :attributes, :group_id, :deduplication_id, :now, :claimed_until, 1);

-- due --
SELECT id FROM outbox_sends WHERE claimed_until_ms <= :now ORDER BY created_at_ms LIMIT :limit;

-- claim --
UPDATE outbox_sends SET claimed_until_ms = :claimed_until, attempts = attempts + 1
WHERE id = :id
RETURNING id, queue, body, attributes, group_id, deduplication_id, attempts;

-- remove --
DELETE FROM outbox_sends WHERE id = :id;

-- count --
SELECT count(*) FROM outbox_sends;
