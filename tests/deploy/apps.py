"""A test app with what a deployment must carry: FIFO with a DLQ, a bucket notifying a queue
with a DLQ, a queue without one, and handlers that write down the records they ran."""

from __future__ import annotations

import json
from typing import Any

from vaultq.app import App, DeadLetterQueue
from vaultq.blobs import BucketNotification
from vaultq.observe.alarms import api_errors, dlq_depth, handler_errors, oldest_message_age_seconds

#: Message ids each handler ran, in order; tests clear it.
SEEN: list[str] = []

app = App("deploytest")
app.queue(
    "ordered.fifo",
    fifo=True,
    content_based_deduplication=True,
    visibility_timeout_seconds=60,
    message_retention_seconds=86_400,
    dead_letter=DeadLetterQueue(max_receive_count=5),
)
app.queue(
    "uploads", visibility_timeout_seconds=30, dead_letter=DeadLetterQueue(max_receive_count=3)
)
app.queue("plain", visibility_timeout_seconds=600)
app.bucket(
    "deploytest-inbox",
    notifications=[BucketNotification("uploads", prefix="in/", suffix=".json")],
)


@app.handler(
    queue="ordered.fifo", report_batch_item_failures=True, timeout_seconds=20, max_concurrency=1
)
def ordered(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Reports only the records asked to fail, not the later ones of their group."""
    failures = []
    for record in event["Records"]:
        SEEN.append(record["messageId"])
        if json.loads(record["body"])["do"] == "fail":
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


@app.handler(
    queue="uploads",
    timeout_seconds=10,
    memory_limit_in_mb=512,
    batch_size=100,
    batching_window_seconds=2.5,
    max_concurrency=5,
)
def uploads(event: dict[str, Any], context: Any) -> None:
    for record in event["Records"]:
        for s3_record in json.loads(record["body"])["Records"]:
            SEEN.append(s3_record["s3"]["object"]["key"])


@app.handler(queue="plain", timeout_seconds=900)
def plain(event: dict[str, Any], context: Any) -> dict[str, Any]:
    SEEN.extend(r["messageId"] for r in event["Records"])
    return {"remaining_ms": context.get_remaining_time_in_millis()}


app.alarm("uploads-dead-letters", metric=dlq_depth("uploads"), threshold=1)
app.alarm("plain-stuck", metric=oldest_message_age_seconds("plain"), threshold=600)
app.alarm("errors", metric=handler_errors(), threshold=5, period_seconds=300, comparison=">")
app.alarm("ordered-errors", metric=handler_errors("ordered"), threshold=1)
app.alarm("api-5xx", metric=api_errors(), threshold=1)
