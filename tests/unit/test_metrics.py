"""Metrics that survive processes: the embedded store with a fake clock, and the Prometheus
collector read back through prometheus_client's own parser against real SQLite queues."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vaultq import errors
from vaultq.observe import (
    API_REQUESTS,
    HANDLER_INVOCATIONS,
    HANDLER_MESSAGES,
    InvocationOutcome,
    MetricsStore,
    Series,
    invocation_outcome,
)
from vaultq.observe.metrics import CONTENT_TYPE, VaultqCollector, new_registry, render
from vaultq.observe.sqlite_metrics import SqliteMetrics
from vaultq.queues.protocol import (
    Failure,
    OutgoingMessage,
    QueueAttributes,
    QueueBackend,
    RedrivePolicy,
)
from vaultq.queues.sqlite import SqliteQueues

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

# The start of a minute, so that offsets below say which bucket a record lands in.
START_SECONDS = 1_700_000_040.0
START_MS = int(START_SECONDS * 1000)
MINUTE_SECONDS = 60
DAY_SECONDS = 24 * 60 * 60
ERRORS = Series(name=HANDLER_INVOCATIONS, labels={"outcome": "error"})
API_5XX = Series(name=API_REQUESTS, labels={"status_class": "5xx"})

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class FakeClock:
    def __init__(self) -> None:
        self.now_seconds = START_SECONDS

    def __call__(self) -> float:
        return self.now_seconds

    def advance(self, seconds: float) -> None:
        self.now_seconds += seconds

    @property
    def now_ms(self) -> int:
        return int(self.now_seconds * 1000)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "vaultq.db"


@pytest.fixture
def store(db_path: Path, clock: FakeClock) -> Iterator[SqliteMetrics]:
    backend = SqliteMetrics(db_path, clock=clock)
    proof: MetricsStore = backend  # mypy proves the adapter meets the Protocol
    yield backend
    proof.close()


@pytest.fixture
def queues(db_path: Path, clock: FakeClock) -> Iterator[SqliteQueues]:
    backend = SqliteQueues(db_path, clock=clock)
    proof: QueueBackend = backend
    yield backend
    proof.close()


def record_error(store: MetricsStore, handler: str = "resize") -> None:
    store.record_invocation(
        handler, outcome="error", duration_seconds=1.0, messages=1, failed=1, dead_lettered=0
    )


def record_success(store: MetricsStore, handler: str = "resize", seconds: float = 0.5) -> None:
    store.record_invocation(
        handler, outcome="success", duration_seconds=seconds, messages=1, failed=0, dead_lettered=0
    )


def totals_by_series(store: MetricsStore) -> dict[tuple[str, frozenset[tuple[str, str]]], Any]:
    return {(t.name, frozenset(t.labels.items())): t for t in store.totals()}


def scrape(collector: VaultqCollector) -> Samples:
    text = render(new_registry(collector)).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


# -- the store -------------------------------------------------------------------------------


def test_records_of_one_minute_share_a_bucket_and_the_next_minute_starts_another(
    store: SqliteMetrics, clock: FakeClock, db_path: Path
) -> None:
    clock.advance(10)
    record_error(store)
    clock.advance(40)
    record_error(store)
    clock.advance(20)  # 70 s after the start: the next minute
    record_error(store)

    assert store.window(ERRORS, since_ms=START_MS) == 3
    assert store.window(ERRORS, since_ms=START_MS + 60_000) == 1
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT minute_ms, b.count FROM metrics_buckets AS b JOIN metrics_series AS s"
            " ON s.id = b.series_id WHERE s.name = ? ORDER BY minute_ms",
            (HANDLER_INVOCATIONS,),
        ).fetchall()
    conn.close()
    assert rows == [(START_MS, 2), (START_MS + 60_000, 1)]


def test_handler_errors_in_the_last_five_minutes_count_only_errors_since_then(
    store: SqliteMetrics, clock: FakeClock
) -> None:
    record_error(store)  # ten minutes before "now": outside the window
    clock.advance(8 * MINUTE_SECONDS)
    record_error(store)
    clock.advance(MINUTE_SECONDS)
    record_error(store)
    record_error(store, handler="thumbnail")
    record_success(store)
    clock.advance(MINUTE_SECONDS)

    five_minutes_ago = clock.now_ms - 5 * 60_000
    assert store.window(ERRORS, since_ms=five_minutes_ago) == 3
    resize_errors = Series(
        name=HANDLER_INVOCATIONS, labels={"outcome": "error", "handler": "resize"}
    )
    assert store.window(resize_errors, since_ms=five_minutes_ago) == 2
    assert store.window(ERRORS, since_ms=0) == 4


def test_a_window_starts_at_the_minute_of_since_ms(store: SqliteMetrics, clock: FakeClock) -> None:
    clock.advance(10)
    record_error(store)

    assert store.window(ERRORS, since_ms=START_MS + 30_000) == 1
    assert store.window(ERRORS, since_ms=START_MS + 60_000) == 0


def test_api_5xx_in_the_last_five_minutes_and_their_total_duration(store: SqliteMetrics) -> None:
    store.record_api_request("/jobs/{job_id}", status_code=200, duration_seconds=0.01)
    store.record_api_request("/jobs/{job_id}", status_code=503, duration_seconds=0.25)
    store.record_api_request("/jobs", status_code=500, duration_seconds=0.5)
    store.record_api_request("/jobs", status_code=404, duration_seconds=0.02)

    assert store.window(API_5XX, since_ms=START_MS) == 2
    assert store.window(
        Series(name=API_REQUESTS, labels={"status_class": "5xx"}, statistic="sum"),
        since_ms=START_MS,
    ) == pytest.approx(0.75)
    assert store.window(Series(name=API_REQUESTS), since_ms=START_MS) == 4


def test_a_batch_splits_its_messages_into_succeeded_failed_and_dead_lettered(
    store: SqliteMetrics,
) -> None:
    store.record_invocation(
        "resize", outcome="partial", duration_seconds=2.0, messages=10, failed=3, dead_lettered=1
    )

    totals = totals_by_series(store)
    messages = {
        result: totals[(HANDLER_MESSAGES, frozenset({("handler", "resize"), ("result", result)}))]
        for result in ("succeeded", "failed", "dead_lettered")
    }
    assert {result: total.count for result, total in messages.items()} == {
        "succeeded": 6,
        "failed": 3,
        "dead_lettered": 1,
    }
    invocation = totals[
        (HANDLER_INVOCATIONS, frozenset({("handler", "resize"), ("outcome", "partial")}))
    ]
    assert (invocation.count, invocation.sum) == (1, 2.0)


def test_totals_keep_growing_across_reopens_and_sweeps_while_old_buckets_go(
    db_path: Path, clock: FakeClock
) -> None:
    first = SqliteMetrics(db_path, clock=clock)
    record_success(first, seconds=1.0)
    record_success(first, seconds=2.0)
    first.close()
    clock.advance(16 * DAY_SECONDS)  # past the 15-day retention of buckets

    second = SqliteMetrics(db_path, clock=clock)
    record_success(second, seconds=4.0)  # the first write of a process sweeps

    [total] = [t for t in second.totals() if t.name == HANDLER_INVOCATIONS]
    assert (total.count, total.sum) == (3, 7.0)
    success = Series(name=HANDLER_INVOCATIONS, labels={"outcome": "success"})
    assert second.window(success, since_ms=0) == 1
    second.close()


def test_sweep_expired_deletes_only_buckets_past_the_retention(
    db_path: Path, clock: FakeClock
) -> None:
    store = SqliteMetrics(db_path, clock=clock, retention_seconds=DAY_SECONDS)
    record_success(store)
    clock.advance(DAY_SECONDS - MINUTE_SECONDS)
    record_success(store)  # a minute before the first bucket expires
    clock.advance(2 * MINUTE_SECONDS)

    assert store.sweep_expired() == 2  # the first record's invocation and messages buckets
    assert store.sweep_expired() == 0
    assert store.window(Series(name=HANDLER_INVOCATIONS), since_ms=0) == 1
    store.close()


def test_sweep_expired_removes_a_backlog_larger_than_one_batch(
    db_path: Path, clock: FakeClock
) -> None:
    store = SqliteMetrics(db_path, clock=clock, retention_seconds=DAY_SECONDS)
    for _ in range(1001):  # one bucket a minute, past one sweep batch of 1000
        store.record_api_request("/jobs", status_code=200, duration_seconds=0.01)
        clock.advance(MINUTE_SECONDS)
    clock.advance(DAY_SECONDS)

    assert store.sweep_expired() == 1001
    assert store.window(Series(name=API_REQUESTS), since_ms=0) == 0
    store.close()


@pytest.mark.parametrize(
    "record",
    [
        lambda s: s.record_invocation(
            "resize", outcome="crashed", duration_seconds=1, messages=1, failed=0, dead_lettered=0
        ),
        lambda s: s.record_invocation(
            "resize", outcome="partial", duration_seconds=1, messages=2, failed=2, dead_lettered=1
        ),
        lambda s: s.record_invocation(
            "resize", outcome="success", duration_seconds=-1, messages=1, failed=0, dead_lettered=0
        ),
        lambda s: s.record_invocation(
            "resize",
            outcome="success",
            duration_seconds=float("nan"),
            messages=1,
            failed=0,
            dead_lettered=0,
        ),
        lambda s: s.record_invocation(
            "my handler",
            outcome="success",
            duration_seconds=1,
            messages=1,
            failed=0,
            dead_lettered=0,
        ),
        lambda s: s.record_api_request("/jobs?token=s3cret", status_code=200, duration_seconds=0.1),
        lambda s: s.record_api_request("/jobs/a%20b", status_code=200, duration_seconds=0.1),
        lambda s: s.record_api_request("/jobs", status_code=99, duration_seconds=0.1),
        lambda s: s.record_api_request("/jobs", status_code=True, duration_seconds=0.1),
        lambda s: s.record_embedding_batch("my model", fallback=False, messages=1),
        lambda s: s.record_embedding_batch("all-MiniLM-L6-v2", fallback=True, messages=-1),
    ],
    ids=[
        "unknown-outcome",
        "more-failures-than-messages",
        "negative-duration",
        "nan-duration",
        "handler-name-with-space",
        "route-with-query-string",
        "route-with-encoded-value",
        "status-below-100",
        "status-bool",
        "model-with-space",
        "negative-embedded-messages",
    ],
)
def test_a_malformed_record_is_refused_and_records_nothing(
    store: SqliteMetrics, record: Callable[[SqliteMetrics], None]
) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        record(store)

    assert store.totals() == []


def test_a_window_of_an_unknown_metric_is_refused() -> None:
    with pytest.raises(errors.InvalidParameterValue):
        Series(name="handler_errors")


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path, db_path: Path) -> None:
    per_process = 300
    go = tmp_path / "go"
    child = textwrap.dedent("""
        import pathlib, sys, time
        from vaultq.observe.sqlite_metrics import SqliteMetrics
        store = SqliteMetrics(sys.argv[1])
        go, count = pathlib.Path(sys.argv[2]), int(sys.argv[3])
        print("ready", flush=True)
        while not go.exists():
            time.sleep(0.001)
        for _ in range(count):
            store.record_invocation(
                "resize", outcome="partial", duration_seconds=0.5,
                messages=3, failed=1, dead_lettered=0,
            )
            store.record_api_request("/jobs/{job_id}", status_code=503, duration_seconds=0.25)
        store.close()
    """)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", child, str(db_path), str(go), str(per_process)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for writer in writers:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
    go.touch()  # both have opened the store: now they write at the same time
    assert [writer.wait(timeout=60) for writer in writers] == [0, 0]
    for writer in writers:
        assert writer.stdout is not None
        writer.stdout.close()

    reader = SqliteMetrics(db_path)
    totals = totals_by_series(reader)
    invocations = totals[
        (HANDLER_INVOCATIONS, frozenset({("handler", "resize"), ("outcome", "partial")}))
    ]
    succeeded = totals[
        (HANDLER_MESSAGES, frozenset({("handler", "resize"), ("result", "succeeded")}))
    ]
    assert (invocations.count, invocations.sum) == (600, 300.0)
    assert succeeded.count == 1200
    assert reader.window(API_5XX, since_ms=0) == 600
    reader.close()


def test_threads_of_one_process_sharing_a_store_lose_nothing(store: SqliteMetrics) -> None:
    def record_many() -> None:
        for _ in range(100):
            record_error(store)

    threads = [threading.Thread(target=record_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert store.window(ERRORS, since_ms=0) == 800


def test_an_unusable_database_path_raises_backend_unavailable(tmp_path: Path) -> None:
    with pytest.raises(errors.BackendUnavailable):
        SqliteMetrics(tmp_path)  # a directory, not a database file


@pytest.mark.parametrize(
    ("error_reason", "messages", "failed", "dead_lettered", "expected"),
    [
        (None, 10, 0, 0, InvocationOutcome.SUCCESS),
        (None, 10, 2, 1, InvocationOutcome.PARTIAL),
        (None, 10, 9, 1, InvocationOutcome.ERROR),
        ("HANDLER_ERROR", 10, 10, 0, InvocationOutcome.ERROR),
        ("TIMEOUT", 10, 10, 0, InvocationOutcome.TIMEOUT),
    ],
)
def test_the_outcome_of_a_settled_batch(
    error_reason: str | None,
    messages: int,
    failed: int,
    dead_lettered: int,
    expected: InvocationOutcome,
) -> None:
    outcome = invocation_outcome(
        error_reason=error_reason, messages=messages, failed=failed, dead_lettered=dead_lettered
    )

    assert outcome is expected


# -- the Prometheus collector ---------------------------------------------------------------


def orders_with_a_dead_letter(queues: SqliteQueues, clock: FakeClock) -> None:
    """orders: 1 visible, 1 in flight, 1 delayed, oldest sent 60 s ago; orders-dlq: 1
    message, moved 30 s ago."""
    queues.create_queue("orders-dlq")
    policy = RedrivePolicy(dead_letter_queue="orders-dlq", max_receive_count=3)
    queues.create_queue("orders", QueueAttributes(redrive_policy=policy))
    for body in ("a", "b", "c"):
        queues.send("orders", OutgoingMessage(body=body))
    clock.advance(30)
    queues.send("orders", OutgoingMessage(body="d", delay_seconds=600))
    queues.receive("orders", wait_seconds=0, visibility_timeout_seconds=300)
    [poison] = queues.receive("orders", wait_seconds=0)
    queues.dead_letter(
        "orders", poison.receipt_handle, failure=Failure(reason="NON_RETRYABLE", error="bad")
    )
    clock.advance(30)


def test_queue_gauges_report_each_queue_by_state_and_its_oldest_age(
    queues: SqliteQueues, store: SqliteMetrics, clock: FakeClock
) -> None:
    orders_with_a_dead_letter(queues, clock)

    samples = scrape(VaultqCollector(queues=queues, metrics=store))

    reported = {
        state: value(samples, "vaultq_queue_messages", queue="orders", state=state)
        for state in ("visible", "in_flight", "delayed")
    }
    assert reported == {"visible": 1, "in_flight": 1, "delayed": 1}
    stats = queues.stats("orders")
    assert reported == {"visible": stats.visible, "in_flight": stats.in_flight, "delayed": 1}
    assert value(samples, "vaultq_queue_oldest_message_age_seconds", queue="orders") == 60
    assert value(samples, "vaultq_queue_oldest_message_age_seconds", queue="orders-dlq") == 30


def test_only_dead_letter_queues_report_dead_lettered_messages(
    queues: SqliteQueues, store: SqliteMetrics, clock: FakeClock
) -> None:
    orders_with_a_dead_letter(queues, clock)
    queues.create_queue("emails")

    samples = scrape(VaultqCollector(queues=queues, metrics=store))

    dead_lettered = {
        dict(labels)["queue"]: v
        for (name, labels), v in samples.items()
        if name == "vaultq_dlq_messages"
    }
    assert dead_lettered == {"orders-dlq": 1}


def test_a_dead_letter_queue_is_reported_even_when_only_its_source_is_listed(
    queues: SqliteQueues, store: SqliteMetrics, clock: FakeClock
) -> None:
    orders_with_a_dead_letter(queues, clock)

    samples = scrape(VaultqCollector(queues=queues, metrics=store, queue_names=lambda: ["orders"]))

    assert value(samples, "vaultq_dlq_messages", queue="orders-dlq") == 1


def test_a_queue_deleted_since_it_was_listed_is_left_out_without_a_scrape_error(
    queues: SqliteQueues, store: SqliteMetrics
) -> None:
    queues.create_queue("orders")

    collector = VaultqCollector(
        queues=queues, metrics=store, queue_names=lambda: ["gone", "orders"]
    )
    samples = scrape(collector)

    assert value(samples, "vaultq_queue_messages", queue="orders", state="visible") == 0
    assert (
        "vaultq_queue_messages",
        frozenset({("queue", "gone"), ("state", "visible")}),
    ) not in samples
    assert value(samples, "vaultq_scrape_error", source="queues") == 0


def test_jobs_are_reported_for_every_status_from_the_callers_count(
    queues: SqliteQueues, store: SqliteMetrics
) -> None:
    counts = {"queued": 2, "succeeded": 5}

    samples = scrape(VaultqCollector(queues=queues, metrics=store, job_counts=lambda: counts))

    jobs = {
        dict(labels)["status"]: v for (name, labels), v in samples.items() if name == "vaultq_jobs"
    }
    assert jobs == {
        "queued": 2,
        "processing": 0,
        "succeeded": 5,
        "failed": 0,
        "dead_lettered": 0,
        "cancelled": 0,
    }


def test_without_a_job_count_there_is_no_jobs_family(
    queues: SqliteQueues, store: SqliteMetrics
) -> None:
    samples = scrape(VaultqCollector(queues=queues, metrics=store))

    assert "vaultq_jobs" not in names(samples)


def test_handler_and_api_counters_show_what_another_process_recorded(
    queues: SqliteQueues, db_path: Path, clock: FakeClock
) -> None:
    worker = SqliteMetrics(db_path, clock=clock)
    worker.record_invocation(
        "resize", outcome="success", duration_seconds=1.5, messages=10, failed=0, dead_lettered=0
    )
    worker.record_invocation(
        "resize", outcome="partial", duration_seconds=2.5, messages=10, failed=3, dead_lettered=1
    )
    worker.record_api_request("/jobs/{job_id}", status_code=200, duration_seconds=0.25)
    worker.record_api_request("/jobs/{job_id}", status_code=503, duration_seconds=0.5)
    worker.close()
    api_server = SqliteMetrics(db_path, clock=clock)

    samples = scrape(VaultqCollector(queues=queues, metrics=api_server))

    invocations = "vaultq_handler_invocations_total"
    assert value(samples, invocations, handler="resize", outcome="success") == 1
    assert value(samples, invocations, handler="resize", outcome="partial") == 1
    assert value(samples, invocations, handler="resize", outcome="timeout") == 0
    messages = "vaultq_handler_messages_total"
    assert value(samples, messages, handler="resize", result="succeeded") == 16
    assert value(samples, messages, handler="resize", result="failed") == 3
    assert value(samples, messages, handler="resize", result="dead_lettered") == 1
    assert value(samples, "vaultq_handler_duration_seconds_count", handler="resize") == 2
    assert value(samples, "vaultq_handler_duration_seconds_sum", handler="resize") == 4.0
    requests = "vaultq_api_requests_total"
    assert value(samples, requests, route="/jobs/{job_id}", status_class="2xx") == 1
    assert value(samples, requests, route="/jobs/{job_id}", status_class="5xx") == 1
    assert value(samples, "vaultq_api_request_duration_seconds_count", route="/jobs/{job_id}") == 2
    assert value(samples, "vaultq_api_request_duration_seconds_sum", route="/jobs/{job_id}") == 0.75
    api_server.close()


def test_embedded_batches_are_exported_by_model_with_fallbacks_apart(
    queues: SqliteQueues, db_path: Path, clock: FakeClock
) -> None:
    worker = SqliteMetrics(db_path, clock=clock)
    worker.record_embedding_batch("text-embedding-3-small", fallback=False, messages=64)
    worker.record_embedding_batch("all-MiniLM-L6-v2", fallback=True, messages=64)
    worker.record_embedding_batch("all-MiniLM-L6-v2", fallback=True, messages=10)
    worker.close()
    api_server = SqliteMetrics(db_path, clock=clock)

    samples = scrape(VaultqCollector(queues=queues, metrics=api_server))

    batches, messages = "vaultq_embedding_batches_total", "vaultq_embedding_messages_total"
    assert value(samples, batches, model="text-embedding-3-small", fallback="false") == 1
    assert value(samples, batches, model="all-MiniLM-L6-v2", fallback="true") == 2
    assert value(samples, messages, model="all-MiniLM-L6-v2", fallback="true") == 74
    api_server.close()


def test_a_failing_backend_leaves_out_only_its_own_families(
    db_path: Path, store: SqliteMetrics, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    broken = SqliteQueues(db_path, clock=clock)
    broken.create_queue("orders")
    broken.close()  # every read now fails with BackendUnavailable
    record_success(store)
    collector = VaultqCollector(queues=broken, metrics=store)

    with caplog.at_level(logging.WARNING, logger="vaultq.observe.metrics"):
        scrape(collector)
        samples = scrape(collector)

    assert value(samples, "vaultq_scrape_error", source="queues") == 1
    assert value(samples, "vaultq_scrape_error", source="metrics") == 0
    assert not names(samples) & {"vaultq_queue_messages", "vaultq_dlq_messages"}
    assert (
        value(samples, "vaultq_handler_invocations_total", handler="resize", outcome="success") == 1
    )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per outage, not once per scrape
    assert "BackendUnavailable" in warnings[0].getMessage()


def test_a_job_count_that_fails_and_recovers_is_flagged_only_while_it_fails(
    queues: SqliteQueues, store: SqliteMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    answers: list[Mapping[str, int] | None] = [None, {"queued": 1}]

    def job_counts() -> Mapping[str, int]:
        answer = answers.pop(0)
        if answer is None:
            raise errors.BackendUnavailable("job table down")
        return answer

    collector = VaultqCollector(queues=queues, metrics=store, job_counts=job_counts)
    with caplog.at_level(logging.INFO, logger="vaultq.observe.metrics"):
        failing = scrape(collector)
        recovered = scrape(collector)

    assert value(failing, "vaultq_scrape_error", source="jobs") == 1
    assert "vaultq_jobs" not in names(failing)
    assert value(failing, "vaultq_scrape_error", source="queues") == 0
    assert value(recovered, "vaultq_scrape_error", source="jobs") == 0
    assert value(recovered, "vaultq_jobs", status="queued") == 1
    assert "job table down" not in caplog.text  # the code is logged, never the error's text


def test_each_collector_has_its_own_registry_without_process_metrics(
    queues: SqliteQueues, store: SqliteMetrics
) -> None:
    queues.create_queue("orders")

    first = render(new_registry(VaultqCollector(queues=queues, metrics=store))).decode()
    second = render(new_registry(VaultqCollector(queues=queues, metrics=store))).decode()

    assert first == second
    assert 'vaultq_queue_messages{queue="orders",state="visible"} 0.0' in first
    assert "process_" not in first
    assert "python_gc" not in first
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_api_requests_reach_other_processes_within_about_a_second(
    db_path: Path, clock: FakeClock
) -> None:
    api_server = SqliteMetrics(db_path, clock=clock)
    scraper = SqliteMetrics(db_path, clock=clock)
    for status in (200, 200, 503):
        api_server.record_api_request("/jobs", status_code=status, duration_seconds=0.25)
    clock.advance(MINUTE_SECONDS)  # the requests keep the minute they were answered in
    api_server.record_api_request("/jobs", status_code=503, duration_seconds=0.25)

    deadline = time.monotonic() + 5
    while scraper.window(Series(name=API_REQUESTS), since_ms=0) < 4:
        assert time.monotonic() < deadline, "the requests were never written"
        time.sleep(0.05)

    assert scraper.window(API_5XX, since_ms=START_MS) == 2
    assert scraper.window(API_5XX, since_ms=START_MS + MINUTE_SECONDS * 1000) == 1
    [total] = [t for t in scraper.totals() if t.labels.get("status_class") == "2xx"]
    assert (total.count, total.sum) == (2, 0.5)
    api_server.close()
    scraper.close()


def test_requests_counted_by_many_threads_are_all_written_once(
    db_path: Path, clock: FakeClock
) -> None:
    api_server = SqliteMetrics(db_path, clock=clock)

    def answer() -> None:
        for _ in range(500):
            api_server.record_api_request("/jobs", status_code=202, duration_seconds=0.001)

    threads = [threading.Thread(target=answer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    api_server.close()

    reopened = SqliteMetrics(db_path, clock=clock)
    assert reopened.window(Series(name=API_REQUESTS), since_ms=0) == 4000
    reopened.close()
