"""The send outbox: messages that must reach a queue even when the queue is down."""

from __future__ import annotations

from vaultq.outbox.protocol import Outbox, PendingSend

__all__ = ["Outbox", "PendingSend"]
