"""The AWS queue backend: the queue contract on Amazon SQS, through boto3 (the ``aws`` extra).

Inputs are checked with the contract's own validators before any call, so bad input gets the
same error on every backend; what SQS refuses anyway is translated into ``vaultq.errors`` in
one place (``_call``). Where SQS cannot do what the contract asks, this module says what it
does instead:

- ``dead_letter`` sends a copy of the message to the dead-letter queue, then deletes the
  original. The copy carries the reserved message attribute ``vaultq.copy`` (one of SQS's
  ten): the original message id, which vaultq keeps reporting as the message's id, and the
  dead-letter record. SQS cannot read a message by its receipt handle, so this needs a
  handle that this instance received (it keeps the last ones it handed out). A
  ``change_visibility`` that reports a failure for a message at its ``maxReceiveCount``
  dead-letters it the same way, so the record survives; a message SQS moves by itself
  carries no record (``dead_letter is None``): nobody reported why it failed.
- ``stats().oldest_message_age_seconds`` is 0: SQS reports that age only through CloudWatch.
- ``purge`` returns the approximate number of messages read just before the purge.
- ``redrive`` uses ``StartMessageMoveTask`` and waits for it; where the endpoint refuses it,
  and always for selected ``message_ids``, it receives, sends a copy, then deletes.
- A delete with a receipt handle that was superseded by a later receive succeeds without
  deleting on SQS (as AWS documents), so ``StaleReceiptHandle`` is never raised by a delete.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from vaultq import errors
from vaultq.queues.protocol import (
    BatchEntryError,
    BatchResult,
    DeadLetterRecord,
    DeleteEntry,
    Failure,
    MessageAttribute,
    OutgoingMessage,
    QueueAttributes,
    QueueInfo,
    QueueStats,
    ReceivedMessage,
    RedriveAllowPolicy,
    RedrivePolicy,
    SendEntry,
    SendResult,
    VisibilityEntry,
    validate_batch_ids,
    validate_message,
    validate_queue_name,
    validate_receive,
    validate_visibility,
)

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
except ImportError as exc:  # pragma: no cover - the tests run with the aws extra
    raise errors.MissingDependency(
        "the SQS backend needs boto3: pip install 'vaultq[aws]'"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

#: The reserved message attribute of a copy vaultq sent: the original id and dead-letter record.
COPY_ATTRIBUTE = "vaultq.copy"
_QUEUE_CACHE_SECONDS = 1.0
_MAX_LEASES = 1000
_MAX_LEASE_BYTES = 64 * 1024 * 1024
#: How long a message stays invisible while vaultq copies it (dead-letter, redrive).
_HOLD_SECONDS = 30
_MOVE_TASK_TIMEOUT_SECONDS = 300.0
_PREFIX = "AWS.SimpleQueueService."
_ERRORS: dict[str, type[errors.VaultqError]] = {
    cls.code: cls
    for cls in (
        errors.InvalidParameterValue,
        errors.MissingParameter,
        errors.InvalidAttributeName,
        errors.InvalidAttributeValue,
        errors.MessageTooLong,
        errors.InvalidMessageContents,
        errors.EmptyBatchRequest,
        errors.TooManyEntriesInBatchRequest,
        errors.BatchEntryIdsNotDistinct,
        errors.InvalidBatchEntryId,
        errors.BatchRequestTooLong,
        errors.QueueDoesNotExist,
        errors.QueueNameExists,
        errors.ReceiptHandleIsInvalid,
        errors.MessageNotInflight,
        errors.OverLimit,
        errors.PurgeQueueInProgress,
    )
} | {
    "NonExistentQueue": errors.QueueDoesNotExist,
    "QueueAlreadyExists": errors.QueueNameExists,
    "AccessDenied": errors.Forbidden,
    "AccessDeniedException": errors.Forbidden,
    # SQS refuses a queue name for 60 s after its deletion; retrying later succeeds.
    "QueueDeletedRecently": errors.BackendUnavailable,
}


class SqsQueues:
    """``QueueBackend`` on Amazon SQS (or an endpoint that speaks its API, such as moto).

    Queue names map to queue URLs through ``GetQueueUrl``; the mapping is cached and dropped
    whenever SQS answers that the queue does not exist. Dead-letter queues and redrive-allow
    sources are named, so they must live in the same account and region as their queue.
    """

    def __init__(
        self, *, region: str, endpoint_url: str | None = None, client: Any | None = None
    ) -> None:
        self._owns_client = client is None
        self._client: Any = client or boto3.client(
            "sqs",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": 3}),
        )
        self._urls: dict[str, str] = {}
        self._infos: dict[str, tuple[float, QueueInfo]] = {}
        #: Messages this instance handed out, by receipt handle, for ``dead_letter``.
        self._leases: OrderedDict[str, ReceivedMessage] = OrderedDict()
        self._lease_bytes = 0
        self._lease_lock = threading.Lock()
        self._move_tasks_refused = False

    # -- queues ---------------------------------------------------------------------------

    def create_queue(self, name: str, attributes: QueueAttributes | None = None) -> QueueInfo:
        attributes = attributes or QueueAttributes()
        validate_queue_name(name, fifo=attributes.fifo)
        existing = self._find(name)
        if existing is not None:
            if existing.attributes != attributes:
                raise errors.QueueNameExists(f"queue {name!r} exists with other attributes")
            return existing
        self._check_redrive_policy(name, attributes)
        created = {"FifoQueue": "true"} if attributes.fifo else {}
        url = self._call(
            "create_queue",
            QueueName=name,
            Attributes=created | _plain_attributes(attributes),
        )["QueueUrl"]
        self._urls[name] = url
        policies = self._policy_attributes(url, attributes)
        if policies:
            self._call("set_queue_attributes", name, QueueUrl=url, Attributes=policies)
        return self.get_queue(name)

    def get_queue(self, name: str) -> QueueInfo:
        raw = self._call(
            "get_queue_attributes", name, QueueUrl=self._url(name), AttributeNames=["All"]
        )["Attributes"]
        info = QueueInfo(
            name=name,
            attributes=_parse_attributes(raw),
            created_at_ms=int(float(raw["CreatedTimestamp"]) * 1000),
        )
        self._infos[name] = (time.monotonic(), info)
        return info

    def set_queue_attributes(self, name: str, attributes: QueueAttributes) -> QueueInfo:
        current = self.get_queue(name)
        if attributes.fifo != current.attributes.fifo:
            raise errors.InvalidAttributeValue("a queue cannot change between standard/FIFO")
        self._check_redrive_policy(name, attributes)
        url = self._url(name)
        self._call(
            "set_queue_attributes",
            name,
            QueueUrl=url,
            Attributes=_plain_attributes(attributes)
            | {"RedrivePolicy": "", "RedriveAllowPolicy": json.dumps(_ALLOW_ALL)}
            | self._policy_attributes(url, attributes),
        )
        return self.get_queue(name)

    def list_queues(self, prefix: str = "") -> list[str]:
        return sorted(
            _name(url)
            for url in self._pages("list_queues", QueueNamePrefix=prefix, key="QueueUrls")
        )

    def list_dead_letter_source_queues(self, name: str) -> list[str]:
        urls = self._pages(
            "list_dead_letter_source_queues", name, QueueUrl=self._url(name), key="queueUrls"
        )
        return sorted(_name(url) for url in urls)

    def delete_queue(self, name: str) -> None:
        try:
            self._call("delete_queue", name, QueueUrl=self._url(name))
        finally:
            self._forget(name)

    # -- sending --------------------------------------------------------------------------

    def send(self, queue: str, message: OutgoingMessage) -> SendResult:
        validate_message(message, self._info(queue).attributes)
        answer = self._call(
            "send_message", queue, QueueUrl=self._url(queue), **_send_params(message)
        )
        return SendResult(
            message_id=answer["MessageId"],
            md5_of_body=answer["MD5OfMessageBody"],
            sequence_number=answer.get("SequenceNumber"),
        )

    def send_batch(self, queue: str, entries: Sequence[SendEntry]) -> BatchResult[SendResult]:
        validate_batch_ids([entry.id for entry in entries])
        attributes = self._info(queue).attributes
        total = sum(entry.message.size_bytes() for entry in entries)
        if total > attributes.maximum_message_size_bytes:
            raise errors.BatchRequestTooLong(
                f"the batch is {total} bytes; at most {attributes.maximum_message_size_bytes}"
            )
        valid: list[dict[str, Any]] = []
        failed: list[BatchEntryError] = []
        for entry in entries:
            try:
                validate_message(entry.message, attributes)
            except errors.VaultqError as exc:
                failed.append(BatchEntryError(id=entry.id, code=exc.code, message=exc.message))
            else:
                valid.append({"Id": entry.id, **_send_params(entry.message)})
        if not valid:
            return BatchResult(successful={}, failed=failed)
        answer = self._call("send_message_batch", queue, QueueUrl=self._url(queue), Entries=valid)
        successful = {
            item["Id"]: SendResult(
                message_id=item["MessageId"],
                md5_of_body=item["MD5OfMessageBody"],
                sequence_number=item.get("SequenceNumber"),
            )
            for item in answer.get("Successful", [])
        }
        return BatchResult(successful=successful, failed=failed + _batch_errors(answer))

    # -- receiving ------------------------------------------------------------------------

    def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        wait_seconds: int | None = None,
        visibility_timeout_seconds: int | None = None,
    ) -> list[ReceivedMessage]:
        validate_receive(max_messages, wait_seconds, visibility_timeout_seconds)
        options: dict[str, int] = {}
        if wait_seconds is not None:
            options["WaitTimeSeconds"] = wait_seconds
        if visibility_timeout_seconds is not None:
            options["VisibilityTimeout"] = visibility_timeout_seconds
        answer = self._call(
            "receive_message",
            queue,
            QueueUrl=self._url(queue),
            MaxNumberOfMessages=max_messages,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
            **options,
        )
        messages = [_received(queue, raw) for raw in answer.get("Messages", [])]
        for message in messages:
            self._remember(message)
        return messages

    # -- acknowledging --------------------------------------------------------------------

    def delete(self, queue: str, receipt_handle: str) -> None:
        _check_handle(receipt_handle)
        self._call("delete_message", queue, QueueUrl=self._url(queue), ReceiptHandle=receipt_handle)
        self._forget_lease(receipt_handle)

    def delete_batch(self, queue: str, entries: Sequence[DeleteEntry]) -> BatchResult[None]:
        validate_batch_ids([entry.id for entry in entries])
        answer = self._call(
            "delete_message_batch",
            queue,
            QueueUrl=self._url(queue),
            Entries=[{"Id": e.id, "ReceiptHandle": e.receipt_handle} for e in entries],
        )
        handles = {entry.id: entry.receipt_handle for entry in entries}
        successful = {item["Id"]: None for item in answer.get("Successful", [])}
        for entry_id in successful:
            self._forget_lease(handles[entry_id])
        return BatchResult(successful=successful, failed=_batch_errors(answer))

    def change_visibility(
        self,
        queue: str,
        receipt_handle: str,
        *,
        visibility_timeout_seconds: int,
        failure: Failure | None = None,
    ) -> None:
        validate_visibility(visibility_timeout_seconds)
        _check_handle(receipt_handle)
        if failure is not None and self._exhausted(queue, receipt_handle):
            self.dead_letter(queue, receipt_handle, failure=failure)
            return
        self._call(
            "change_message_visibility",
            queue,
            QueueUrl=self._url(queue),
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=visibility_timeout_seconds,
        )

    def change_visibility_batch(
        self, queue: str, entries: Sequence[VisibilityEntry]
    ) -> BatchResult[None]:
        validate_batch_ids([entry.id for entry in entries])
        successful: dict[str, None] = {}
        failed: list[BatchEntryError] = []
        rest: list[dict[str, Any]] = []
        for entry in entries:
            try:
                validate_visibility(entry.visibility_timeout_seconds)
                if entry.failure is None or not self._exhausted(queue, entry.receipt_handle):
                    rest.append(
                        {
                            "Id": entry.id,
                            "ReceiptHandle": entry.receipt_handle,
                            "VisibilityTimeout": entry.visibility_timeout_seconds,
                        }
                    )
                    continue
                self.dead_letter(queue, entry.receipt_handle, failure=entry.failure)
            except errors.VaultqError as exc:
                failed.append(BatchEntryError(id=entry.id, code=exc.code, message=exc.message))
            else:
                successful[entry.id] = None
        if rest:
            answer = self._call(
                "change_message_visibility_batch", queue, QueueUrl=self._url(queue), Entries=rest
            )
            successful |= {item["Id"]: None for item in answer.get("Successful", [])}
            failed += _batch_errors(answer)
        return BatchResult(successful=successful, failed=failed)

    # -- dead letters ---------------------------------------------------------------------

    def dead_letter(self, queue: str, receipt_handle: str, *, failure: Failure) -> None:
        policy = self._info(queue).attributes.redrive_policy
        if policy is None:
            raise errors.InvalidParameterValue(f"queue {queue!r} has no dead-letter queue")
        message = self._leases.get(receipt_handle)
        if message is None:
            raise errors.ReceiptHandleIsInvalid(
                "SQS cannot read a message by its receipt handle: dead_letter needs a handle "
                "that this SqsQueues received"
            )
        # Hold the message first: this fails for a lease that lapsed, before any copy exists.
        self._call(
            "change_message_visibility",
            queue,
            QueueUrl=self._url(queue),
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=_HOLD_SECONDS,
        )
        record = DeadLetterRecord(
            source_queue=queue,
            reason=failure.reason,
            receive_count=message.receive_count,
            last_error=failure.error,
            moved_at_ms=int(time.time() * 1000),
        )
        self._send_copy(policy.dead_letter_queue, message, record)
        self.delete(queue, receipt_handle)

    def redrive(
        self,
        dead_letter_queue: str,
        *,
        destination: str | None = None,
        message_ids: Sequence[str] | None = None,
    ) -> int:
        if destination is not None:
            self._url(destination)
        if message_ids is None and not self._move_tasks_refused:
            try:
                return self._move_task(dead_letter_queue, destination)
            except errors.QueueDoesNotExist:
                raise
            except errors.BackendUnavailable:
                # moto answers HTTP 500: this endpoint cannot move, so stop asking it.
                self._move_tasks_refused = True
            except errors.VaultqError:
                pass  # SQS refused this move (a queue type or permission): copy instead.
        wanted = None if message_ids is None else set(message_ids)
        return self._redrive_by_copy(dead_letter_queue, destination, wanted)

    def _move_task(self, dead_letter_queue: str, destination: str | None) -> int:
        """Start an SQS move task and wait for it, so the redrive is done when it returns."""
        source_arn = self._arn(dead_letter_queue)
        target = {} if destination is None else {"DestinationArn": self._arn(destination)}
        self._call("start_message_move_task", dead_letter_queue, SourceArn=source_arn, **target)
        deadline = time.monotonic() + _MOVE_TASK_TIMEOUT_SECONDS
        while True:
            [task] = self._call(
                "list_message_move_tasks", dead_letter_queue, SourceArn=source_arn, MaxResults=1
            )["Results"] or [{"Status": "COMPLETED"}]
            if task["Status"] == "FAILED":
                raise errors.BackendUnavailable(
                    f"SQS move task failed: {task.get('FailureReason')}"
                )
            if task["Status"] != "RUNNING" or time.monotonic() > deadline:
                return int(task.get("ApproximateNumberOfMessagesMoved", 0))
            time.sleep(0.5)

    def _redrive_by_copy(
        self, dead_letter_queue: str, destination: str | None, wanted: set[str] | None
    ) -> int:
        moved = 0
        seen: set[str] = set()
        held: list[str] = []
        sources = self.list_dead_letter_source_queues(dead_letter_queue)
        # A message SQS moved by itself names no source; a DLQ with one source has no doubt.
        only_source = sources[0] if len(sources) == 1 else None
        for message in self._drain(dead_letter_queue, seen):
            record = message.dead_letter
            target = destination or (record.source_queue if record else only_source)
            if target is None or (wanted is not None and message.message_id not in wanted):
                held.append(message.receipt_handle)
                continue
            try:
                self._send_copy(target, message, None)
            except errors.QueueDoesNotExist:
                held.append(message.receipt_handle)
                continue
            self.delete(dead_letter_queue, message.receipt_handle)
            moved += 1
        for handle in held:
            self._call(
                "change_message_visibility",
                dead_letter_queue,
                QueueUrl=self._url(dead_letter_queue),
                ReceiptHandle=handle,
                VisibilityTimeout=0,
            )
        return moved

    def _drain(self, queue: str, seen: set[str]) -> Iterator[ReceivedMessage]:
        """Every message of ``queue`` once, each held invisible while the caller decides."""
        while True:
            batch = self.receive(
                queue,
                max_messages=10,
                wait_seconds=0,
                visibility_timeout_seconds=_HOLD_SECONDS,
            )
            fresh = [m for m in batch if m.message_id not in seen]
            if not fresh:
                return
            seen.update(m.message_id for m in fresh)
            yield from fresh

    def _send_copy(
        self, queue: str, message: ReceivedMessage, record: DeadLetterRecord | None
    ) -> None:
        """Send ``message`` again to ``queue``, with ``record`` when it is dead-lettered.

        A FIFO copy gets a deduplication id of its own, derived from the lease: the
        original's id (or body) would make SQS drop the copy within five minutes of the
        original send, and the original is deleted next."""
        attributes = {
            **message.attributes,
            COPY_ATTRIBUTE: MessageAttribute(
                data_type="String", value=_dump_copy(message, queue, record)
            ),
        }
        fifo = self._info(queue).attributes.fifo
        copy = OutgoingMessage(
            body=message.body,
            attributes=attributes,
            group_id=message.group_id,
            deduplication_id=_copy_id(message.receipt_handle) if fifo else None,
        )
        self._call("send_message", queue, QueueUrl=self._url(queue), **_send_params(copy))

    # -- maintenance ----------------------------------------------------------------------

    def purge(self, queue: str) -> int:
        """Purge the queue; returns the approximate count read just before (SQS returns none)."""
        before = self.stats(queue)
        self._call("purge_queue", queue, QueueUrl=self._url(queue))
        return before.visible + before.in_flight + before.delayed

    def stats(self, queue: str) -> QueueStats:
        """Approximate counts, as SQS reports them. The oldest message's age is 0: SQS
        reports it only as the CloudWatch metric ``ApproximateAgeOfOldestMessage``."""
        raw = self._call(
            "get_queue_attributes",
            queue,
            QueueUrl=self._url(queue),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return QueueStats(
            visible=int(raw["ApproximateNumberOfMessages"]),
            in_flight=int(raw["ApproximateNumberOfMessagesNotVisible"]),
            delayed=int(raw["ApproximateNumberOfMessagesDelayed"]),
            oldest_message_age_seconds=0,
        )

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # -- plumbing -------------------------------------------------------------------------

    def _call(self, operation: str, queue: str | None = None, /, **params: Any) -> Any:
        """Call SQS; the one place where botocore's errors become vaultq's."""
        try:
            return getattr(self._client, operation)(**params)
        except ClientError as exc:
            error = _translate(exc)
            if isinstance(error, errors.QueueDoesNotExist) and queue is not None:
                self._forget(queue)
            raise error from exc
        except ParamValidationError as exc:
            raise errors.InvalidParameterValue(f"SQS {operation}: {exc}") from exc
        except BotoCoreError as exc:
            raise errors.BackendUnavailable(f"SQS {operation}: {type(exc).__name__}") from exc

    def _pages(
        self, operation: str, queue: str | None = None, /, *, key: str, **params: Any
    ) -> list[str]:
        """Every queue URL a paginated listing answers (under ``key``: SQS spells it
        ``QueueUrls`` for ListQueues, ``queueUrls`` for ListDeadLetterSourceQueues)."""
        urls: list[str] = []
        token: dict[str, str] = {}
        while True:
            answer = self._call(operation, queue, MaxResults=1000, **params, **token)
            urls += answer.get(key, [])
            if "NextToken" not in answer:
                return urls
            token = {"NextToken": answer["NextToken"]}

    def _url(self, name: str) -> str:
        url = self._urls.get(name)
        if url is None:
            url = self._call("get_queue_url", name, QueueName=name)["QueueUrl"]
            self._urls[name] = url
        return url

    def _arn(self, name: str) -> str:
        answer = self._call(
            "get_queue_attributes", name, QueueUrl=self._url(name), AttributeNames=["QueueArn"]
        )
        arn: str = answer["Attributes"]["QueueArn"]
        return arn

    def _info(self, name: str) -> QueueInfo:
        """The queue's settings, at most a second old (as the embedded backend caches them)."""
        cached = self._infos.get(name)
        if cached is not None and time.monotonic() - cached[0] < _QUEUE_CACHE_SECONDS:
            return cached[1]
        return self.get_queue(name)

    def _find(self, name: str) -> QueueInfo | None:
        try:
            return self.get_queue(name)
        except errors.QueueDoesNotExist:
            return None

    def _forget(self, name: str) -> None:
        self._urls.pop(name, None)
        self._infos.pop(name, None)

    def _remember(self, message: ReceivedMessage) -> None:
        with self._lease_lock:
            self._leases[message.receipt_handle] = message
            self._lease_bytes += len(message.body)
            while len(self._leases) > _MAX_LEASES or self._lease_bytes > _MAX_LEASE_BYTES:
                _, oldest = self._leases.popitem(last=False)
                self._lease_bytes -= len(oldest.body)

    def _forget_lease(self, receipt_handle: str) -> None:
        with self._lease_lock:
            message = self._leases.pop(receipt_handle, None)
            if message is not None:
                self._lease_bytes -= len(message.body)

    def _exhausted(self, queue: str, receipt_handle: str) -> bool:
        """True when the message behind the handle used its last receive: SQS would move it
        on the next receive, without the failure the caller is reporting."""
        message = self._leases.get(receipt_handle)
        policy = self._info(queue).attributes.redrive_policy
        return (
            message is not None
            and policy is not None
            and message.receive_count >= policy.max_receive_count
        )

    def _check_redrive_policy(self, name: str, attributes: QueueAttributes) -> None:
        policy = attributes.redrive_policy
        if policy is None:
            return
        if policy.dead_letter_queue == name:
            raise errors.InvalidAttributeValue("a queue cannot be its own dead-letter queue")
        dlq = self._find(policy.dead_letter_queue)
        if dlq is None:
            raise errors.InvalidAttributeValue(
                f"dead-letter queue {policy.dead_letter_queue!r} does not exist"
            )
        if dlq.attributes.fifo != attributes.fifo:
            raise errors.InvalidAttributeValue("a dead-letter queue has its source's type")
        if not dlq.attributes.redrive_allow_policy.allows(name):
            raise errors.InvalidAttributeValue(
                f"{policy.dead_letter_queue!r} does not allow {name!r} as a source"
            )

    def _policy_attributes(self, url: str, attributes: QueueAttributes) -> dict[str, str]:
        """RedrivePolicy and RedriveAllowPolicy name queues by ARN: this account's, this
        region's, learnt from the queue at ``url``."""
        policy = attributes.redrive_policy
        allow = attributes.redrive_allow_policy
        if policy is None and allow == RedriveAllowPolicy():
            return {}
        answer = self._call("get_queue_attributes", QueueUrl=url, AttributeNames=["QueueArn"])
        prefix = answer["Attributes"]["QueueArn"].removesuffix(_name(url))
        result = {}
        if policy is not None:
            result["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": prefix + policy.dead_letter_queue,
                    "maxReceiveCount": policy.max_receive_count,
                }
            )
        if allow != RedriveAllowPolicy():
            document: dict[str, Any] = {"redrivePermission": allow.permission}
            if allow.source_queues:
                document["sourceQueueArns"] = [prefix + name for name in allow.source_queues]
            result["RedriveAllowPolicy"] = json.dumps(document)
        return result


