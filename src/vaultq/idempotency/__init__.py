"""Idempotent handlers, with the semantics of aws-lambda-powertools' idempotency utility.

At-least-once delivery means a handler may see the same work twice: a redelivery after a
crash, a visibility timeout that ran out, or a producer that sent twice. ``@idempotent`` runs
the work once per key and answers duplicates with the first result::

    @app.handler(queue="orders", batch_size=1)
    @idempotent(key=lambda event: json.loads(event["Records"][0]["body"])["order_id"])
    def charge(event, context):
        ...
        return {"charged": order_id}

- The first call claims the key (``IN_PROGRESS``) until the invocation's deadline, runs the
  handler and stores its JSON result (``COMPLETED``) for ``expires_after_seconds``.
- A duplicate while the first still runs raises ``IdempotencyAlreadyInProgress``: the runtime
  fails that invocation and the message comes back after its back-off, never in parallel.
- A duplicate after completion gets the stored result without running the handler; after
  ``expires_after_seconds`` the key runs again.
- An exception releases the claim (a retry runs) and propagates unchanged. A crashed attempt's
  claim lapses at its deadline.

Without ``key``, the key is a SHA-256 of the event's canonical JSON; for SQS events only the
records' bodies and message attributes count, so a redelivery (new receipt handle, higher
receive count) or the same body sent twice is a duplicate. Keys are prefixed with the
function's module and qualified name. Without ``store``, the store named by ``VAULTQ_URL`` is
opened at the first call, in the process that runs the handler.
"""

from __future__ import annotations

import contextvars
import functools
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from vaultq.idempotency._guard import StoreRef, in_progress_ms, run_once
from vaultq.idempotency._keys import event_payload, hashed_key, namespace
from vaultq.idempotency.protocol import (
    IdempotencyRecord,
    IdempotencyStatus,
    IdempotencyStore,
    validate_expires_after,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from vaultq.idempotency._guard import StoreOption

__all__ = [
    "IdempotencyRecord",
    "IdempotencyStatus",
    "IdempotencyStore",
    "idempotent",
    "idempotent_function",
    "register_lambda_context",
]

R = TypeVar("R")
T = TypeVar("T")
Event = dict[str, Any]
DEFAULT_EXPIRES_AFTER_SECONDS = 3600


class FunctionDecorator(Protocol):
    """What ``idempotent_function(...)`` returns: keeps the decorated function's type."""

    def __call__(self, function: Callable[[T], R], /) -> Callable[[T], R]: ...


# The running invocation's context, so that ``idempotent_function`` can end its claims at the
# invocation's deadline.
_context: contextvars.ContextVar[object] = contextvars.ContextVar("vaultq_lambda_context")


def idempotent(
    *,
    key: Callable[[Event], object] | None = None,
    expires_after_seconds: int = DEFAULT_EXPIRES_AFTER_SECONDS,
    store: StoreOption = None,
) -> Callable[[Callable[[Event, Any], R]], Callable[[Event, Any], R]]:
    """Make a Lambda-style ``handler(event, context)`` idempotent (see the module's docs).

    ``key(event)`` picks what identifies the work (any JSON value but None); ``store`` is an
    ``IdempotencyStore`` or a function that opens one at first use. Results must be JSON.
    """
    validate_expires_after(expires_after_seconds)
    ref = StoreRef(store)

    def decorate(handler: Callable[[Event, Any], R]) -> Callable[[Event, Any], R]:
        prefix = namespace(handler)

        @functools.wraps(handler)
        def run(event: Event, context: Any) -> R:
            hashed = hashed_key(prefix, event_payload(event) if key is None else key(event))
            token = _context.set(context)
            try:
                return run_once(
                    ref.get(),
                    hashed,
                    in_progress_ms=in_progress_ms(context),
                    expires_after_seconds=expires_after_seconds,
                    call=lambda: handler(event, context),
                )
            finally:
                _context.reset(token)

        return run

    return decorate


def idempotent_function(
    *,
    key: Callable[[Any], object] | None = None,
    expires_after_seconds: int = DEFAULT_EXPIRES_AFTER_SECONDS,
    store: StoreOption = None,
) -> FunctionDecorator:
    """Make a function of one JSON argument idempotent, e.g. a record handler of a batch.

    Without ``key`` the argument itself is hashed (an SQS record by its body and message
    attributes). A claim lasts until the deadline of the invocation it runs in, when that is
    known (inside an ``@idempotent`` handler, or after ``register_lambda_context``), and
    otherwise 15 minutes, the longest any invocation may run.
    """
    validate_expires_after(expires_after_seconds)
    ref = StoreRef(store)

    def decorate(function: Callable[[T], R]) -> Callable[[T], R]:
        prefix = namespace(function)

        @functools.wraps(function)
        def run(data: T) -> R:
            hashed = hashed_key(prefix, event_payload(data) if key is None else key(data))
            return run_once(
                ref.get(),
                hashed,
                in_progress_ms=in_progress_ms(_context.get(None)),
                expires_after_seconds=expires_after_seconds,
                call=lambda: function(data),
            )

        return run

    return decorate


def register_lambda_context(context: object) -> None:
    """Tell ``idempotent_function`` calls in this invocation when it ends; call it first
    thing in a handler that is not itself ``@idempotent``."""
    _context.set(context)
