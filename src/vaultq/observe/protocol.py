"""The metrics contract: what workers and the HTTP API record, what scrapes and alarms read.

Every record is an increment of one or more series: a metric name, a few labels, a count
and a sum. A store keeps them twice, as per-minute buckets (for windows: "handler errors in
the last five minutes") and as running totals that only grow (for Prometheus counters,
which must never go down, not even when old buckets are swept). Labels are handler names,
route templates, outcomes and status classes only: never a message body, an id or a token.

The rules every backend shares (which series a record touches, what is valid) live here, so
a backend only has to add increments atomically.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, Protocol

from vaultq import errors

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Invocations of a handler: labels ``handler``, ``outcome``; the sum is their duration.
HANDLER_INVOCATIONS = "handler_invocations"
#: Messages a handler settled: labels ``handler``, ``result``; the sum is unused (0).
HANDLER_MESSAGES = "handler_messages"
#: HTTP API requests: labels ``route``, ``status_class``; the sum is their duration.
API_REQUESTS = "api_requests"
#: Batches an embedding provider embedded: labels ``model``, ``fallback`` (``true`` when a
#: fallback model stood in for a failing provider); the sum is their messages.
EMBEDDING_BATCHES = "embedding_batches"
METRIC_NAMES = frozenset({HANDLER_INVOCATIONS, HANDLER_MESSAGES, API_REQUESTS, EMBEDDING_BATCHES})

#: The ``route`` of a request that matched no route: raw paths would leak ids and let any
#: client create series without bound.
UNMATCHED_ROUTE = "unmatched"
#: Buckets are one minute wide, CloudWatch's finest standard resolution.
BUCKET_MS = 60_000
#: How long buckets are kept: 15 days, as CloudWatch keeps one-minute data points.
DEFAULT_RETENTION_SECONDS = 15 * 24 * 60 * 60

_HANDLER = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A route template such as /api/v1/jobs/{job_id}: no '?', '=', '%', '&' or spaces, so
# neither a query string nor an encoded value can become a label.
_ROUTE = re.compile(r"[A-Za-z0-9_{}./:~-]{1,256}")
# A model name as providers spell them: all-MiniLM-L6-v2, text-embedding-3-small, org/model.
_MODEL = re.compile(r"[A-Za-z0-9_./:-]{1,128}")


class InvocationOutcome(StrEnum):
    """How one invocation of a handler ended."""

    #: Every message of the batch succeeded.
    SUCCESS = "success"
    #: Some messages failed (retried or dead-lettered), the others succeeded.
    PARTIAL = "partial"
    #: The handler raised, crashed or answered malformed, or every message failed.
    ERROR = "error"
    #: The handler ran past its timeout and was stopped.
    TIMEOUT = "timeout"


class MessageResult(StrEnum):
    """What became of one message of a settled batch."""

    #: The handler succeeded; the message was deleted.
    SUCCEEDED = "succeeded"
    #: The handler failed it; it went back to its queue for a retry.
    FAILED = "failed"
    #: It went to its dead-letter queue.
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True, slots=True, kw_only=True)
class Increment:
    """One series' share of one record: add ``count`` and ``sum`` to its bucket and total."""

    name: str
    labels: Mapping[str, str]
    count: int
    sum: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesTotal:
    """A series' running total since the store was created; it never decreases."""

    name: str
    labels: Mapping[str, str]
    count: int
    sum: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Series:
    """What ``window`` adds up: the buckets of ``name`` whose labels include ``labels``.

    ``Series(name=HANDLER_INVOCATIONS, labels={"outcome": "error"})`` is every handler's
    errors; add ``"handler": "resize"`` for one handler's. ``statistic="sum"`` adds the sums
    (seconds, for durations) instead of the counts.
    """

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    statistic: Literal["count", "sum"] = "count"

    def __post_init__(self) -> None:
        if self.name not in METRIC_NAMES:
            raise errors.InvalidParameterValue(f"unknown metric {self.name!r}")
        if self.statistic not in ("count", "sum"):
            raise errors.InvalidParameterValue("statistic is 'count' or 'sum'")

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(name) == value for name, value in self.labels.items())


class MetricsStore(Protocol):
    """Counters that survive processes: workers and the API write, scrapes and alarms read.

    Writes are atomic per record (every series of one record, or none) and safe from many
    processes at once: no increment is lost. The store reads the time from its own clock.
    """

    def record_invocation(
        self,
        handler: str,
        *,
        outcome: str,
        duration_seconds: float,
        messages: int,
        failed: int,
        dead_lettered: int,
    ) -> None:
        """Count one settled invocation: ``messages`` in the batch, of which ``failed`` went
        back for a retry and ``dead_lettered`` to the dead-letter queue (the rest
        succeeded). ``outcome`` is an ``InvocationOutcome`` value."""
        ...

    def record_api_request(self, route: str, *, status_code: int, duration_seconds: float) -> None:
        """Count one answered request. ``route`` is the route's template
        (``/jobs/{job_id}``), never the requested path, or ``UNMATCHED_ROUTE``.

        Called on the API's event loop for every request, so it must not wait on I/O: a
        store counts in memory and writes within about a second (invalid arguments still
        raise here). Its own reads, ``sweep_expired`` and ``close`` write what is pending
        first, so the store always reads its own counts."""
        ...

    def record_embedding_batch(self, model: str, *, fallback: bool, messages: int) -> None:
        """Count one embedded batch of ``messages`` and the model that embedded it;
        ``fallback`` says it stood in for a failing provider."""
        ...

    def totals(self) -> list[SeriesTotal]:
        """Every series' running total, for Prometheus counters."""
        ...

    def window(self, metric: Series, *, since_ms: int) -> float:
        """``metric`` added up over the buckets from ``since_ms`` on, rounded down to its
        minute: a window may start up to 59.999 s early, never late."""
        ...

    def sweep_expired(self) -> int:
        """Delete buckets past the retention; returns how many. Totals are kept."""
        ...

    def close(self) -> None: ...


