-- Named queries of the embedded alarm store. Every value is a bound parameter.
-- An alarm's history is one row per transition; its state is its latest row (highest id),
-- so state and history cannot disagree. Times are milliseconds since the epoch.
-- The table is prefixed alarms_ so that it can share a file with the queues and metrics.

-- schema --
CREATE TABLE IF NOT EXISTS alarms_history (
    id INTEGER PRIMARY KEY,
    alarm TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    old_state TEXT,
    new_state TEXT NOT NULL,
    reason TEXT NOT NULL,
    value REAL
);
CREATE INDEX IF NOT EXISTS alarms_history_by_alarm ON alarms_history (alarm, id);

-- latest --
SELECT alarm, at_ms, old_state, new_state, reason, value
FROM alarms_history
WHERE id IN (SELECT max(id) FROM alarms_history GROUP BY alarm)
ORDER BY alarm;

-- current_state --
SELECT new_state FROM alarms_history WHERE alarm = :alarm ORDER BY id DESC LIMIT 1;

-- append --
INSERT INTO alarms_history (alarm, at_ms, old_state, new_state, reason, value)
VALUES (:alarm, :at_ms, :old_state, :new_state, :reason, :value)
RETURNING id;

-- sweep --
-- Runs when a transition is appended, over that alarm's rows only: the row just appended
-- is its latest, so the alarm keeps its state however old the rest is.
DELETE FROM alarms_history WHERE alarm = :alarm AND at_ms < :before_ms AND id < :latest_id;

-- history --
SELECT alarm, at_ms, old_state, new_state, reason, value
FROM alarms_history
WHERE alarm = :alarm
ORDER BY id DESC
LIMIT :limit;
