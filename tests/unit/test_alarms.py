"""Alarm declarations and the pure evaluation rule: no clock, no store."""

from __future__ import annotations

import pytest

from vaultq import errors
from vaultq.app import App, DeadLetterQueue
from vaultq.observe.alarms import (
    Alarm,
    AlarmState,
    AlarmTransition,
    Webhook,
    api_errors,
    dlq_depth,
    evaluate,
    handler_errors,
    oldest_message_age_seconds,
    should_notify,
)

OK, ALARM, NO_DATA = AlarmState.OK, AlarmState.ALARM, AlarmState.INSUFFICIENT_DATA


def alarm(**options: object) -> Alarm:
    defaults: dict[str, object] = {"name": "dead-letters", "metric": dlq_depth("orders")}
    return Alarm(**{**defaults, "threshold": 1, **options})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("comparison", "value", "expected"),
    [
        (">=", 1, ALARM),
        (">=", 0, OK),
        (">", 1, OK),
        (">", 2, ALARM),
        ("<", 0, ALARM),
        ("<", 1, OK),
        ("<=", 1, ALARM),
        ("<=", 2, OK),
    ],
)
def test_the_comparison_with_the_threshold_decides_the_state(
    comparison: str, value: float, expected: AlarmState
) -> None:
    found = evaluate(alarm(comparison=comparison), value, current=None)

    assert found.state is expected
    assert found.value == value


def test_the_reason_says_the_metric_the_value_and_the_threshold() -> None:
    breached = evaluate(alarm(), 3, current=OK)
    calm = evaluate(alarm(), 0, current=ALARM)

    assert breached.reason == "dlq_depth(orders) was 3: >= the threshold 1"
    assert calm.reason == "dlq_depth(orders) was 0: not >= the threshold 1"


def test_a_counted_metric_names_its_period_in_the_reason() -> None:
    errors_alarm = alarm(metric=handler_errors(), comparison=">", threshold=10, period_seconds=300)

    found = evaluate(errors_alarm, 12.0, current=OK)

    assert found.state is ALARM
    assert found.reason == "handler_errors(all) over 300 s was 12: > the threshold 10"


@pytest.mark.parametrize(
    ("missing_data", "current", "expected"),
    [
        ("missing", OK, NO_DATA),
        ("breaching", OK, ALARM),
        ("not_breaching", ALARM, OK),
        ("ignore", ALARM, ALARM),
        ("ignore", None, NO_DATA),
    ],
)
def test_no_data_is_treated_as_declared(
    missing_data: str, current: AlarmState | None, expected: AlarmState
) -> None:
    found = evaluate(alarm(missing_data=missing_data), None, current=current)

    assert found.state is expected
    assert found.value is None
    assert "no data for dlq_depth(orders)" in found.reason


def test_metrics_read_as_the_closed_set_names_them() -> None:
    assert str(dlq_depth("orders")) == "dlq_depth(orders)"
    assert str(oldest_message_age_seconds("orders")) == "oldest_message_age_seconds(orders)"
    assert str(handler_errors("resize")) == "handler_errors(resize)"
    assert str(api_errors()) == "api_errors()"
    assert handler_errors().counted and api_errors().counted
    assert not dlq_depth("orders").counted


@pytest.mark.parametrize(
    "options",
    [
        {"name": "has space"},
        {"threshold": float("nan")},
        {"period_seconds": 90},
        {"period_seconds": 0},
        {"comparison": "=="},
        {"missing_data": "zero"},
    ],
)
def test_an_invalid_alarm_is_refused(options: dict[str, object]) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        alarm(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"url": "ftp://example.com/hook"},
        {"url": "file:///etc/passwd"},
        {"url": "http:///no-host"},
        {"url": "https://example.com", "attempts": 0},
        {"url": "https://example.com", "timeout_seconds": 0},
        {"url": "https://example.com", "on": frozenset()},
    ],
)
def test_an_invalid_webhook_is_refused(options: dict[str, object]) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        Webhook(**options)  # type: ignore[arg-type]


def test_a_webhook_url_never_shows_in_its_repr() -> None:
    hook = Webhook(url="https://hooks.example.com/T000/B000/secret-token")

    assert "secret-token" not in repr(hook)
    assert hook.host == "hooks.example.com"


def transition(old: AlarmState | None, new: AlarmState) -> AlarmTransition:
    return AlarmTransition(alarm="a", at_ms=0, old_state=old, new_state=new, reason="r", value=1)


def test_webhooks_hear_of_changes_into_their_states_and_a_first_alarm_only() -> None:
    hook = Webhook(url="https://example.com/hook")

    assert should_notify(hook, transition(OK, ALARM))
    assert should_notify(hook, transition(ALARM, OK))
    assert should_notify(hook, transition(None, ALARM))
    assert not should_notify(hook, transition(None, OK))
    assert not should_notify(hook, transition(OK, NO_DATA))
    assert should_notify(
        Webhook(url="https://example.com", on=frozenset({NO_DATA})), transition(OK, NO_DATA)
    )


# -- App.alarm ----------------------------------------------------------------------------------


@pytest.fixture
def app() -> App:
    app = App("shop")
    app.queue("orders", dead_letter=DeadLetterQueue())
    app.queue("audit")

    @app.handler(queue="orders")
    def resize(event: object, context: object) -> None:
        pass

    return app


def test_an_app_declares_alarms_over_its_queues_and_handlers(app: App) -> None:
    app.alarm("orders-dlq", metric=dlq_depth("orders"), threshold=1)
    app.alarm("dlq-age", metric=oldest_message_age_seconds("orders-dlq"), threshold=3600)
    app.alarm(
        "errors", metric=handler_errors("resize"), comparison=">", threshold=10, period_seconds=300
    )
    app.alarm("api", metric=api_errors(), comparison=">", threshold=5, period_seconds=300)

    assert list(app.alarms) == ["orders-dlq", "dlq-age", "errors", "api"]
    assert app.alarms["errors"].comparison.value == ">"


@pytest.mark.parametrize(
    "metric",
    [
        dlq_depth("audit"),  # declared, but without a dead-letter queue
        dlq_depth("nowhere"),
        oldest_message_age_seconds("nowhere"),
        handler_errors("nobody"),
    ],
)
def test_an_alarm_on_something_undeclared_is_refused(app: App, metric: object) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        app.alarm("broken", metric=metric, threshold=1)  # type: ignore[arg-type]


def test_an_alarm_name_is_declared_once(app: App) -> None:
    app.alarm("orders-dlq", metric=dlq_depth("orders"), threshold=1)

    with pytest.raises(errors.InvalidParameterValue, match="twice"):
        app.alarm("orders-dlq", metric=dlq_depth("orders"), threshold=2)


def test_the_demo_app_alarms_on_each_dead_letter_queue() -> None:
    from vaultq.demo import app as demo  # noqa: PLC0415

    watched = {(str(a.metric), a.comparison.value, a.threshold) for a in demo.alarms.values()}
    assert watched == {("dlq_depth(demo-jobs)", ">=", 1), ("dlq_depth(demo-uploads)", ">=", 1)}
