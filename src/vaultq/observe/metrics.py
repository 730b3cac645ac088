"""Prometheus metrics for vaultq: queue depths and ages, jobs, handlers and the HTTP API.

``VaultqCollector`` reads everything at scrape time, from the queue backend (depths, ages,
dead-letter queues), an optional job count and a ``MetricsStore`` (counters that workers and
the API wrote, in any process). It is registered on a registry of its own, never on
prometheus_client's process-wide default::

    registry = new_registry(VaultqCollector(queues=queues, metrics=store))
    body = render(registry)  # serve with media type CONTENT_TYPE

A source that fails (a backend down, a job count that raises) leaves only its own families
out of the scrape: ``vaultq_scrape_error{source}`` is 1 for it in that scrape, and the failure
is logged once, when the source starts failing, not on every scrape.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from vaultq import errors
from vaultq.jobs.protocol import JobStatus, validate_status
from vaultq.observe.protocol import (
    API_REQUESTS,
    EMBEDDING_BATCHES,
    HANDLER_INVOCATIONS,
    HANDLER_MESSAGES,
    InvocationOutcome,
    MessageResult,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from prometheus_client.metrics_core import Metric

    from vaultq.observe.protocol import MetricsStore, SeriesTotal
    from vaultq.queues.protocol import QueueBackend, QueueStats

__all__ = ["CONTENT_TYPE", "VaultqCollector", "new_registry", "render"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The media type of ``render``'s output: the classic text format, which every Prometheus
#: reads and which prometheus_client's own server sends unless a scraper asks for another.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_QUEUE_STATES = ("visible", "in_flight", "delayed")


class VaultqCollector(Collector):
    """Reads vaultq's metrics at scrape time.

    ``queue_names`` says which queues to report (default: every queue of the backend);
    dead-letter queues are those that a reported queue's redrive policy names.
    ``job_counts`` returns jobs per ``JobStatus`` value (the job table has no cheap count
    of its own); without it there is no ``vaultq_jobs`` family.
    """

    def __init__(
        self,
        *,
        queues: QueueBackend,
        metrics: MetricsStore,
        queue_names: Callable[[], Sequence[str]] | None = None,
        job_counts: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self._queues = queues
        self._metrics = metrics
        self._queue_names = queue_names or queues.list_queues
        self._job_counts = job_counts
        self._failing: set[str] = set()
        self._failing_lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        sources: dict[str, Callable[[], list[Metric]]] = {
            "queues": self._queue_families,
            "metrics": self._metric_families,
        }
        if self._job_counts is not None:
            sources["jobs"] = self._job_families
        scrape_errors = GaugeMetricFamily(
            "vaultq_scrape_error",
            "1 when a source failed in this scrape and its metrics are missing from it",
            labels=["source"],
        )
        for source, build in sources.items():
            families = self._attempt(source, build)
            scrape_errors.add_metric([source], 0 if families is not None else 1)
            yield from families or ()
        yield scrape_errors

    # -- sources --------------------------------------------------------------------------

    def _queue_families(self) -> list[Metric]:
        stats, dead_letter_queues = self._queue_snapshot()
        messages = GaugeMetricFamily(
            "vaultq_queue_messages", "Messages in a queue, by state", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily(
            "vaultq_queue_oldest_message_age_seconds",
            "Age of a queue's oldest message (in a dead-letter queue: since its move)",
            labels=["queue"],
        )
        dead_letters = GaugeMetricFamily(
            "vaultq_dlq_messages",
            "Messages held by a dead-letter queue (visible, in flight or delayed)",
            labels=["queue"],
        )
        for name, queue in sorted(stats.items()):
            for state in _QUEUE_STATES:
                messages.add_metric([name, state], getattr(queue, state))
            oldest.add_metric([name], queue.oldest_message_age_seconds)
            if name in dead_letter_queues:
                dead_letters.add_metric([name], queue.visible + queue.in_flight + queue.delayed)
        return [messages, oldest, dead_letters]

    def _queue_snapshot(self) -> tuple[dict[str, QueueStats], set[str]]:
        stats: dict[str, QueueStats] = {}
        dead_letter_queues: set[str] = set()
        for name in self._queue_names():
            info = _unless_gone(self._queues.get_queue, name)
            found = _unless_gone(self._queues.stats, name)
            if info is None or found is None:
                continue  # deleted since it was listed: nothing to report
            stats[name] = found
            if info.attributes.redrive_policy is not None:
                dead_letter_queues.add(info.attributes.redrive_policy.dead_letter_queue)
        for name in dead_letter_queues - stats.keys():
            found = _unless_gone(self._queues.stats, name)
            if found is not None:
                stats[name] = found
        return stats, dead_letter_queues

    def _job_families(self) -> list[Metric]:
        counts = self._job_counts() if self._job_counts is not None else {}
        by_status = {validate_status(status): count for status, count in counts.items()}
        jobs = GaugeMetricFamily(
            "vaultq_jobs", "Jobs in the job table, by status", labels=["status"]
        )
        for status in JobStatus:
            jobs.add_metric([status.value], by_status.get(status, 0))
        return [jobs]

    def _metric_families(self) -> list[Metric]:
        totals = self._metrics.totals()
        return [*_handler_families(totals), *_api_families(totals), *_embedding_families(totals)]

    # -- failures -------------------------------------------------------------------------

    def _attempt(self, source: str, build: Callable[[], list[Metric]]) -> list[Metric] | None:
        try:
            families = build()
        except Exception as exc:
            # Any exception: a job count is the caller's code, and a scrape shows what it can.
            self._note_failure(source, exc)
            return None
        with self._failing_lock:
            recovered = source in self._failing
            self._failing.discard(source)
        if recovered:
            log.info("metrics source %s recovered", source)
        return families

    def _note_failure(self, source: str, exc: Exception) -> None:
        with self._failing_lock:
            first = source not in self._failing
            self._failing.add(source)
        if first:
            # The code or type only: an error's text may hold paths or data.
            code = exc.code if isinstance(exc, errors.VaultqError) else type(exc).__name__
            log.warning(
                "metrics source %s failed (%s); its metrics are left out until it recovers",
                source,
                code,
            )


def new_registry(collector: Collector) -> CollectorRegistry:
    """A registry holding only ``collector``: not the process-wide default, so two apps (or
    two tests) in one process never collide, and no process metrics are mixed in."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in Prometheus' text format (media type ``CONTENT_TYPE``)."""
    return generate_latest(registry)


