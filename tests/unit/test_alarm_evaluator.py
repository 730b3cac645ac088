"""The evaluator over real embedded stores: metrics are read, changes recorded and webhooks
called on a real local HTTP server."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import pytest

from tests.webhook_server import WebhookServer, serving
from vaultq.observe.alarm_evaluator import AlarmEvaluator, deliver
from vaultq.observe.alarms import (
    Alarm,
    AlarmState,
    Comparison,
    Webhook,
    api_errors,
    dlq_depth,
    handler_errors,
    oldest_message_age_seconds,
)
from vaultq.observe.sqlite_alarms import SqliteAlarms
from vaultq.observe.sqlite_metrics import SqliteMetrics
from vaultq.queues.protocol import OutgoingMessage, QueueAttributes, RedrivePolicy
from vaultq.queues.sqlite import SqliteQueues

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

OK, ALARM, NO_DATA = AlarmState.OK, AlarmState.ALARM, AlarmState.INSUFFICIENT_DATA
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queues(tmp_path: Path) -> Iterator[SqliteQueues]:
    opened = SqliteQueues(tmp_path / "vaultq.db")
    opened.create_queue("orders-dlq", QueueAttributes())
    redrive = RedrivePolicy(dead_letter_queue="orders-dlq", max_receive_count=1)
    opened.create_queue("orders", QueueAttributes(redrive_policy=redrive))
    yield opened
    opened.close()


@pytest.fixture
def metrics(tmp_path: Path, clock: Clock) -> Iterator[SqliteMetrics]:
    opened = SqliteMetrics(tmp_path / "vaultq.db", clock=clock)
    yield opened
    opened.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteAlarms]:
    opened = SqliteAlarms(tmp_path / "vaultq.db")
    yield opened
    opened.close()


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    yield from serving([500, 200])


@pytest.fixture
def evaluator_for(
    queues: SqliteQueues, metrics: SqliteMetrics, store: SqliteAlarms, clock: Clock
) -> Iterator[Callable[..., AlarmEvaluator]]:
    made: list[AlarmEvaluator] = []

    def make(*alarms: Alarm, **options: object) -> AlarmEvaluator:
        evaluator = AlarmEvaluator(
            alarms,
            app_name="shop",
            store=store,
            queues=queues,
            metrics=metrics,
            clock=clock,
            **options,  # type: ignore[arg-type]
        )
        made.append(evaluator)
        return evaluator

    yield make
    for evaluator in made:
        evaluator.stop()


def dead_letter_one(queues: SqliteQueues) -> None:
    queues.send("orders", OutgoingMessage(body="poison"))
    queues.receive("orders", visibility_timeout_seconds=0)
    # The second receive finds it past max_receive_count and moves it to the DLQ.
    assert queues.receive("orders") == []
    assert queues.stats("orders-dlq").visible == 1


def quick_hook(url: str, **options: object) -> Webhook:
    return Webhook(url=url, backoff_seconds=0.01, timeout_seconds=5, **options)  # type: ignore[arg-type]


def test_a_dead_lettered_message_raises_the_alarm_records_it_and_calls_the_webhook(
    queues: SqliteQueues,
    store: SqliteAlarms,
    webhook: WebhookServer,
    evaluator_for: Callable[..., AlarmEvaluator],
) -> None:
    alarm = Alarm(
        name="orders-dead-letters",
        metric=dlq_depth("orders"),
        threshold=1,
        description="orders failed",
        webhooks=(quick_hook(webhook.url),),
    )
    evaluator = evaluator_for(alarm)
    [first] = evaluator.evaluate_once()
    assert (first.old_state, first.new_state) == (None, OK)

    dead_letter_one(queues)
    [raised] = evaluator.evaluate_once()
    evaluator.stop()  # waits for the webhook's retries

    assert (raised.old_state, raised.new_state, raised.value) == (OK, ALARM, 1.0)
    assert store.latest()["orders-dead-letters"] == raised
    assert [t.new_state for t in store.history("orders-dead-letters")] == [ALARM, OK]
    # The first POST got a 500, the retry a 200; the first OK was no news.
    assert len(webhook.received) == 2
    assert webhook.received[0] == webhook.received[1]
    assert webhook.received[1] == {
        "app": "shop",
        "alarm": "orders-dead-letters",
        "description": "orders failed",
        "metric": "dlq_depth(orders)",
        "comparison": ">=",
        "threshold": 1,
        "old_state": "OK",
        "new_state": "ALARM",
        "reason": "dlq_depth(orders) was 1: >= the threshold 1",
        "value": 1.0,
        "at": "2023-11-14T22:13:20.000+00:00",
    }
    assert webhook.headers[0]["Content-Type"] == "application/json"


def test_an_unchanged_state_records_and_notifies_nothing(
    queues: SqliteQueues,
    store: SqliteAlarms,
    webhook: WebhookServer,
    evaluator_for: Callable[..., AlarmEvaluator],
) -> None:
    dead_letter_one(queues)
    hook = quick_hook(webhook.url)
    evaluator = evaluator_for(
        Alarm(name="a", metric=dlq_depth("orders"), threshold=1), webhooks=[hook]
    )

    assert [t.new_state for t in evaluator.evaluate_once()] == [ALARM]
    assert evaluator.evaluate_once() == []
    evaluator.stop()

    assert len(store.history("a")) == 1
    assert [d["new_state"] for d in webhook.received] == ["ALARM", "ALARM"]  # 500, then 200


def test_a_restarted_evaluator_goes_on_from_the_stored_state(
    tmp_path: Path,
    queues: SqliteQueues,
    webhook: WebhookServer,
    evaluator_for: Callable[..., AlarmEvaluator],
) -> None:
    alarm = Alarm(name="dlq", metric=dlq_depth("orders"), threshold=1)
    dead_letter_one(queues)
    evaluator_for(alarm).evaluate_once()

    reopened = SqliteAlarms(tmp_path / "vaultq.db")
    metrics = SqliteMetrics(tmp_path / "vaultq.db")
    restarted = AlarmEvaluator(
        [alarm],
        app_name="shop",
        store=reopened,
        queues=queues,
        metrics=metrics,
        webhooks=[quick_hook(webhook.url, on=frozenset(AlarmState))],
    )
    try:
        assert restarted.evaluate_once() == []
        assert [t.new_state for t in reopened.history("dlq")] == [ALARM]
    finally:
        restarted.stop()
        reopened.close()
        metrics.close()
    assert webhook.received == []


def test_handler_errors_are_counted_over_their_window(
    metrics: SqliteMetrics, clock: Clock, evaluator_for: Callable[..., AlarmEvaluator]
) -> None:
    alarm = Alarm(
        name="errors",
        metric=handler_errors("resize"),
        comparison=Comparison.GREATER,
        threshold=10,
        period_seconds=300,
    )
    evaluator = evaluator_for(alarm)
    for outcome in ["error"] * 10 + ["timeout"] + ["partial"] * 5:
        metrics.record_invocation(
            "resize", outcome=outcome, duration_seconds=0.1, messages=1, failed=1, dead_lettered=0
        )
    metrics.record_invocation(
        "other", outcome="error", duration_seconds=0.1, messages=1, failed=1, dead_lettered=0
    )

    [raised] = evaluator.evaluate_once()
    clock.now += 360  # the errors' minute is now out of the five-minute window
    [cleared] = evaluator.evaluate_once()

    assert (raised.new_state, raised.value) == (ALARM, 11.0)
    assert (cleared.new_state, cleared.value) == (OK, 0.0)


def test_every_handlers_errors_count_when_no_handler_is_named(
    metrics: SqliteMetrics, evaluator_for: Callable[..., AlarmEvaluator]
) -> None:
    for handler in ("resize", "other"):
        metrics.record_invocation(
            handler, outcome="error", duration_seconds=0.1, messages=1, failed=1, dead_lettered=0
        )

    [found] = evaluator_for(
        Alarm(name="errors", metric=handler_errors(), threshold=2)
    ).evaluate_once()

    assert (found.new_state, found.value) == (ALARM, 2.0)


def test_api_errors_count_5xx_answers_only(
    metrics: SqliteMetrics, evaluator_for: Callable[..., AlarmEvaluator]
) -> None:
    for status in (500, 503, 404, 401, 200):
        metrics.record_api_request("/jobs", status_code=status, duration_seconds=0.01)

    [found] = evaluator_for(
        Alarm(name="api", metric=api_errors(), comparison=Comparison.GREATER, threshold=1)
    ).evaluate_once()

    assert (found.new_state, found.value) == (ALARM, 2.0)


def test_the_oldest_message_age_is_read_from_the_queue(
    queues: SqliteQueues, evaluator_for: Callable[..., AlarmEvaluator]
) -> None:
    queues.send("orders", OutgoingMessage(body="waiting"))
    alarm = Alarm(
        name="age",
        metric=oldest_message_age_seconds("orders"),
        comparison=Comparison.GREATER,
        threshold=3600,
    )

    [found] = evaluator_for(alarm).evaluate_once()

    assert found.new_state is OK
    assert found.value is not None and 0 <= found.value < 60


def test_a_queue_that_does_not_exist_is_missing_data(
    queues: SqliteQueues, evaluator_for: Callable[..., AlarmEvaluator]
) -> None:
    evaluator = evaluator_for(
        Alarm(name="gone", metric=dlq_depth("orders"), threshold=1),
        Alarm(name="never", metric=oldest_message_age_seconds("nowhere"), threshold=1),
    )
    evaluator.evaluate_once()
    queues.delete_queue("orders")

    states = {t.alarm: (t.new_state, t.value) for t in evaluator.evaluate_once()}

    assert states == {"gone": (NO_DATA, None)}  # "never" was INSUFFICIENT_DATA already


def test_the_evaluator_thread_drives_a_transition(
    queues: SqliteQueues, store: SqliteAlarms, evaluator_for: Callable[..., AlarmEvaluator]
) -> None:
    evaluator = evaluator_for(
        Alarm(name="dlq", metric=dlq_depth("orders"), threshold=1), interval_seconds=0.05
    )
    evaluator.start()
    wait_until(lambda: "dlq" in store.latest())

    dead_letter_one(queues)

    wait_until(lambda: store.latest()["dlq"].new_state is ALARM)
    evaluator.stop()


def test_a_webhook_that_keeps_failing_is_tried_attempts_times_then_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with WebhookServer([503]) as failing:
        delivered = deliver(quick_hook(failing.url, attempts=3), b"{}")

    assert not delivered
    assert len(failing.received) == 3
    assert "127.0.0.1 failed after 3 attempt(s): HTTP 503" in caplog.text
    assert "secret-in-url" not in caplog.text


def test_a_webhook_refusing_the_document_is_not_retried() -> None:
    with WebhookServer([400]) as refusing:
        assert not deliver(quick_hook(refusing.url), b"{}")

    assert len(refusing.received) == 1


def test_an_unreachable_webhook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with WebhookServer() as gone:
        url = gone.url  # the port is closed once the server stops
    caplog.set_level(logging.WARNING)

    assert not deliver(quick_hook(url, attempts=2), b"{}")
    assert "failed after 2 attempt(s): ConnectionRefusedError" in caplog.text
    assert "secret-in-url" not in caplog.text


def test_a_change_is_logged_without_the_webhook_url(
    queues: SqliteQueues,
    webhook: WebhookServer,
    evaluator_for: Callable[..., AlarmEvaluator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="vaultq.observe.alarm_evaluator")
    dead_letter_one(queues)
    evaluator = evaluator_for(
        Alarm(name="dlq", metric=dlq_depth("orders"), threshold=1),
        webhooks=[quick_hook(webhook.url)],
    )

    evaluator.evaluate_once()
    evaluator.stop()

    [record] = [r for r in caplog.records if r.name == "vaultq.observe.alarm_evaluator"]
    assert record.levelno == logging.WARNING
    assert (
        record.getMessage() == "alarm dlq: - -> ALARM: dlq_depth(orders) was 1: >= the threshold 1"
    )
    assert "secret-in-url" not in caplog.text


def wait_until(probe: Callable[[], object], *, timeout_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not probe():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
