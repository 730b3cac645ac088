"""Evaluates an app's alarms every few seconds, records changes and notifies.

``vaultq up`` runs one ``AlarmEvaluator`` thread beside its API. Each round reads every
alarm's metric (queue statistics from the ``QueueBackend``, counts from the
``MetricsStore``), applies ``evaluate`` and records a change of state in the ``AlarmStore``
(compare-and-set, so several servers sharing a store record and notify each change once).
A recorded change is logged (logger ``vaultq.observe.alarm_evaluator``: WARNING into ALARM,
INFO otherwise) and POSTed to the alarm's webhooks from a notifier thread, so a slow
webhook never delays evaluation. A notification whose process dies before it is sent is
lost; the change itself is in the history.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from vaultq import errors
from vaultq.observe.alarms import (
    AlarmMetric,
    AlarmState,
    AlarmTransition,
    MetricKind,
    evaluate,
    should_notify,
)
from vaultq.observe.protocol import API_REQUESTS, HANDLER_INVOCATIONS, InvocationOutcome, Series

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from vaultq.observe.alarms import Alarm, AlarmStore, Webhook
    from vaultq.observe.protocol import MetricsStore
    from vaultq.queues.protocol import QueueBackend

log = logging.getLogger(__name__)
_STOP_SECONDS = 10.0


class AlarmEvaluator:
    """Evaluates ``alarms`` every ``interval_seconds`` on a thread between ``start`` and
    ``stop``; ``webhooks`` are called for every alarm, besides each alarm's own."""

    def __init__(
        self,
        alarms: Iterable[Alarm],
        *,
        app_name: str,
        store: AlarmStore,
        queues: QueueBackend,
        metrics: MetricsStore,
        interval_seconds: float = 10.0,
        webhooks: Sequence[Webhook] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._alarms = tuple(alarms)
        self._app_name = app_name
        self._store = store
        self._queues = queues
        self._metrics = metrics
        self._interval_seconds = interval_seconds
        self._webhooks = tuple(webhooks)
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._notifier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaultq-alarm-hook")

    def evaluate_once(self) -> list[AlarmTransition]:
        """One round over every alarm; returns the changes it recorded (and notified)."""
        now_ms = int(self._clock() * 1000)
        latest = self._store.latest()
        recorded = []
        for alarm in self._alarms:
            try:
                transition = self._check(alarm, latest.get(alarm.name), now_ms)
                if transition is None or not self._store.record(transition):
                    continue
            except errors.VaultqError as exc:
                # A read that failed is no evidence either way: the state stays as it is.
                log.warning("alarm %s not evaluated: %s", alarm.name, exc.code)
                continue
            recorded.append(transition)
            self._announce(alarm, transition)
        return recorded

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vaultq-alarms", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop evaluating, and wait for notifications already due (their retries too)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=_STOP_SECONDS)
        self._notifier.shutdown(wait=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.evaluate_once()
            except errors.VaultqError as exc:
                log.warning("alarm evaluation failed: %s", exc.code)
            self._stop.wait(self._interval_seconds)

    def _check(
        self, alarm: Alarm, latest: AlarmTransition | None, now_ms: int
    ) -> AlarmTransition | None:
        current = None if latest is None else latest.new_state
        value = read_metric(
            alarm.metric,
            queues=self._queues,
            metrics=self._metrics,
            since_ms=max(0, now_ms - alarm.period_seconds * 1000),
        )
        found = evaluate(alarm, value, current=current)
        if found.state is current:
            return None
        return AlarmTransition(
            alarm=alarm.name,
            at_ms=now_ms,
            old_state=current,
            new_state=found.state,
            reason=found.reason,
            value=found.value,
        )

    def _announce(self, alarm: Alarm, transition: AlarmTransition) -> None:
        level = logging.WARNING if transition.new_state is AlarmState.ALARM else logging.INFO
        old = transition.old_state.value if transition.old_state else "-"
        log.log(
            level,
            "alarm %s: %s -> %s: %s",
            alarm.name,
            old,
            transition.new_state.value,
            transition.reason,
            extra={
                "alarm": alarm.name,
                "old_state": old,
                "new_state": transition.new_state.value,
            },
        )
        hooks = [
            hook for hook in (*alarm.webhooks, *self._webhooks) if should_notify(hook, transition)
        ]
        if hooks:
            document = notification(self._app_name, alarm, transition)
            for hook in hooks:
                self._notifier.submit(deliver, hook, document)


def read_metric(
    metric: AlarmMetric, *, queues: QueueBackend, metrics: MetricsStore, since_ms: int
) -> float | None:
    """``metric``'s value now (a count: since ``since_ms``); None when its queue is gone."""
    try:
        if metric.kind is MetricKind.DLQ_DEPTH:
            return _dlq_depth(queues, _queue_of(metric))
        if metric.kind is MetricKind.OLDEST_MESSAGE_AGE_SECONDS:
            return float(queues.stats(_queue_of(metric)).oldest_message_age_seconds)
    except errors.QueueDoesNotExist:
        return None
    return sum(metrics.window(series, since_ms=since_ms) for series in _counted(metric))


def notification(app_name: str, alarm: Alarm, transition: AlarmTransition) -> bytes:
    """The JSON document a webhook is POSTed."""
    at = datetime.fromtimestamp(transition.at_ms / 1000, tz=UTC)
    return json.dumps(
        {
            "app": app_name,
            "alarm": alarm.name,
            "description": alarm.description,
            "metric": str(alarm.metric),
            "comparison": alarm.comparison.value,
            "threshold": alarm.threshold,
            "old_state": transition.old_state,
            "new_state": transition.new_state,
            "reason": transition.reason,
            "value": transition.value,
            "at": at.isoformat(timespec="milliseconds"),
        },
        separators=(",", ":"),
    ).encode()


def deliver(
    webhook: Webhook, document: bytes, *, sleep: Callable[[float], None] = time.sleep
) -> bool:
    """POST ``document`` to ``webhook``, retrying as it says; True once it answered 2xx.
    A failure is logged (the host and what went wrong), never raised."""
    delay = webhook.backoff_seconds
    attempt = 1
    while True:
        failure = _post(webhook, document)
        if failure is None:
            return True
        retryable, what = failure
        if not retryable or attempt == webhook.attempts:
            log.warning("webhook to %s failed after %d attempt(s): %s", webhook.host, attempt, what)
            return False
        sleep(delay)
        delay *= 2
        attempt += 1


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirected POST would be retried as a GET without its body: count it as a failure.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _post(webhook: Webhook, document: bytes) -> tuple[bool, str] | None:
    """None on a 2xx answer; else whether to try again, and what failed."""
    request = urllib.request.Request(  # noqa: S310 - Webhook allows http(s) URLs only
        webhook.url,
        data=document,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "vaultq-alarms"},
    )
    try:
        with _OPENER.open(request, timeout=webhook.timeout_seconds) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code >= 500 or exc.code == 429, f"HTTP {exc.code}"
    except (OSError, http.client.HTTPException) as exc:
        # Refused, reset, timed out, unresolvable, garbled: worth another try.
        cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return True, type(cause).__name__ if isinstance(cause, BaseException) else "URLError"
    return None


def _dlq_depth(queues: QueueBackend, queue: str) -> float | None:
    policy = queues.get_queue(queue).attributes.redrive_policy
    if policy is None:
        return None
    stats = queues.stats(policy.dead_letter_queue)
    return float(stats.visible + stats.in_flight + stats.delayed)


def _queue_of(metric: AlarmMetric) -> str:
    if metric.queue is None:
        raise errors.InvalidParameterValue(f"{metric.kind.value} needs a queue")
    return metric.queue


def _counted(metric: AlarmMetric) -> list[Series]:
    if metric.kind is MetricKind.API_ERRORS:
        return [Series(name=API_REQUESTS, labels={"status_class": "5xx"})]
    handler = {} if metric.handler is None else {"handler": metric.handler}
    return [
        Series(name=HANDLER_INVOCATIONS, labels={"outcome": outcome.value, **handler})
        for outcome in (InvocationOutcome.ERROR, InvocationOutcome.TIMEOUT)
    ]