def _unless_gone(read: Callable[[str], T], queue: str) -> T | None:
    try:
        return read(queue)
    except errors.QueueDoesNotExist:
        return None


def _by_labels(
    totals: Sequence[SeriesTotal], name: str, keys: tuple[str, str]
) -> dict[tuple[str, str], SeriesTotal]:
    return {
        (total.labels[keys[0]], total.labels[keys[1]]): total
        for total in totals
        if total.name == name
    }


def _handler_families(totals: Sequence[SeriesTotal]) -> list[Metric]:
    invocations = _by_labels(totals, HANDLER_INVOCATIONS, ("handler", "outcome"))
    messages = _by_labels(totals, HANDLER_MESSAGES, ("handler", "result"))
    invocations_total = CounterMetricFamily(
        "vaultq_handler_invocations",
        "Handler invocations, by outcome",
        labels=["handler", "outcome"],
    )
    messages_total = CounterMetricFamily(
        "vaultq_handler_messages",
        "Messages settled by a handler, by result",
        labels=["handler", "result"],
    )
    duration = SummaryMetricFamily(
        "vaultq_handler_duration_seconds", "Time handlers ran, per invocation", labels=["handler"]
    )
    # Every outcome and result of a known handler is exported, zeros included, so that
    # increase() sees a series' first event.
    for handler in sorted({h for h, _ in invocations} | {h for h, _ in messages}):
        count, seconds = 0, 0.0
        for outcome in InvocationOutcome:
            total = invocations.get((handler, outcome.value))
            invocations_total.add_metric([handler, outcome.value], total.count if total else 0)
            count += total.count if total else 0
            seconds += total.sum if total else 0.0
        for result in MessageResult:
            total = messages.get((handler, result.value))
            messages_total.add_metric([handler, result.value], total.count if total else 0)
        duration.add_metric([handler], count, seconds)
    return [invocations_total, messages_total, duration]


def _api_families(totals: Sequence[SeriesTotal]) -> list[Metric]:
    requests = _by_labels(totals, API_REQUESTS, ("route", "status_class"))
    requests_total = CounterMetricFamily(
        "vaultq_api_requests",
        "HTTP API requests, by route template and status class",
        labels=["route", "status_class"],
    )
    duration = SummaryMetricFamily(
        "vaultq_api_request_duration_seconds", "Time to answer a request", labels=["route"]
    )
    per_route: dict[str, tuple[int, float]] = {}
    for (route, status_class), total in sorted(requests.items()):
        requests_total.add_metric([route, status_class], total.count)
        count, seconds = per_route.get(route, (0, 0.0))
        per_route[route] = (count + total.count, seconds + total.sum)
    for route, (count, seconds) in per_route.items():
        duration.add_metric([route], count, seconds)
    return [requests_total, duration]


def _embedding_families(totals: Sequence[SeriesTotal]) -> list[Metric]:
    batches = _by_labels(totals, EMBEDDING_BATCHES, ("model", "fallback"))
    batches_total = CounterMetricFamily(
        "vaultq_embedding_batches",
        "Batches embedded, by model and whether a fallback model stood in",
        labels=["model", "fallback"],
    )
    messages_total = CounterMetricFamily(
        "vaultq_embedding_messages",
        "Messages embedded, by model and whether a fallback model stood in",
        labels=["model", "fallback"],
    )
    for (model, fallback), total in sorted(batches.items()):
        batches_total.add_metric([model, fallback], total.count)
        messages_total.add_metric([model, fallback], total.sum)
    return [batches_total, messages_total] if batches else []
