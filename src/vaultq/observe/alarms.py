"""Alarms, as CloudWatch has them: a metric, a threshold, a state, a history, notifications.

An App declares alarms (``App.alarm``); ``vaultq up`` evaluates them every few seconds
(``vaultq.observe.alarm_evaluator``), records each change of state in an ``AlarmStore`` and
calls the alarm's webhooks. This module is the declaration and the pure rule::

    evaluate(alarm, value, current=AlarmState.OK)  # -> Evaluation(state, reason, value)

The metrics are a small closed set, each read the same way on every backend:

- ``dlq_depth(queue)``: messages in ``queue``'s dead-letter queue (visible, in flight or
  delayed), read at each evaluation;
- ``oldest_message_age_seconds(queue)``: the age of ``queue``'s oldest message, read at
  each evaluation;
- ``handler_errors(handler)``: invocations of ``handler`` (or of every handler) that raised,
  crashed, answered malformed or timed out, counted over the last ``period_seconds``: what
  Lambda's ``Errors`` metric counts (a partial batch failure is not an error);
- ``api_errors()``: HTTP API answers with a 5xx status over the last ``period_seconds``:
  what API Gateway's ``5XXError`` counts. 4xx answers are the callers' mistakes (a bad token,
  a bad body), which the operator cannot fix and an attacker can inflate at will.

Counts are never missing: the metrics store counts explicitly, so a period without
invocations counts 0. (CloudWatch publishes no datapoint then, which leaves an idle
function's error alarm in ``INSUFFICIENT_DATA``.) Data is missing when the queue a metric
reads does not exist.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, TypeVar
from urllib.parse import urlsplit

from vaultq import errors
from vaultq.observe.protocol import BUCKET_MS

if TYPE_CHECKING:
    from collections.abc import Callable

#: How long an alarm's history is kept: 30 days, as CloudWatch keeps alarm history.
DEFAULT_HISTORY_RETENTION_SECONDS = 30 * 24 * 60 * 60
MAX_PERIOD_SECONDS = 24 * 60 * 60
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
E = TypeVar("E", bound=StrEnum)


class AlarmState(StrEnum):
    """The state of an alarm, with CloudWatch's names."""

    #: The metric is on the good side of the threshold.
    OK = "OK"
    #: The metric breaches the threshold.
    ALARM = "ALARM"
    #: Not enough data to decide: the metric's queue does not exist.
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"


class MetricKind(StrEnum):
    """What an alarm watches (see the module's docs for how each is read)."""

    DLQ_DEPTH = "dlq_depth"
    OLDEST_MESSAGE_AGE_SECONDS = "oldest_message_age_seconds"
    HANDLER_ERRORS = "handler_errors"
    API_ERRORS = "api_errors"


class Comparison(StrEnum):
    """How the metric's value is compared with the threshold; true means ALARM."""

    GREATER_OR_EQUAL = ">="
    GREATER = ">"
    LESS = "<"
    LESS_OR_EQUAL = "<="


class MissingData(StrEnum):
    """What an evaluation without data means, as CloudWatch's ``TreatMissingData``."""

    #: ``INSUFFICIENT_DATA`` (the default, as on CloudWatch).
    MISSING = "missing"
    #: ``ALARM``.
    BREACHING = "breaching"
    #: ``OK``.
    NOT_BREACHING = "not_breaching"
    #: Keep the current state.
    IGNORE = "ignore"


