"""SQS-shaped queues: the Protocol and its values. Backends live in their own modules."""

from __future__ import annotations

from vaultq.queues.protocol import (
    BatchEntryError,
    BatchResult,
    DeadLetterRecord,
    DeleteEntry,
    Failure,
    FailureReason,
    MessageAttribute,
    OutgoingMessage,
    QueueAttributes,
    QueueBackend,
    QueueInfo,
    QueueStats,
    ReceivedMessage,
    RedriveAllowPolicy,
    RedrivePolicy,
    SendEntry,
    SendResult,
    VisibilityEntry,
)

__all__ = [
    "BatchEntryError",
    "BatchResult",
    "DeadLetterRecord",
    "DeleteEntry",
    "Failure",
    "FailureReason",
    "MessageAttribute",
    "OutgoingMessage",
    "QueueAttributes",
    "QueueBackend",
    "QueueInfo",
    "QueueStats",
    "ReceivedMessage",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "SendEntry",
    "SendResult",
    "VisibilityEntry",
]