def invocation_outcome(
    *, error_reason: str | None, messages: int, failed: int, dead_lettered: int
) -> InvocationOutcome:
    """The outcome of a settled invocation: ``error_reason`` is the invocation's error
    reason (``TIMEOUT``, ``HANDLER_ERROR``, ...) or None when the handler returned."""
    if error_reason == "TIMEOUT":
        return InvocationOutcome.TIMEOUT
    lost = failed + dead_lettered
    if error_reason is not None or (messages > 0 and lost >= messages):
        return InvocationOutcome.ERROR
    return InvocationOutcome.PARTIAL if lost else InvocationOutcome.SUCCESS


def invocation_increments(
    handler: str,
    *,
    outcome: str,
    duration_seconds: float,
    messages: int,
    failed: int,
    dead_lettered: int,
) -> list[Increment]:
    """The series one invocation adds to; raises ``InvalidParameterValue`` before any."""
    _check_handler(handler)
    checked = _check_outcome(outcome)
    duration = _check_duration(duration_seconds)
    for label, value in (
        ("messages", messages),
        ("failed", failed),
        ("dead_lettered", dead_lettered),
    ):
        _check_count(label, value)
    if failed + dead_lettered > messages:
        raise errors.InvalidParameterValue("failed + dead_lettered cannot exceed messages")
    results = {
        MessageResult.SUCCEEDED: messages - failed - dead_lettered,
        MessageResult.FAILED: failed,
        MessageResult.DEAD_LETTERED: dead_lettered,
    }
    increments = [
        Increment(
            name=HANDLER_INVOCATIONS,
            labels={"handler": handler, "outcome": checked.value},
            count=1,
            sum=duration,
        )
    ]
    increments += [
        Increment(
            name=HANDLER_MESSAGES,
            labels={"handler": handler, "result": result.value},
            count=count,
            sum=0.0,
        )
        for result, count in results.items()
        if count
    ]
    return increments


def api_request_increments(
    route: str, *, status_code: int, duration_seconds: float
) -> list[Increment]:
    """The series one request adds to; raises ``InvalidParameterValue`` before any."""
    if not isinstance(route, str) or not _ROUTE.fullmatch(route):
        raise errors.InvalidParameterValue(
            "route must be a route template of 1-256 of A-Z a-z 0-9 _ { } . / : ~ -"
        )
    if isinstance(status_code, bool) or not isinstance(status_code, int):
        raise errors.InvalidParameterValue("status_code must be an integer")
    if not 100 <= status_code <= 599:
        raise errors.InvalidParameterValue(f"status_code must be 100..599, not {status_code}")
    labels = {"route": route, "status_class": f"{status_code // 100}xx"}
    duration = _check_duration(duration_seconds)
    return [Increment(name=API_REQUESTS, labels=labels, count=1, sum=duration)]


def embedding_batch_increments(model: str, *, fallback: bool, messages: int) -> list[Increment]:
    """The series one embedded batch adds to; raises ``InvalidParameterValue`` before any."""
    if not isinstance(model, str) or not _MODEL.fullmatch(model):
        raise errors.InvalidParameterValue("model must be 1-128 of A-Z a-z 0-9 _ . / : -")
    if not isinstance(fallback, bool):
        raise errors.InvalidParameterValue("fallback must be true or false")
    _check_count("messages", messages)
    labels = {"model": model, "fallback": str(fallback).lower()}
    return [Increment(name=EMBEDDING_BATCHES, labels=labels, count=1, sum=float(messages))]


def validate_since(since_ms: object) -> int:
    if isinstance(since_ms, bool) or not isinstance(since_ms, int) or since_ms < 0:
        raise errors.InvalidParameterValue("since_ms must be milliseconds >= 0")
    return since_ms


def _check_handler(handler: object) -> None:
    if not isinstance(handler, str) or not _HANDLER.fullmatch(handler):
        raise errors.InvalidParameterValue("handler must be a function name (1-64 of A-Za-z0-9_-)")


def _check_outcome(outcome: object) -> InvocationOutcome:
    try:
        if not isinstance(outcome, str):
            raise ValueError(outcome)
        return InvocationOutcome(outcome)
    except ValueError:
        known = ", ".join(o.value for o in InvocationOutcome)
        raise errors.InvalidParameterValue(f"outcome is one of {known}") from None


def _check_duration(duration_seconds: object) -> float:
    if (
        isinstance(duration_seconds, bool)
        or not isinstance(duration_seconds, int | float)
        or not math.isfinite(duration_seconds)
        or duration_seconds < 0
    ):
        raise errors.InvalidParameterValue("duration_seconds must be a finite number >= 0")
    return float(duration_seconds)


def _check_count(label: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.InvalidParameterValue(f"{label} must be an integer >= 0")