_COMPARE: dict[Comparison, Callable[[float, float], bool]] = {
    Comparison.GREATER_OR_EQUAL: operator.ge,
    Comparison.GREATER: operator.gt,
    Comparison.LESS: operator.lt,
    Comparison.LESS_OR_EQUAL: operator.le,
}
_MISSING_STATE = {
    MissingData.MISSING: AlarmState.INSUFFICIENT_DATA,
    MissingData.BREACHING: AlarmState.ALARM,
    MissingData.NOT_BREACHING: AlarmState.OK,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmMetric:
    """One metric of the closed set; build it with the functions below."""

    kind: MetricKind
    queue: str | None = None
    #: ``handler_errors`` only: one handler's errors; None counts every handler's.
    handler: str | None = None

    def __post_init__(self) -> None:
        reads_queue = self.kind in (MetricKind.DLQ_DEPTH, MetricKind.OLDEST_MESSAGE_AGE_SECONDS)
        if reads_queue != isinstance(self.queue, str):
            raise errors.InvalidParameterValue(f"{self.kind.value} needs a queue, and only it")
        if self.handler is not None and self.kind is not MetricKind.HANDLER_ERRORS:
            raise errors.InvalidParameterValue("only handler_errors takes a handler")

    @property
    def counted(self) -> bool:
        """True for counts over a period; False for values read as they are now."""
        return self.kind in (MetricKind.HANDLER_ERRORS, MetricKind.API_ERRORS)

    def __str__(self) -> str:
        subject = self.queue or self.handler
        if self.kind is MetricKind.HANDLER_ERRORS and subject is None:
            subject = "all"
        return f"{self.kind.value}({subject or ''})"


def dlq_depth(queue: str) -> AlarmMetric:
    """Messages in the dead-letter queue of ``queue`` (the source queue's name)."""
    return AlarmMetric(kind=MetricKind.DLQ_DEPTH, queue=queue)


def oldest_message_age_seconds(queue: str) -> AlarmMetric:
    """The age of the oldest message of ``queue`` (in a dead-letter queue: since its move)."""
    return AlarmMetric(kind=MetricKind.OLDEST_MESSAGE_AGE_SECONDS, queue=queue)


def handler_errors(handler: str | None = None) -> AlarmMetric:
    """Failed invocations of ``handler``, or of every handler when None: those that raised,
    timed out, or reported every message of their batch failed (Lambda's ``Errors`` counts
    only the first two; a batch that failed whole is an error to whoever watches it)."""
    return AlarmMetric(kind=MetricKind.HANDLER_ERRORS, handler=handler)


def api_errors() -> AlarmMetric:
    """HTTP API answers with a 5xx status."""
    return AlarmMetric(kind=MetricKind.API_ERRORS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    """An HTTP endpoint that is POSTed a JSON document when an alarm changes into one of the
    ``on`` states. A failed call (no answer within ``timeout_seconds``, a 5xx or a 429) is
    tried again, up to ``attempts`` calls in all, waiting ``backoff_seconds`` and then twice
    as long each time. The URL is never logged or shown: webhook URLs often hold a token."""

    url: str = field(repr=False)
    on: frozenset[AlarmState] = frozenset({AlarmState.ALARM, AlarmState.OK})
    timeout_seconds: float = 5.0
    attempts: int = 3
    backoff_seconds: float = 1.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.InvalidParameterValue("a webhook URL is http:// or https:// with a host")
        if not 0 < self.timeout_seconds <= 60:
            raise errors.InvalidParameterValue("timeout_seconds must be in (0, 60]")
        if not 1 <= self.attempts <= 10:
            raise errors.InvalidParameterValue("attempts must be 1..10")
        if not 0 <= self.backoff_seconds <= 60:
            raise errors.InvalidParameterValue("backoff_seconds must be 0..60")
        if not self.on or not all(isinstance(state, AlarmState) for state in self.on):
            raise errors.InvalidParameterValue("on is a non-empty set of AlarmState")

    @property
    def host(self) -> str:
        """What logs may say about this webhook."""
        return urlsplit(self.url).hostname or ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Alarm:
    """``metric comparison threshold`` means ALARM, e.g. ``dlq_depth("orders") >= 1``.

    ``period_seconds`` (a whole number of minutes, the metrics' resolution) is the window
    of a counted metric: ``handler_errors() > 10`` over 300 s is "more than ten errors in
    five minutes". Windows are whole minutes, so one may reach up to 59 s further back.
    """

    name: str
    metric: AlarmMetric
    threshold: float
    comparison: Comparison = Comparison.GREATER_OR_EQUAL
    period_seconds: int = 60
    missing_data: MissingData = MissingData.MISSING
    description: str = ""
    webhooks: tuple[Webhook, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise errors.InvalidParameterValue(
                f"an alarm name is 1-128 of A-Z a-z 0-9 _ . -, not {self.name!r}"
            )
        if not isinstance(self.threshold, int | float) or not math.isfinite(self.threshold):
            raise errors.InvalidParameterValue("threshold must be a finite number")
        period = self.period_seconds
        if not BUCKET_MS // 1000 <= period <= MAX_PERIOD_SECONDS or period % 60:
            raise errors.InvalidParameterValue(
                "period_seconds must be a whole number of minutes, 60..86400"
            )
        if len(self.description) > 1024:
            raise errors.InvalidParameterValue("description is at most 1024 characters")
        # Strings are accepted for the enums: comparison=">" reads better than the member.
        object.__setattr__(self, "comparison", member_of(Comparison, self.comparison))
        object.__setattr__(self, "missing_data", member_of(MissingData, self.missing_data))
        object.__setattr__(self, "webhooks", tuple(self.webhooks))


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    """What one evaluation found; ``value`` is None when there was no data."""

    state: AlarmState
    reason: str
    value: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmTransition:
    """One entry of an alarm's history: a change of state, or its first evaluation
    (``old_state`` None)."""

    alarm: str
    at_ms: int
    old_state: AlarmState | None
    new_state: AlarmState
    reason: str
    value: float | None


class AlarmStore(Protocol):
    """Where alarm states and their history live, shared by every process of a deployment.

    An alarm's state is its latest transition; one that was never evaluated has none.
    """

    def latest(self) -> dict[str, AlarmTransition]:
        """Each evaluated alarm's latest transition, by alarm name."""
        ...

    def record(self, transition: AlarmTransition) -> bool:
        """Append ``transition`` if the alarm's state is still ``transition.old_state`` (None:
        never evaluated), and return True; else change nothing and return False. Of several
        evaluators sharing a store, exactly one records (and so notifies) each change.
        History older than the store's retention is dropped, except each alarm's latest."""
        ...

    def history(self, alarm: str, *, limit: int = 100) -> list[AlarmTransition]:
        """``alarm``'s transitions, newest first; an unknown alarm has none."""
        ...

    def close(self) -> None: ...


def evaluate(alarm: Alarm, value: float | None, *, current: AlarmState | None) -> Evaluation:
    """The state ``value`` (None: no data) puts ``alarm`` in, from ``current`` (None: never
    evaluated). Pure: the evaluator reads the value and the clock."""
    if value is None:
        if alarm.missing_data is MissingData.IGNORE:
            state = current or AlarmState.INSUFFICIENT_DATA
        else:
            state = _MISSING_STATE[alarm.missing_data]
        reason = f"no data for {alarm.metric} (missing data: {alarm.missing_data.value})"
        return Evaluation(state=state, reason=reason, value=None)
    breaching = _COMPARE[alarm.comparison](value, alarm.threshold)
    over = f" over {alarm.period_seconds} s" if alarm.metric.counted else ""
    verdict = "" if breaching else "not "
    reason = (
        f"{alarm.metric}{over} was {_number(value)}: "
        f"{verdict}{alarm.comparison.value} the threshold {_number(alarm.threshold)}"
    )
    state = AlarmState.ALARM if breaching else AlarmState.OK
    return Evaluation(state=state, reason=reason, value=value)


def should_notify(webhook: Webhook, transition: AlarmTransition) -> bool:
    """A webhook hears of changes into its ``on`` states; an alarm's first evaluation is
    news only when it finds ALARM (a fresh deployment does not announce every OK)."""
    if transition.new_state not in webhook.on:
        return False
    if transition.old_state is None:
        return transition.new_state is AlarmState.ALARM
    return transition.old_state is not transition.new_state


def member_of(kind: type[E], value: str) -> E:
    """``kind``'s member of value ``value``, or ``InvalidParameterValue``."""
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(repr(m.value) for m in kind)
        raise errors.InvalidParameterValue(f"{kind.__name__} is one of {known}") from None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
