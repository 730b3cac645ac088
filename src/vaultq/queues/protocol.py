"""The queue contract: SQS's, so handlers behave the same on every backend.

Values are frozen dataclasses; times are milliseconds since the epoch (``*_ms``) or whole
seconds (``*_seconds``), as SQS and Lambda name them. The limits are SQS's current ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar

from vaultq import errors

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

MAX_BATCH_ENTRIES = 10
MAX_RECEIVE_MESSAGES = 10
MAX_WAIT_SECONDS = 20
MAX_VISIBILITY_TIMEOUT_SECONDS = 12 * 60 * 60
MAX_DELAY_SECONDS = 15 * 60
MIN_RETENTION_SECONDS = 60
MAX_RETENTION_SECONDS = 14 * 24 * 60 * 60
MIN_MESSAGE_SIZE_BYTES = 1024
MAX_MESSAGE_SIZE_BYTES = 1024 * 1024
MAX_RECEIVE_COUNT = 1000
MAX_MESSAGE_ATTRIBUTES = 10
MAX_IN_FLIGHT_MESSAGES = 120_000
DEDUPLICATION_WINDOW_SECONDS = 5 * 60
_PARAMETER = errors.InvalidParameterValue  # request parameters, as opposed to queue attributes

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_GROUP_OR_DEDUP_ID = re.compile(r"^[!-~]{1,128}$")  # printable ASCII, as SQS
_ATTRIBUTE_NAME = re.compile(r"^(?!aws\.|amazon\.)(?!\.)(?!.*\.\.)(?!.*\.$)[A-Za-z0-9_.-]{1,256}$")
# The characters SQS accepts in a body: XML 1.0's, minus nothing.
_INVALID_BODY_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class FailureReason(StrEnum):
    """Why a message reached its dead-letter queue."""

    #: Received ``maxReceiveCount`` times without being deleted, with no failure reported.
    MAX_RECEIVE_COUNT_EXCEEDED = "MAX_RECEIVE_COUNT_EXCEEDED"
    #: The handler raised or answered with a malformed response.
    HANDLER_ERROR = "HANDLER_ERROR"
    #: The handler ran past its timeout.
    TIMEOUT = "TIMEOUT"
    #: The handler refused the message as one that no retry can fix.
    NON_RETRYABLE = "NON_RETRYABLE"


@dataclass(frozen=True, slots=True, kw_only=True)
class RedrivePolicy:
    """Where a message goes after ``max_receive_count`` receives."""

    dead_letter_queue: str
    max_receive_count: int

    def __post_init__(self) -> None:
        if not 1 <= self.max_receive_count <= MAX_RECEIVE_COUNT:
            raise errors.InvalidAttributeValue(
                f"maxReceiveCount must be 1..{MAX_RECEIVE_COUNT}, not {self.max_receive_count}"
            )
        validate_queue_name(self.dead_letter_queue)


@dataclass(frozen=True, slots=True, kw_only=True)
class RedriveAllowPolicy:
    """Which source queues may use this queue as their dead-letter queue."""

    permission: Literal["allowAll", "denyAll", "byQueue"] = "allowAll"
    source_queues: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.permission not in ("allowAll", "denyAll", "byQueue"):
            raise errors.InvalidAttributeValue(f"unknown redrivePermission {self.permission!r}")
        if (self.permission == "byQueue") != bool(self.source_queues):
            raise errors.InvalidAttributeValue(
                "sourceQueueArns is required with byQueue and refused otherwise"
            )
        if len(self.source_queues) > MAX_BATCH_ENTRIES:
            raise errors.InvalidAttributeValue("at most 10 source queues may be allowed")

    def allows(self, source_queue: str) -> bool:
        if self.permission == "allowAll":
            return True
        return self.permission == "byQueue" and source_queue in self.source_queues


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueAttributes:
    """A queue's settings, with SQS's defaults and ranges."""

    fifo: bool = False
    content_based_deduplication: bool = False
    #: ``message_group`` scopes deduplication per group (high-throughput FIFO).
    deduplication_scope: Literal["queue", "message_group"] = "queue"
    visibility_timeout_seconds: int = 30
    message_retention_seconds: int = 4 * 24 * 60 * 60
    delay_seconds: int = 0
    maximum_message_size_bytes: int = MAX_MESSAGE_SIZE_BYTES
    receive_wait_time_seconds: int = 0
    redrive_policy: RedrivePolicy | None = None
    redrive_allow_policy: RedriveAllowPolicy = field(default_factory=RedriveAllowPolicy)

    def __post_init__(self) -> None:
        _check_range(
            "VisibilityTimeout", self.visibility_timeout_seconds, 0, MAX_VISIBILITY_TIMEOUT_SECONDS
        )
        _check_range(
            "MessageRetentionPeriod",
            self.message_retention_seconds,
            MIN_RETENTION_SECONDS,
            MAX_RETENTION_SECONDS,
        )
        _check_range("DelaySeconds", self.delay_seconds, 0, MAX_DELAY_SECONDS)
        _check_range(
            "MaximumMessageSize",
            self.maximum_message_size_bytes,
            MIN_MESSAGE_SIZE_BYTES,
            MAX_MESSAGE_SIZE_BYTES,
        )
        _check_range(
            "ReceiveMessageWaitTimeSeconds", self.receive_wait_time_seconds, 0, MAX_WAIT_SECONDS
        )
        if not self.fifo and (
            self.content_based_deduplication or self.deduplication_scope != "queue"
        ):
            raise errors.InvalidAttributeValue("deduplication settings need a FIFO queue")
        if self.deduplication_scope not in ("queue", "message_group"):
            raise errors.InvalidAttributeValue(
                f"unknown DeduplicationScope {self.deduplication_scope!r}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueInfo:
    name: str
    attributes: QueueAttributes
    created_at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageAttribute:
    """A typed message attribute: ``String``, ``Number`` or ``Binary`` (optionally ``.label``)."""

    data_type: str
    value: str | bytes

    def __post_init__(self) -> None:
        base = self.data_type.split(".", 1)[0]
        if base not in ("String", "Number", "Binary") or len(self.data_type) > 256:
            raise errors.InvalidParameterValue(f"unknown attribute DataType {self.data_type!r}")
        if (base == "Binary") != isinstance(self.value, bytes):
            raise errors.InvalidParameterValue(f"a {base} attribute needs a matching value type")
        if base == "Number":
            _check_number(str(self.value))

    def size_bytes(self) -> int:
        raw = self.value if isinstance(self.value, bytes) else self.value.encode()
        return len(self.data_type) + len(raw)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutgoingMessage:
    """A message to send. ``group_id`` is required on FIFO queues; on a standard queue it
    makes the queue a fair queue (no group can starve the others)."""

    body: str
    attributes: Mapping[str, MessageAttribute] = field(default_factory=dict)
    delay_seconds: int | None = None
    group_id: str | None = None
    deduplication_id: str | None = None

    def size_bytes(self) -> int:
        attributes = sum(len(n) + a.size_bytes() for n, a in self.attributes.items())
        return len(self.body.encode()) + attributes


@dataclass(frozen=True, slots=True, kw_only=True)
class SendEntry:
    id: str
    message: OutgoingMessage


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    message_id: str
    md5_of_body: str
    #: Strictly increasing per FIFO queue; None on standard queues.
    sequence_number: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """What a consumer reports when it gives a message back; kept for the dead-letter record."""

    reason: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterRecord:
    """Why and when a message was dead-lettered; carried by messages in a dead-letter queue."""

    source_queue: str
    reason: str
    receive_count: int
    last_error: str | None
    moved_at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedMessage:
    message_id: str
    #: Valid until the message is received again: a fencing token, not just an address.
    receipt_handle: str
    body: str
    md5_of_body: str
    attributes: Mapping[str, MessageAttribute]
    sent_at_ms: int
    receive_count: int
    first_received_at_ms: int
    group_id: str | None = None
    deduplication_id: str | None = None
    sequence_number: str | None = None
    dead_letter: DeadLetterRecord | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteEntry:
    id: str
    receipt_handle: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VisibilityEntry:
    id: str
    receipt_handle: str
    visibility_timeout_seconds: int
    failure: Failure | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchEntryError:
    id: str
    code: str
    message: str
    sender_fault: bool = True


T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResult(Generic[T]):
    """Per-entry outcome of a batch call, as SQS answers: one entry's failure spares the rest."""

    successful: Mapping[str, T]
    failed: Sequence[BatchEntryError] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStats:
    visible: int
    #: Received and neither deleted nor visible again.
    in_flight: int
    delayed: int
    oldest_message_age_seconds: int


