"""An app whose handlers do what each message body asks, and write down what they did.

Bodies are JSON: {"id": "...", "do": "ok" | "fail" | "fail-until" | "give-up" | "sleep" |
"report-fail" | "exit", "n": int}. Every invocation appends one row per record it ran to the
SQLite file named by VAULTQ_TEST_EFFECTS, so tests count side effects across processes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Any

from vaultq.app import App, DeadLetterQueue, RetryPolicy
from vaultq.runtime.failures import HandlerFailure, NonRetryableError

NO_WAIT = RetryPolicy(base_seconds=0, cap_seconds=0)

app = App("behaviours")
app.queue("work", visibility_timeout_seconds=30, dead_letter=DeadLetterQueue(max_receive_count=3))
app.queue(
    "ordered.fifo",
    fifo=True,
    content_based_deduplication=True,
    visibility_timeout_seconds=30,
    dead_letter=DeadLetterQueue(max_receive_count=5),
)
app.queue("slow", visibility_timeout_seconds=30, dead_letter=DeadLetterQueue(max_receive_count=2))
app.queue("steady", visibility_timeout_seconds=4)
# Shorter than its handler's timeout: the lease heartbeat keeps messages invisible while
# they are handled, and a dead worker's messages come back after 2 s, not 10.
app.queue("heartbeat", visibility_timeout_seconds=2)
app.queue("warm", visibility_timeout_seconds=30)
app.queue("slow-init", visibility_timeout_seconds=30)
app.queue("cold", visibility_timeout_seconds=30, dead_letter=DeadLetterQueue(max_receive_count=2))


class EmbeddingApiError(HandlerFailure):
    failure_reason = "EMBEDDING_API_ERROR"


EFFECTS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS effects (handler TEXT, message_id TEXT, item TEXT,"
    " receive_count INTEGER, worker_pid INTEGER, at REAL)"
)


def record(handler: str, records: list[dict[str, Any]]) -> None:
    with sqlite3.connect(os.environ["VAULTQ_TEST_EFFECTS"], timeout=30) as db:
        db.execute(EFFECTS_SCHEMA)
        db.executemany(
            "INSERT INTO effects VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    handler,
                    r["messageId"],
                    json.loads(r["body"])["id"],
                    int(r["attributes"]["ApproximateReceiveCount"]),
                    os.getppid(),
                    time.time(),
                )
                for r in records
            ],
        )


def act(record_: dict[str, Any]) -> bool:
    """Do what the body says; False means 'report me as failed'."""
    body = json.loads(record_["body"])
    count = int(record_["attributes"]["ApproximateReceiveCount"])
    action = body["do"]
    if action == "fail":
        raise ValueError(f"asked to fail, token=abc123 item {body['id']}")
    if action == "fail-until" and count < body["n"]:
        raise EmbeddingApiError("provider said 503")
    if action == "give-up":
        raise NonRetryableError("schema mismatch", message_ids=[record_["messageId"]])
    if action == "sleep":
        time.sleep(body["n"])
    if action == "exit":
        os._exit(3)
    return action != "report-fail"


@app.handler(queue="work", report_batch_item_failures=True, retry=NO_WAIT)
def work(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = []
    done = []
    for r in event["Records"]:
        if act(r):
            done.append(r)
        else:
            failures.append({"itemIdentifier": r["messageId"]})
    record("work", done)
    if any(json.loads(r["body"])["do"] == "bad-id" for r in event["Records"]):
        return {"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]}
    return {"batchItemFailures": failures}


@app.handler(
    queue="ordered.fifo", report_batch_item_failures=True, retry=NO_WAIT, max_concurrency=2
)
def ordered(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures: list[dict[str, str]] = []
    for r in event["Records"]:
        body = json.loads(r["body"])
        count = int(r["attributes"]["ApproximateReceiveCount"])
        if failures or (body["do"] == "fail-until" and count < body["n"]):
            failures.append({"itemIdentifier": r["messageId"]})
            continue
        record("ordered", [r])
    return {"batchItemFailures": failures}


@app.handler(queue="slow", timeout_seconds=1, max_concurrency=1, retry=NO_WAIT)
def slow(event: dict[str, Any], context: Any) -> None:
    record("slow-start", event["Records"])
    for r in event["Records"]:
        act(r)
    record("slow-done", event["Records"])


@app.handler(queue="steady", timeout_seconds=3, batch_size=1, max_concurrency=2)
def steady(event: dict[str, Any], context: Any) -> None:
    record("steady-start", event["Records"])
    for r in event["Records"]:
        act(r)
    record("steady-done", event["Records"])


@app.handler(queue="heartbeat", timeout_seconds=10, max_concurrency=1)
def heartbeat(event: dict[str, Any], context: Any) -> None:
    record("heartbeat-start", event["Records"])
    for r in event["Records"]:
        act(r)


def note_pid(handler: str) -> None:
    """One row naming this handler process, so tests tell processes apart."""
    with sqlite3.connect(os.environ["VAULTQ_TEST_EFFECTS"], timeout=30) as db:
        db.execute(EFFECTS_SCHEMA)
        db.execute(
            "INSERT INTO effects VALUES (?, '', ?, 0, ?, ?)",
            (handler, str(os.getpid()), os.getppid(), time.time()),
        )


@app.handler(
    queue="warm",
    batch_size=1,
    max_concurrency=2,
    init=lambda: note_pid("warm-init"),
    provisioned_concurrency=1,
)
def warm(event: dict[str, Any], context: Any) -> None:
    note_pid("warm-run")


def _endless_init() -> None:
    note_pid("slow-init")
    time.sleep(600)


@app.handler(queue="slow-init", batch_size=1, init=_endless_init, provisioned_concurrency=1)
def slow_init(event: dict[str, Any], context: Any) -> None:
    note_pid("slow-init-run")


def _broken_init() -> None:
    note_pid("cold-init")
    raise ValueError("the model file is missing, token=abc123")


@app.handler(queue="cold", batch_size=1, max_concurrency=1, retry=NO_WAIT, init=_broken_init)
def cold(event: dict[str, Any], context: Any) -> None:
    record("cold", event["Records"])
