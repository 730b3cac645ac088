"""Deadline-aware batches: stop taking records before the time runs out.

A handler that walks its records with ``within_deadline`` reports the records it did not
reach as failures, so one slow record does not send the whole batch back, and the handler
returns before the runtime has to stop it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


def within_deadline(
    event: dict[str, Any],
    context: Any,
    record_handler: Callable[[dict[str, Any]], object],
    *,
    margin_ms: int = 1000,
) -> dict[str, list[dict[str, str]]]:
    """Run ``record_handler`` on each record while more than ``margin_ms`` remain.

    Returns the Lambda partial-batch response: records that raised and records not started
    are listed in ``batchItemFailures`` (the mapping needs report-batch-item-failures on).
    On FIFO queues a record whose message group already failed in this batch is not run.
    """
    failures: list[dict[str, str]] = []
    failed_groups: set[str] = set()
    records = event["Records"]
    for index, record in enumerate(records):
        if context.get_remaining_time_in_millis() <= margin_ms:
            failures += [{"itemIdentifier": r["messageId"]} for r in records[index:]]
            break
        fifo = record.get("eventSourceARN", "").endswith(".fifo")
        group = record.get("attributes", {}).get("MessageGroupId") if fifo else None
        if group is not None and group in failed_groups:
            failures.append({"itemIdentifier": record["messageId"]})
            continue
        try:
            record_handler(record)
        except Exception:  # a record's failure is reported, not raised
            failures.append({"itemIdentifier": record["messageId"]})
            if group is not None:
                failed_groups.add(group)
    return {"batchItemFailures": failures}