class QueueBackend(Protocol):
    """An SQS-shaped queue store.

    Policy (batching, back-off, idempotency) lives above this Protocol, in ``vaultq.runtime``.
    Two rules live below it because the engine must apply them atomically with a receive:
    dead-lettering after ``max_receive_count`` and FIFO group blocking.
    """

    def create_queue(self, name: str, attributes: QueueAttributes | None = None) -> QueueInfo:
        """Create a queue; idempotent for identical attributes, ``QueueNameExists`` otherwise.

        A ``redrive_policy`` must name an existing dead-letter queue of the same type that
        allows this queue as a source."""
        ...

    def get_queue(self, name: str) -> QueueInfo:
        """Raise ``QueueDoesNotExist`` for an unknown name."""
        ...

    def set_queue_attributes(self, name: str, attributes: QueueAttributes) -> QueueInfo:
        """Replace a queue's attributes; a queue cannot change between standard and FIFO."""
        ...

    def list_queues(self, prefix: str = "") -> list[str]: ...

    def list_dead_letter_source_queues(self, name: str) -> list[str]:
        """The queues whose redrive policy names ``name`` as their dead-letter queue."""
        ...

    def delete_queue(self, name: str) -> None:
        """Delete a queue and its messages; unknown names raise ``QueueDoesNotExist``."""
        ...

    def send(self, queue: str, message: OutgoingMessage) -> SendResult:
        """Durable once it returns. On FIFO queues a duplicate within five minutes returns the
        original message's result and enqueues nothing."""
        ...

    def send_batch(self, queue: str, entries: Sequence[SendEntry]) -> BatchResult[SendResult]:
        """Up to 10 entries with distinct ids; an invalid entry fails alone."""
        ...

    def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        wait_seconds: int | None = None,
        visibility_timeout_seconds: int | None = None,
    ) -> list[ReceivedMessage]:
        """Lease up to ``max_messages`` visible messages, waiting up to ``wait_seconds`` (the
        queue's receive wait time when None) for the first to arrive. A message over its
        queue's ``max_receive_count`` moves to the dead-letter queue instead of returning."""
        ...

    def delete(self, queue: str, receipt_handle: str) -> None:
        """Idempotent for the current handle; a stale handle raises ``StaleReceiptHandle``."""
        ...

    def delete_batch(self, queue: str, entries: Sequence[DeleteEntry]) -> BatchResult[None]: ...

    def change_visibility(
        self,
        queue: str,
        receipt_handle: str,
        *,
        visibility_timeout_seconds: int,
        failure: Failure | None = None,
    ) -> None:
        """Make an in-flight message visible again after ``visibility_timeout_seconds``
        (counted from now). ``failure`` is kept for the dead-letter record."""
        ...

    def change_visibility_batch(
        self, queue: str, entries: Sequence[VisibilityEntry]
    ) -> BatchResult[None]: ...

    def dead_letter(self, queue: str, receipt_handle: str, *, failure: Failure) -> None:
        """Move an in-flight message to the queue's dead-letter queue now (a failure that no
        retry can fix). The queue must have a redrive policy."""
        ...

    def purge(self, queue: str) -> int:
        """Delete every message in the queue; returns how many were deleted."""
        ...

    def stats(self, queue: str) -> QueueStats: ...

    def redrive(
        self,
        dead_letter_queue: str,
        *,
        destination: str | None = None,
        message_ids: Sequence[str] | None = None,
    ) -> int:
        """Move dead-lettered messages (all, or those named) back to the queue each came from,
        or to ``destination``; returns how many moved. Moved messages start a fresh receive
        count, as on SQS."""
        ...

    def close(self) -> None: ...


