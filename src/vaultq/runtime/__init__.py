"""The Lambda-style runtime: pure policy over the Protocols, never an adapter."""

from __future__ import annotations

from vaultq.runtime.deadline import within_deadline
from vaultq.runtime.failures import HandlerFailure, NonRetryableError

__all__ = ["HandlerFailure", "NonRetryableError", "within_deadline"]
