"""Lambda's shapes: the SQS event a handler receives, its context, and its batch response.

Handlers get exactly what AWS Lambda gives them, so a function written for Lambda (with or
without aws-lambda-powertools) runs under vaultq unchanged. Responses are checked as Lambda
checks them: a malformed response fails the whole batch, it never counts as success.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vaultq import errors

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from vaultq.queues.protocol import MessageAttribute, ReceivedMessage

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "000000000000"
SENDER_ID = "vaultq"


def queue_arn(queue: str, *, region: str = DEFAULT_REGION, account: str = DEFAULT_ACCOUNT) -> str:
    return f"arn:aws:sqs:{region}:{account}:{queue}"


def sqs_event(
    queue: str, messages: Sequence[ReceivedMessage], *, region: str = DEFAULT_REGION
) -> dict[str, Any]:
    """The Lambda SQS event for a batch of received messages."""
    arn = queue_arn(queue, region=region)
    return {"Records": [_sqs_record(m, arn, region) for m in messages]}


def s3_records(sqs_record: dict[str, Any]) -> list[dict[str, Any]]:
    """The S3 event records an SQS record's body carries.

    S3 sends one ``s3:TestEvent`` message (no ``Records``) to a queue when its bucket's
    notifications are configured; it carries no records. Any other body raises
    ``InvalidParameterValue``: a message that is not an S3 event is a poison message."""
    try:
        body = json.loads(sqs_record["body"])
        if body.get("Event") == "s3:TestEvent" and "Records" not in body:
            return []
        records = body["Records"]
    except (KeyError, TypeError, AttributeError, ValueError):
        raise errors.InvalidParameterValue("the SQS record does not carry an S3 event") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise errors.InvalidParameterValue("the S3 event's Records is not a list of objects")
    return records


def _sqs_record(message: ReceivedMessage, arn: str, region: str) -> dict[str, Any]:
    attributes = {
        "ApproximateReceiveCount": str(message.receive_count),
        "SentTimestamp": str(message.sent_at_ms),
        "SenderId": SENDER_ID,
        "ApproximateFirstReceiveTimestamp": str(message.first_received_at_ms),
    }
    if message.sequence_number is not None:
        attributes["SequenceNumber"] = message.sequence_number
    if message.group_id is not None:
        attributes["MessageGroupId"] = message.group_id
    if message.deduplication_id is not None:
        attributes["MessageDeduplicationId"] = message.deduplication_id
    if message.dead_letter is not None:
        attributes["DeadLetterQueueSourceArn"] = queue_arn(
            message.dead_letter.source_queue, region=region
        )
    return {
        "messageId": message.message_id,
        "receiptHandle": message.receipt_handle,
        "body": message.body,
        "attributes": attributes,
        "messageAttributes": {
            name: _message_attribute(value) for name, value in message.attributes.items()
        },
        "md5OfBody": message.md5_of_body,
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": region,
    }


def _message_attribute(attribute: MessageAttribute) -> dict[str, Any]:
    shaped: dict[str, Any] = {
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": attribute.data_type,
    }
    if isinstance(attribute.value, bytes):
        shaped["binaryValue"] = base64.b64encode(attribute.value).decode()
    else:
        shaped["stringValue"] = attribute.value
    return shaped


@dataclass(slots=True, kw_only=True)
class LambdaContext:
    """The context object of a Lambda invocation, with the attributes handlers read."""

    function_name: str
    memory_limit_in_mb: int
    deadline_monotonic: float
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    region: str = DEFAULT_REGION
    monotonic: Callable[[], float] = time.monotonic
    #: The job table (a ``JobStore``) when the worker has one; see ``vaultq.runtime.job_of``.
    jobs: Any = None

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{DEFAULT_ACCOUNT}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"vaultq/{self.aws_request_id}"

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self.deadline_monotonic - self.monotonic()) * 1000), 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchOutcome:
    """Which records of a batch failed, per Lambda's rules for the handler's response."""

    failed_message_ids: frozenset[str]
    #: Why the whole batch failed (a malformed response), or None.
    batch_error: str | None = None


def batch_outcome(
    response: object, message_ids: Iterable[str], *, report_batch_item_failures: bool
) -> BatchOutcome:
    """Apply Lambda's rules to a handler's return value.

    Without report-batch-item-failures the response is ignored: returning means success.
    With it, a null or empty ``batchItemFailures`` means success; an ``itemIdentifier`` that
    is missing, empty, null or not in the batch, or any other malformed shape, fails the
    whole batch.
    """
    ids = frozenset(message_ids)
    if not report_batch_item_failures or response is None:
        return BatchOutcome(failed_message_ids=frozenset())
    try:
        failed = _reported_failures(response, ids)
    except errors.InvalidParameterValue as exc:
        return BatchOutcome(failed_message_ids=ids, batch_error=exc.message)
    return BatchOutcome(failed_message_ids=failed)


def _reported_failures(response: object, ids: frozenset[str]) -> frozenset[str]:
    if not isinstance(response, dict):
        raise errors.InvalidParameterValue(
            f"a batch response must be an object, not {type(response).__name__}"
        )
    items = response.get("batchItemFailures")
    if items is None:
        return frozenset()
    if not isinstance(items, list):
        raise errors.InvalidParameterValue("batchItemFailures must be a list")
    failed = set()
    for item in items:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in ids:
            raise errors.InvalidParameterValue(
                "every batchItemFailures entry needs an itemIdentifier of this batch"
            )
        failed.add(identifier)
    return frozenset(failed)