_ALLOW_ALL = {"redrivePermission": "allowAll"}


def _plain_attributes(attributes: QueueAttributes) -> dict[str, str]:
    """The attributes SQS takes as plain values, on create and on update alike."""
    result = {
        "VisibilityTimeout": str(attributes.visibility_timeout_seconds),
        "MessageRetentionPeriod": str(attributes.message_retention_seconds),
        "DelaySeconds": str(attributes.delay_seconds),
        "MaximumMessageSize": str(attributes.maximum_message_size_bytes),
        "ReceiveMessageWaitTimeSeconds": str(attributes.receive_wait_time_seconds),
    }
    if attributes.fifo:
        per_group = attributes.deduplication_scope == "message_group"
        result |= {
            "ContentBasedDeduplication": str(attributes.content_based_deduplication).lower(),
            # Deduplication per group is SQS's high-throughput FIFO mode, which needs both.
            "DeduplicationScope": "messageGroup" if per_group else "queue",
            "FifoThroughputLimit": "perMessageGroupId" if per_group else "perQueue",
        }
    return result


def _parse_attributes(raw: Mapping[str, str]) -> QueueAttributes:
    redrive = json.loads(raw.get("RedrivePolicy") or "null")
    allow: dict[str, Any] = json.loads(raw.get("RedriveAllowPolicy") or "null") or _ALLOW_ALL
    fifo = raw.get("FifoQueue") == "true"
    return QueueAttributes(
        fifo=fifo,
        content_based_deduplication=raw.get("ContentBasedDeduplication") == "true",
        deduplication_scope="message_group"
        if raw.get("DeduplicationScope") == "messageGroup"
        else "queue",
        visibility_timeout_seconds=int(raw["VisibilityTimeout"]),
        message_retention_seconds=int(raw["MessageRetentionPeriod"]),
        delay_seconds=int(raw["DelaySeconds"]),
        maximum_message_size_bytes=int(raw["MaximumMessageSize"]),
        receive_wait_time_seconds=int(raw["ReceiveMessageWaitTimeSeconds"]),
        redrive_policy=None
        if redrive is None
        else RedrivePolicy(
            dead_letter_queue=_name(redrive["deadLetterTargetArn"]),
            max_receive_count=int(redrive["maxReceiveCount"]),
        ),
        redrive_allow_policy=RedriveAllowPolicy(
            permission=allow["redrivePermission"],
            source_queues=tuple(_name(arn) for arn in allow.get("sourceQueueArns", ())),
        ),
    )


