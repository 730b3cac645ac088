"""Errors a handler raises to say how its failure should be treated."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


class HandlerFailure(Exception):
    """Base for handler errors with a failure reason recorded in the dead-letter record.

    Any exception class with a ``failure_reason`` attribute works the same way; subclassing
    this one is a convenience. ``EMBEDDING_API_ERROR`` is an example of an app's reason.
    """

    failure_reason = "HANDLER_ERROR"


class NonRetryableError(HandlerFailure):
    """A failure no retry can fix: the messages go to the dead-letter queue at once.

    ``message_ids`` names the records concerned; by default, the whole batch.
    """

    failure_reason = "NON_RETRYABLE"

    def __init__(
        self, message: str, *, reason: str | None = None, message_ids: Iterable[str] = ()
    ) -> None:
        super().__init__(message)
        if reason is not None:
            self.failure_reason = reason
        self.message_ids = frozenset(message_ids)


def describe(exc: BaseException) -> str:
    """A failure's text for records and logs. One that already starts with its reason code
    (every vaultq error's does: ``UNKNOWN_KEY_ID: ...``) is shown as it is; any other is
    named by its type (``ValueError: ...``), so no record repeats a code."""
    text = str(exc)
    code = getattr(exc, "code", None) or getattr(exc, "failure_reason", None)
    if code is not None and text.startswith(f"{code}:"):
        return text
    return f"{type(exc).__name__}: {text}"
