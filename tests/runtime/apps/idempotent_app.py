"""An app whose handlers charge orders through ``@idempotent``, and write down what happened.

Every step appends a row to the ``idempotency_log`` table of the SQLite file named by
VAULTQ_TEST_EFFECTS: ``charged`` when the idempotent body runs (the side effect),
``in-progress`` when a duplicate was turned away, ``answered`` with the result an invocation
returned. The idempotency store is the one VAULTQ_URL names, opened in the handler process.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from vaultq.app import App, RetryPolicy
from vaultq.errors import IdempotencyAlreadyInProgress
from vaultq.idempotency import idempotent

RETRY_SOON = RetryPolicy(base_seconds=0.5, cap_seconds=1, jitter=False)
RELEASE_WAIT_SECONDS = 15.0

app = App("idempotent")
app.queue("orders", visibility_timeout_seconds=30)
app.queue("slow-orders", visibility_timeout_seconds=30)
app.queue("crashy-orders", visibility_timeout_seconds=30)


def log(kind: str, event: dict[str, Any], result: object = None) -> None:
    [record] = event["Records"]
    with sqlite3.connect(os.environ["VAULTQ_TEST_EFFECTS"], timeout=30) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS idempotency_log (kind TEXT, message_id TEXT,"
            " receive_count INTEGER, result TEXT, at REAL)"
        )
        db.execute(
            "INSERT INTO idempotency_log VALUES (?, ?, ?, ?, ?)",
            (
                kind,
                record["messageId"],
                int(record["attributes"]["ApproximateReceiveCount"]),
                json.dumps(result),
                time.time(),
            ),
        )


def order_id(event: dict[str, Any]) -> object:
    return json.loads(event["Records"][0]["body"])["order_id"]


def receipt(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The charge's result: names the message that was charged, so a replay shows it."""
    return {
        "order_id": order_id(event),
        "charged_by": event["Records"][0]["messageId"],
        "remaining_ms": context.get_remaining_time_in_millis(),
    }


# -- a duplicate after completion -------------------------------------------------------------


@idempotent()
def charge(event: dict[str, Any], context: Any) -> dict[str, Any]:
    log("charged", event)
    return receipt(event, context)


@app.handler(queue="orders", batch_size=1, max_concurrency=1, retry=RETRY_SOON)
def orders(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result = charge(event, context)
    log("answered", event, result)
    return result


# -- a duplicate while the first attempt runs ---------------------------------------------------


@idempotent(key=order_id)
def charge_slowly(event: dict[str, Any], context: Any) -> dict[str, Any]:
    log("charged", event)
    release = Path(os.environ["IDEMPOTENT_APP_RELEASE"])
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return receipt(event, context)


@app.handler(
    queue="slow-orders", batch_size=1, max_concurrency=2, timeout_seconds=30, retry=RETRY_SOON
)
def slow_orders(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        result = charge_slowly(event, context)
    except IdempotencyAlreadyInProgress:
        log("in-progress", event)
        raise
    log("answered", event, result)
    return result


# -- an attempt killed mid-way ------------------------------------------------------------------


@idempotent(key=order_id)
def charge_or_die(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result = receipt(event, context)
    log("charged", event, result)
    if int(event["Records"][0]["attributes"]["ApproximateReceiveCount"]) == 1:
        os._exit(3)  # killed before the claim is completed or released
    return result


@app.handler(
    queue="crashy-orders", batch_size=1, max_concurrency=1, timeout_seconds=2, retry=RETRY_SOON
)
def crashy_orders(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result = charge_or_die(event, context)
    log("answered", event, result)
    return result