def _send_params(message: OutgoingMessage) -> dict[str, Any]:
    params: dict[str, Any] = {"MessageBody": message.body}
    if message.attributes:
        params["MessageAttributes"] = {
            name: {"DataType": a.data_type, "BinaryValue": a.value}
            if isinstance(a.value, bytes)
            else {"DataType": a.data_type, "StringValue": a.value}
            for name, a in message.attributes.items()
        }
    if message.delay_seconds is not None:
        params["DelaySeconds"] = message.delay_seconds
    if message.group_id is not None:
        params["MessageGroupId"] = message.group_id
    if message.deduplication_id is not None:
        params["MessageDeduplicationId"] = message.deduplication_id
    return params


def _received(queue: str, raw: Mapping[str, Any]) -> ReceivedMessage:
    system = raw.get("Attributes", {})
    attributes = {
        name: MessageAttribute(
            data_type=value["DataType"],
            value=value["BinaryValue"] if "BinaryValue" in value else value["StringValue"],
        )
        for name, value in raw.get("MessageAttributes", {}).items()
    }
    copy = attributes.pop(COPY_ATTRIBUTE, None)
    message_id, record, sent_at_ms = _load_copy(raw["MessageId"], queue, copy)
    return ReceivedMessage(
        message_id=message_id,
        receipt_handle=raw["ReceiptHandle"],
        body=raw["Body"],
        md5_of_body=raw["MD5OfBody"],
        attributes=attributes,
        sent_at_ms=sent_at_ms or int(system["SentTimestamp"]),
        receive_count=int(system["ApproximateReceiveCount"]),
        first_received_at_ms=int(system["ApproximateFirstReceiveTimestamp"]),
        group_id=system.get("MessageGroupId"),
        deduplication_id=system.get("MessageDeduplicationId"),
        sequence_number=system.get("SequenceNumber"),
        dead_letter=record,
    )