def validate_queue_name(name: str, *, fifo: bool | None = None) -> None:
    """SQS's rule: 1-80 of ``[A-Za-z0-9_-]``, plus ``.fifo`` for FIFO queues."""
    base = name.removesuffix(".fifo")
    if not _QUEUE_NAME.fullmatch(base) or len(name) > 80:
        raise errors.InvalidParameterValue(
            f"queue names are 1-80 letters, digits, '-' or '_' (FIFO: ending .fifo): {name!r}"
        )
    if fifo is not None and fifo != name.endswith(".fifo"):
        raise errors.InvalidParameterValue("a queue name ends with .fifo exactly when it is FIFO")


def validate_message(message: OutgoingMessage, attributes: QueueAttributes) -> None:
    """Apply SQS's checks for a send to a queue with ``attributes``."""
    if _INVALID_BODY_CHARS.search(message.body):
        raise errors.InvalidMessageContents("the body holds characters SQS does not accept")
    if not message.body:
        raise errors.MissingParameter("the message body must not be empty")
    if message.size_bytes() > attributes.maximum_message_size_bytes:
        raise errors.MessageTooLong(
            f"message is {message.size_bytes()} bytes; the queue allows "
            f"{attributes.maximum_message_size_bytes}"
        )
    _validate_message_attributes(message.attributes)
    if message.delay_seconds is not None:
        if attributes.fifo:
            raise errors.InvalidParameterValue(
                "FIFO queues take DelaySeconds per queue, not per message"
            )
        _check_range("DelaySeconds", message.delay_seconds, 0, MAX_DELAY_SECONDS, _PARAMETER)
    _validate_fifo_ids(message, attributes)


