"""Handler processes: where handlers run, so that a timeout can stop one for real.

Each concurrency slot of a mapping owns one child process, kept warm between invocations as
Lambda keeps an execution environment. The child imports the app, runs the handler's
``init`` (Lambda's init phase), then one invocation at a time, answering over a pipe. A
failing ``init`` fails the invocation that needed it, and the next one starts afresh. A
handler that runs past its timeout is killed with its process, which is replaced; the
worker itself never runs handler code.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import signal
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vaultq.events import LambdaContext
from vaultq.privacy.redact import redact
from vaultq.queues.protocol import FailureReason
from vaultq.runtime.failures import NonRetryableError, describe

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection

    from vaultq.app import App
    from vaultq.jobs.protocol import JobStore

log = logging.getLogger(__name__)
_CONTEXT = multiprocessing.get_context("spawn")
_START_TIMEOUT_SECONDS = 60.0
_READY = "ready"


@dataclass(frozen=True, slots=True, kw_only=True)
class Invocation:
    handler: str
    event: dict[str, Any]
    timeout_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class InvocationError:
    reason: str
    #: Exception type and redacted text, never a traceback with local values.
    error: str
    retryable: bool = True
    #: The records the error concerns; empty means the whole batch.
    message_ids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class InvocationResult:
    response: Any = None
    error: InvocationError | None = None
    duration_seconds: float = 0.0


class _StartFailed(Exception):
    def __init__(self, error: InvocationError) -> None:
        super().__init__(error.error)
        self.error = error


class HandlerProcess:
    """One warm child process that runs invocations of ``handler`` (``app_path``'s)."""

    def __init__(
        self,
        app_path: str,
        *,
        handler: str | None = None,
        job_store_factory: Callable[[], JobStore] | None = None,
        start_timeout_seconds: float = _START_TIMEOUT_SECONDS,
    ) -> None:
        self._app_path = app_path
        self._handler = handler
        #: Covers the handler's ``init`` (a model may take a while to load).
        self._start_timeout_seconds = start_timeout_seconds
        self._job_store_factory = job_store_factory
        self._conn: Connection | None = None
        self._process: Any = None

    @property
    def warm(self) -> bool:
        """Started, its ``init`` done: the next invocation runs at once."""
        return self._conn is not None and self._process is not None and self._process.is_alive()

    def start(self) -> InvocationError | None:
        """Start the process and run the handler's ``init`` now, not on the first event;
        what went wrong if it failed (the next invocation tries again)."""
        try:
            self._ensure_started()
        except _StartFailed as failed:
            return failed.error
        return None

    def invoke(self, invocation: Invocation) -> InvocationResult:
        started = time.monotonic()
        try:
            conn = self._ensure_started()
        except _StartFailed as failed:
            return InvocationResult(error=failed.error, duration_seconds=time.monotonic() - started)
        try:
            conn.send(invocation)
            if not conn.poll(invocation.timeout_seconds):
                self._kill()
                return _failed(
                    FailureReason.TIMEOUT,
                    f"Task timed out after {invocation.timeout_seconds:.2f} seconds",
                    started,
                )
            result: InvocationResult = conn.recv()
        except (EOFError, OSError, pickle.PicklingError) as exc:
            self._kill()
            return _failed(
                FailureReason.HANDLER_ERROR, f"handler process died: {type(exc).__name__}", started
            )
        return InvocationResult(
            response=result.response,
            error=result.error,
            duration_seconds=time.monotonic() - started,
        )

    def abort_start(self) -> None:
        """Kill the process if it is starting or running, from any thread; the thread in
        ``start`` then fails at once and cleans up after it, instead of waiting out an init."""
        process = self._process
        if process is not None and process.is_alive():
            process.kill()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
        if self._process is not None:
            self._process.join(timeout=5)
        self._kill()

    def _ensure_started(self) -> Connection:
        if self._conn is not None and self._process.is_alive():
            return self._conn
        self._kill()
        parent, child = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(
            target=serve,
            args=(self._app_path, child, self._job_store_factory, self._handler),
            daemon=True,
        )
        self._process.start()
        child.close()
        self._conn = parent
        wait = self._start_timeout_seconds
        try:
            ready = parent.recv() if parent.poll(wait) else f"did not start within {wait:.0f} s"
        except (EOFError, OSError):
            ready = "exited while starting"
        if ready == _READY:
            return parent
        self._kill()
        if isinstance(ready, InvocationError):
            raise _StartFailed(ready)
        raise _StartFailed(
            InvocationError(reason=FailureReason.HANDLER_ERROR, error=f"handler process {ready}")
        )

    def _kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join()
        if self._conn is not None:
            self._conn.close()
        self._process = None
        self._conn = None


def _failed(reason: str, error: str, started: float) -> InvocationResult:
    return InvocationResult(
        error=InvocationError(reason=reason, error=error),
        duration_seconds=time.monotonic() - started,
    )


def serve(
    app_path: str,
    conn: Connection,
    job_store_factory: Callable[[], JobStore] | None = None,
    handler: str | None = None,
) -> None:
    """The child's loop: import the app and run ``handler``'s init once, then run
    invocations until told to stop."""
    # Ctrl-C reaches the whole process group; the worker decides when handlers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from vaultq.app import load_app  # noqa: PLC0415 - imported in the child only

    app = load_app(app_path)
    init = app.handlers[handler].init if handler is not None else None
    if init is not None:
        try:
            init()
        except Exception as exc:  # reported to the worker; this process ends
            conn.send(_describe(exc, during="init"))
            return
    jobs = job_store_factory() if job_store_factory else None
    conn.send(_READY)
    while True:
        try:
            invocation = conn.recv()
        except EOFError:
            return  # the worker is gone
        if invocation is None:
            return
        result = run_invocation(app, invocation, jobs=jobs)
        try:
            conn.send(result)
        except (pickle.PicklingError, TypeError, AttributeError):
            conn.send(
                InvocationResult(
                    error=InvocationError(
                        reason=FailureReason.HANDLER_ERROR,
                        error="the handler's response cannot be serialised",
                    )
                )
            )


def run_invocation(
    app: App, invocation: Invocation, *, jobs: JobStore | None = None
) -> InvocationResult:
    spec = app.handlers[invocation.handler]
    context = LambdaContext(
        function_name=spec.name,
        memory_limit_in_mb=spec.memory_limit_in_mb,
        deadline_monotonic=time.monotonic() + invocation.timeout_seconds,
        jobs=jobs,
    )
    try:
        return InvocationResult(response=spec.function(invocation.event, context))
    except Exception as exc:  # a handler's failure is a result, not a crash
        return InvocationResult(error=_describe(exc))


def _describe(exc: Exception, *, during: str = "handler") -> InvocationError:
    text = redact(describe(exc))
    if during != "handler":
        text = f"{during} failed: {text}"
    log.info("handler failed: %s", text)
    log.debug("handler traceback: %s", redact("".join(traceback.format_exception(exc))))
    if isinstance(exc, NonRetryableError):
        return InvocationError(
            reason=exc.failure_reason, error=text, retryable=False, message_ids=exc.message_ids
        )
    reason = getattr(exc, "failure_reason", FailureReason.HANDLER_ERROR)
    return InvocationError(reason=str(reason), error=text)