def _dump_copy(message: ReceivedMessage, queue: str, record: DeadLetterRecord | None) -> str:
    copy: dict[str, Any] = {"message_id": message.message_id}
    if record is not None:
        copy["dead_letter"] = {
            "sent_at_ms": message.sent_at_ms,
            "queue": queue,
            "source": record.source_queue,
            "reason": record.reason,
            "receive_count": record.receive_count,
            "error": record.last_error,
            "moved_at_ms": record.moved_at_ms,
        }
    return json.dumps(copy)


def _load_copy(
    sqs_id: str, queue: str, attribute: MessageAttribute | None
) -> tuple[str, DeadLetterRecord | None, int | None]:
    """The message's vaultq id, dead-letter record and, in a standard dead-letter queue, the
    original send time (SQS keeps it when it moves a message there itself). The record counts
    only on the queue it was written for: a message that a move task redrove keeps its
    attributes, but it is no longer dead-lettered."""
    if attribute is None:
        return sqs_id, None, None
    try:
        copy = json.loads(str(attribute.value))
        data = copy.get("dead_letter")
        if data is None or data["queue"] != queue:
            return str(copy["message_id"]), None, None
        sent_at_ms = None if queue.endswith(".fifo") else int(data["sent_at_ms"])
        return (
            str(copy["message_id"]),
            DeadLetterRecord(
                source_queue=data["source"],
                reason=data["reason"],
                receive_count=int(data["receive_count"]),
                last_error=data["error"],
                moved_at_ms=int(data["moved_at_ms"]),
            ),
            sent_at_ms,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return sqs_id, None, None


def _batch_errors(answer: Mapping[str, Any]) -> list[BatchEntryError]:
    return [
        BatchEntryError(
            id=item["Id"],
            code=_code(item["Code"]),
            message=item.get("Message", ""),
            sender_fault=bool(item.get("SenderFault", True)),
        )
        for item in answer.get("Failed", [])
    ]


def _code(sqs_code: str) -> str:
    """vaultq's code for an SQS error code (the same name, without SQS's prefixes)."""
    bare = sqs_code.removeprefix(_PREFIX)
    error = _ERRORS.get(bare)
    return bare if error is None else error.code


def _translate(exc: ClientError) -> errors.VaultqError:
    error = exc.response.get("Error", {})
    code = error.get("QueryErrorCode") or error.get("Code", "")
    text = f"SQS {exc.operation_name}: {error.get('Message', '')}"
    known = _ERRORS.get(code.removeprefix(_PREFIX))
    if known is not None:
        return known(text)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
    if status >= 500 or "Throttl" in code:
        return errors.BackendUnavailable(f"{text} ({code or status})")
    return errors.VaultqError(f"{text} ({code})")


def _check_handle(receipt_handle: str) -> None:
    if not receipt_handle:
        raise errors.ReceiptHandleIsInvalid("a receipt handle is never empty")


def _copy_id(receipt_handle: str) -> str:
    return hashlib.sha256(receipt_handle.encode()).hexdigest()


def _name(url_or_arn: str) -> str:
    """A queue's name from its URL (``.../account/name``) or ARN (``...:account:name``)."""
    return url_or_arn.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
