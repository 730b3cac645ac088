"""vaultq: queue-driven background processing on private data.

SQS queues with dead-letter queues and Lambda-style handlers, embedded on SQLite by default.
"""

from __future__ import annotations

from vaultq.app import App, DeadLetterQueue, RetryPolicy
from vaultq.errors import VaultqError
from vaultq.queues import (
    DeleteEntry,
    Failure,
    FailureReason,
    MessageAttribute,
    OutgoingMessage,
    QueueAttributes,
    QueueBackend,
    QueueStats,
    ReceivedMessage,
    RedriveAllowPolicy,
    RedrivePolicy,
    SendEntry,
    SendResult,
    VisibilityEntry,
)
from vaultq.settings import Settings
from vaultq.wiring import open_queues

__version__ = "0.1.0"

__all__ = [
    "App",
    "DeadLetterQueue",
    "DeleteEntry",
    "Failure",
    "FailureReason",
    "MessageAttribute",
    "OutgoingMessage",
    "QueueAttributes",
    "QueueBackend",
    "QueueStats",
    "ReceivedMessage",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "RetryPolicy",
    "SendEntry",
    "SendResult",
    "Settings",
    "VaultqError",
    "VisibilityEntry",
    "__version__",
    "open_queues",
]
