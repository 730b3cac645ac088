"""Handlers written for AWS Lambda with aws-lambda-powertools, untouched for vaultq."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    SqsFifoPartialProcessor,
    process_partial_response,
)

from tests.runtime.apps.behaviours import record as write_effect
from vaultq.app import App, DeadLetterQueue, RetryPolicy

processor = BatchProcessor(event_type=EventType.SQS)
fifo_processor = SqsFifoPartialProcessor()

app = App("powertools")
app.queue("work", visibility_timeout_seconds=30, dead_letter=DeadLetterQueue(max_receive_count=2))
app.queue(
    "ordered.fifo",
    fifo=True,
    content_based_deduplication=True,
    visibility_timeout_seconds=30,
    dead_letter=DeadLetterQueue(max_receive_count=2),
)


def record_handler(record: Any) -> None:
    body = json.loads(record.body)
    if body["do"] == "fail":
        raise ValueError(f"cannot handle {body['id']}")
    write_effect("powertools", [record.raw_event])


@app.handler(
    queue="work", report_batch_item_failures=True, retry=RetryPolicy(base_seconds=0, cap_seconds=0)
)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )


@app.handler(
    queue="ordered.fifo",
    report_batch_item_failures=True,
    retry=RetryPolicy(base_seconds=0, cap_seconds=0),
)
def fifo_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=fifo_processor, context=context
    )