def validate_batch_ids(ids: Sequence[str]) -> None:
    if not ids:
        raise errors.EmptyBatchRequest("a batch needs at least one entry")
    if len(ids) > MAX_BATCH_ENTRIES:
        raise errors.TooManyEntriesInBatchRequest(
            f"{len(ids)} entries; a batch holds at most {MAX_BATCH_ENTRIES}"
        )
    for entry_id in ids:
        if not _BATCH_ID.fullmatch(entry_id):
            raise errors.InvalidBatchEntryId(f"invalid batch entry id {entry_id!r}")
    if len(set(ids)) != len(ids):
        raise errors.BatchEntryIdsNotDistinct("batch entry ids must be distinct")


def validate_receive(
    max_messages: int, wait_seconds: int | None, visibility_timeout_seconds: int | None
) -> None:
    _check_range("MaxNumberOfMessages", max_messages, 1, MAX_RECEIVE_MESSAGES, _PARAMETER)
    if wait_seconds is not None:
        _check_range("WaitTimeSeconds", wait_seconds, 0, MAX_WAIT_SECONDS, _PARAMETER)
    if visibility_timeout_seconds is not None:
        _check_range(
            "VisibilityTimeout",
            visibility_timeout_seconds,
            0,
            MAX_VISIBILITY_TIMEOUT_SECONDS,
            _PARAMETER,
        )


def validate_visibility(visibility_timeout_seconds: int) -> None:
    _check_range(
        "VisibilityTimeout",
        visibility_timeout_seconds,
        0,
        MAX_VISIBILITY_TIMEOUT_SECONDS,
        _PARAMETER,
    )


def _validate_message_attributes(attributes: Mapping[str, MessageAttribute]) -> None:
    if len(attributes) > MAX_MESSAGE_ATTRIBUTES:
        raise errors.InvalidParameterValue(
            f"{len(attributes)} message attributes; at most {MAX_MESSAGE_ATTRIBUTES}"
        )
    for name in attributes:
        if not _ATTRIBUTE_NAME.fullmatch(name):
            raise errors.InvalidParameterValue(f"invalid message attribute name {name!r}")


def _validate_fifo_ids(message: OutgoingMessage, attributes: QueueAttributes) -> None:
    for label, value in (
        ("MessageGroupId", message.group_id),
        ("MessageDeduplicationId", message.deduplication_id),
    ):
        if value is not None and not _GROUP_OR_DEDUP_ID.fullmatch(value):
            raise errors.InvalidParameterValue(f"{label} must be 1-128 printable ASCII chars")
    if not attributes.fifo:
        if message.deduplication_id is not None:
            raise errors.InvalidParameterValue("MessageDeduplicationId is only for FIFO queues")
        return
    if message.group_id is None:
        raise errors.MissingParameter("FIFO queues need a MessageGroupId on every message")
    if message.deduplication_id is None and not attributes.content_based_deduplication:
        raise errors.MissingParameter(
            "give a MessageDeduplicationId or enable ContentBasedDeduplication"
        )


def _check_range(
    name: str,
    value: int,
    low: int,
    high: int,
    error: type[errors.InvalidParameterValue] = errors.InvalidAttributeValue,
) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise error(f"{name} must be an integer {low}..{high}, not {value!r}")


def _check_number(text: str) -> None:
    try:
        float(text)
    except ValueError:
        raise errors.InvalidParameterValue(f"{text!r} is not a Number") from None
