-- Named queries of the embedded metrics store. Every value is a bound parameter.
-- Times are milliseconds since the epoch; minute_ms is the start of a bucket's minute.
-- A series is a metric name and its labels (compact JSON, sorted keys, so one series has
-- exactly one text). metrics_series holds each series once with its running total, which
-- is never swept, so a Prometheus counter never goes down; metrics_buckets holds its
-- per-minute counts by series id (a few dozen bytes a row, not the labels again) and is
-- swept after the retention.
-- The tables are prefixed metrics_ so that they can share a file with the queues.

-- schema --
CREATE TABLE IF NOT EXISTS metrics_series (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    UNIQUE (name, labels)
);
CREATE TABLE IF NOT EXISTS metrics_buckets (
    series_id INTEGER NOT NULL REFERENCES metrics_series (id),
    minute_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    PRIMARY KEY (series_id, minute_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metrics_buckets_by_minute ON metrics_buckets (minute_ms);

-- add_to_total --
INSERT INTO metrics_series (name, labels, count, sum)
VALUES (:name, :labels, :count, :sum)
ON CONFLICT (name, labels) DO UPDATE
    SET count = metrics_series.count + excluded.count,
        sum = metrics_series.sum + excluded.sum
RETURNING id;

-- add_to_bucket --
INSERT INTO metrics_buckets (series_id, minute_ms, count, sum)
VALUES (:series_id, :minute_ms, :count, :sum)
ON CONFLICT (series_id, minute_ms) DO UPDATE
    SET count = metrics_buckets.count + excluded.count,
        sum = metrics_buckets.sum + excluded.sum;

-- totals --
SELECT name, labels, count, sum FROM metrics_series ORDER BY name, labels;

-- window --
-- One row per series of the metric: few, so the label filter runs in Python.
SELECT series.labels, total(buckets.count), total(buckets.sum)
FROM metrics_series AS series
JOIN metrics_buckets AS buckets ON buckets.series_id = series.id
WHERE series.name = :name AND buckets.minute_ms >= :since_minute_ms
GROUP BY series.id;

-- sweep --
-- In batches: a store that was stopped for days catches up without holding the write lock
-- (which the queues may share) for long.
DELETE FROM metrics_buckets
WHERE (series_id, minute_ms) IN (
    SELECT series_id, minute_ms FROM metrics_buckets WHERE minute_ms < :before_ms LIMIT :limit
);
