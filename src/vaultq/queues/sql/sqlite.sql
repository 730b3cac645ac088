-- Named queries of the embedded queue backend. Every value is a bound parameter.
-- Times are milliseconds since the epoch. A message is:
--   visible    visible_at_ms <= now
--   in flight  visible_at_ms >  now and receive_count > 0
--   delayed    visible_at_ms >  now and receive_count = 0
--   expired    enqueued_at_ms <= now - retention (swept; never delivered)

-- schema --
CREATE TABLE IF NOT EXISTS queues (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    attributes TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    md5 TEXT NOT NULL,
    attributes TEXT,
    group_id TEXT,
    dedup_id TEXT,
    sent_at_ms INTEGER NOT NULL,
    enqueued_at_ms INTEGER NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    first_received_at_ms INTEGER,
    leased_at_ms INTEGER,
    lease TEXT,
    failure_reason TEXT,
    failure_error TEXT,
    dl_source TEXT,
    dl_reason TEXT,
    dl_receive_count INTEGER,
    dl_last_error TEXT,
    dl_moved_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (queue_id, visible_at_ms);
CREATE INDEX IF NOT EXISTS messages_by_age ON messages (queue_id, enqueued_at_ms);
CREATE INDEX IF NOT EXISTS messages_by_group ON messages (queue_id, group_id, seq)
    WHERE group_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_group_visibility
    ON messages (queue_id, group_id, visible_at_ms) WHERE group_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS deduplication (
    queue_id INTEGER NOT NULL,
    scope TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    md5 TEXT NOT NULL,
    seq INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (queue_id, scope, dedup_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deduplication_by_expiry ON deduplication (expires_at_ms);

-- insert_queue --
INSERT INTO queues (name, attributes, created_at_ms) VALUES (:name, :attributes, :now);

-- queue_by_name --
SELECT id, name, attributes, created_at_ms FROM queues WHERE name = :name;

-- update_queue --
UPDATE queues SET attributes = :attributes WHERE id = :queue;

-- list_queues --
SELECT name FROM queues WHERE substr(name, 1, length(:prefix)) = :prefix ORDER BY name;

-- all_queues --
SELECT id, name, attributes, created_at_ms FROM queues;

-- delete_queue --
DELETE FROM queues WHERE id = :queue;

-- delete_queue_messages --
DELETE FROM messages WHERE queue_id = :queue;

-- delete_queue_dedup --
DELETE FROM deduplication WHERE queue_id = :queue;

-- insert_message --
INSERT INTO messages (queue_id, message_id, body, md5, attributes, group_id, dedup_id,
                      sent_at_ms, enqueued_at_ms, visible_at_ms)
VALUES (:queue, :message_id, :body, :md5, :attributes, :group_id, :dedup_id,
        :now, :now, :visible_at)
RETURNING seq;

-- insert_standard_message --
INSERT INTO messages (queue_id, message_id, body, md5, attributes, group_id, dedup_id,
                      sent_at_ms, enqueued_at_ms, visible_at_ms)
VALUES (:queue, :message_id, :body, :md5, :attributes, :group_id, :dedup_id,
        :now, :now, :visible_at);

-- find_duplicate --
SELECT message_id, md5, seq FROM deduplication
WHERE queue_id = :queue AND scope = :scope AND dedup_id = :dedup_id AND expires_at_ms > :now;

-- remember_dedup --
INSERT OR REPLACE INTO deduplication (queue_id, scope, dedup_id, message_id, md5, seq,
                                      expires_at_ms)
VALUES (:queue, :scope, :dedup_id, :message_id, :md5, :seq, :expires_at);

-- visible_candidates --
SELECT seq, receive_count FROM messages INDEXED BY messages_by_visibility
WHERE queue_id = :queue AND visible_at_ms <= :now AND enqueued_at_ms > :expired_before
ORDER BY visible_at_ms
LIMIT :limit;

-- has_groups --
SELECT 1 FROM messages WHERE queue_id = :queue AND group_id IS NOT NULL LIMIT 1;

-- group_heads --
-- One probe per group (a loose index scan), then each group's first live message.
WITH RECURSIVE groups (group_id) AS (
    SELECT (SELECT group_id FROM messages
            WHERE queue_id = :queue AND group_id IS NOT NULL ORDER BY group_id LIMIT 1)
    UNION ALL
    SELECT (SELECT m.group_id FROM messages AS m
            WHERE m.queue_id = :queue AND m.group_id > groups.group_id
            ORDER BY m.group_id LIMIT 1)
    FROM groups WHERE groups.group_id IS NOT NULL
)
SELECT h.seq, h.group_id, h.receive_count
FROM groups
JOIN messages AS h ON h.seq = (
    SELECT seq FROM messages
    WHERE queue_id = :queue AND group_id = groups.group_id
      AND enqueued_at_ms > :expired_before
      AND (:visible_only = 0 OR visible_at_ms <= :now)
    ORDER BY seq LIMIT 1)
WHERE h.visible_at_ms <= :now
  -- FIFO: a group with any message in flight is blocked, wherever that message stands.
  AND (:visible_only = 1 OR NOT EXISTS (
    SELECT 1 FROM messages INDEXED BY messages_by_group_visibility
    WHERE queue_id = :queue AND group_id = groups.group_id
      AND visible_at_ms > :now AND receive_count > 0 AND enqueued_at_ms > :expired_before))
ORDER BY h.seq
LIMIT :limit;

-- group_run --
SELECT seq, receive_count, visible_at_ms FROM messages
WHERE queue_id = :queue AND group_id = :group_id AND enqueued_at_ms > :expired_before
ORDER BY seq
LIMIT :limit;

-- count_in_flight --
SELECT count(*) FROM (
    SELECT 1 FROM messages INDEXED BY messages_by_visibility
    WHERE queue_id = :queue AND visible_at_ms > :now AND receive_count > 0
    LIMIT :limit);

-- lease --
UPDATE messages
SET receive_count = receive_count + 1,
    first_received_at_ms = coalesce(first_received_at_ms, :now),
    visible_at_ms = :visible_at,
    leased_at_ms = :now,
    lease = lower(hex(randomblob(8)))
WHERE seq = :seq
RETURNING seq, message_id, lease, body, md5, attributes, sent_at_ms, receive_count,
          first_received_at_ms, group_id, dedup_id, dl_source, dl_reason, dl_receive_count,
          dl_last_error, dl_moved_at_ms;

-- move_message --
-- Moves re-insert the row: a FIFO destination then sees it in arrival order.
INSERT INTO messages (queue_id, message_id, body, md5, attributes, group_id, dedup_id,
                      sent_at_ms, enqueued_at_ms, visible_at_ms, dl_source, dl_reason,
                      dl_receive_count, dl_last_error, dl_moved_at_ms)
SELECT :target, message_id, body, md5, attributes, group_id, dedup_id, sent_at_ms,
       CASE WHEN :reset_enqueued THEN :now ELSE enqueued_at_ms END, :now,
       :dl_source, coalesce(:reason, failure_reason, 'MAX_RECEIVE_COUNT_EXCEEDED'),
       CASE WHEN :dl_source IS NULL THEN NULL ELSE receive_count END,
       CASE WHEN :dl_source IS NULL THEN NULL ELSE coalesce(:error, failure_error) END,
       CASE WHEN :dl_source IS NULL THEN NULL ELSE :now END
FROM messages WHERE seq = :seq;

-- delete_by_seq --
DELETE FROM messages WHERE seq = :seq;

-- message_lease --
SELECT queue_id, lease, visible_at_ms, leased_at_ms, enqueued_at_ms FROM messages WHERE seq = :seq;

-- set_visibility --
UPDATE messages
SET visible_at_ms = :visible_at,
    failure_reason = coalesce(:reason, failure_reason),
    failure_error = coalesce(:error, failure_error)
WHERE seq = :seq;

-- purge --
DELETE FROM messages WHERE queue_id = :queue;

-- sweep_expired --
DELETE FROM messages
WHERE queue_id = :queue AND enqueued_at_ms <= :expired_before;

-- sweep_dedup --
DELETE FROM deduplication WHERE expires_at_ms <= :now;

-- stats --
SELECT
    coalesce(sum(visible_at_ms <= :now), 0),
    coalesce(sum(visible_at_ms > :now AND receive_count > 0), 0),
    coalesce(sum(visible_at_ms > :now AND receive_count = 0), 0)
FROM messages
WHERE queue_id = :queue AND enqueued_at_ms > :expired_before;

-- oldest --
-- In a dead-letter queue the age counts from the move, as SQS reports it; retention still
-- counts from the original enqueue time.
SELECT min(coalesce(dl_moved_at_ms, enqueued_at_ms)) FROM messages
WHERE queue_id = :queue AND enqueued_at_ms > :expired_before;

-- next_visible --
SELECT min(visible_at_ms) FROM messages INDEXED BY messages_by_visibility
WHERE queue_id = :queue AND visible_at_ms > :now;

-- dead_lettered --
SELECT seq, message_id, dl_source FROM messages
WHERE queue_id = :queue AND enqueued_at_ms > :expired_before
ORDER BY seq;
