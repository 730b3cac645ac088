"""Pure runtime policy: back-off, deadline-aware batches, App declarations, redaction."""

from __future__ import annotations

from typing import Any

import pytest

from vaultq import errors
from vaultq.app import App, DeadLetterQueue, RetryPolicy
from vaultq.events import LambdaContext
from vaultq.privacy.redact import redact
from vaultq.runtime.backoff import retry_delay_seconds
from vaultq.runtime.deadline import within_deadline


def test_backoff_doubles_per_receive_up_to_the_cap() -> None:
    policy = RetryPolicy(base_seconds=2, cap_seconds=30, jitter=False)

    delays = [retry_delay_seconds(policy, count, random=lambda: 1.0) for count in range(1, 7)]

    assert delays == [2, 4, 8, 16, 30, 30]


def test_full_jitter_stays_between_zero_and_the_exponential_value() -> None:
    policy = RetryPolicy(base_seconds=4, cap_seconds=900)

    assert retry_delay_seconds(policy, 3, random=lambda: 0.0) == 0
    assert retry_delay_seconds(policy, 3, random=lambda: 0.5) == 8
    assert retry_delay_seconds(policy, 3, random=lambda: 0.999) == 16


def test_huge_receive_counts_do_not_overflow() -> None:
    policy = RetryPolicy(base_seconds=1, cap_seconds=60, jitter=False)

    assert retry_delay_seconds(policy, 10_000, random=lambda: 1.0) == 60


def records(*ids: str, arn: str = "arn:aws:sqs:us-east-1:0:q", group: str | None = None):
    attributes = {"MessageGroupId": group} if group else {}
    return {
        "Records": [{"messageId": i, "eventSourceARN": arn, "attributes": attributes} for i in ids]
    }


class CountdownContext:
    def __init__(self, remaining_ms: list[int]) -> None:
        self._remaining = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self._remaining.pop(0)


def test_deadline_reports_records_not_reached_as_failures() -> None:
    handled: list[str] = []
    context = CountdownContext([5000, 3000, 900])

    response = within_deadline(
        records("a", "b", "c", "d"),
        context,
        lambda r: handled.append(r["messageId"]),
        margin_ms=1000,
    )

    assert handled == ["a", "b"]
    assert response == {"batchItemFailures": [{"itemIdentifier": "c"}, {"itemIdentifier": "d"}]}


def test_deadline_helper_reports_records_that_raise() -> None:
    def handler(record: dict[str, Any]) -> None:
        if record["messageId"] == "b":
            raise ValueError("bad")

    response = within_deadline(records("a", "b", "c"), CountdownContext([9000] * 3), handler)

    assert response == {"batchItemFailures": [{"itemIdentifier": "b"}]}


def test_deadline_helper_stops_a_fifo_group_at_its_first_failure() -> None:
    handled: list[str] = []

    def handler(record: dict[str, Any]) -> None:
        if record["messageId"] == "a":
            raise ValueError("bad")
        handled.append(record["messageId"])

    event = records("a", "b", arn="arn:aws:sqs:us-east-1:0:q.fifo", group="g")
    response = within_deadline(event, CountdownContext([9000] * 2), handler)

    assert handled == []
    assert response == {"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]}


def test_deadline_helper_works_with_the_real_context() -> None:
    context = LambdaContext(function_name="f", memory_limit_in_mb=128, deadline_monotonic=0.0)

    response = within_deadline(records("a"), context, lambda r: None)

    assert response == {"batchItemFailures": [{"itemIdentifier": "a"}]}


def test_app_declares_queues_with_dead_letter_queues() -> None:
    app = App("shop")
    app.queue("orders.fifo", fifo=True, dead_letter=DeadLetterQueue(max_receive_count=4))

    spec = app.queues["orders.fifo"]
    assert spec.dead_letter_queue == "orders-dlq.fifo"


@pytest.mark.parametrize(
    "declare",
    [
        lambda app: app.queue("other", visibility_timeout_seconds=-1),
        lambda app: app.queue("other", unknown_option=1),
        lambda app: app.queue("other.fifo"),
        lambda app: app.queue("q"),
        lambda app: app.handler(queue="missing")(lambda e, c: None),
        lambda app: app.handler(queue="q", batch_size=100)(lambda e, c: None),
        lambda app: app.handler(queue="q", batch_size=10_001, batching_window_seconds=1)(
            lambda e, c: None
        ),
        lambda app: app.handler(queue="q", timeout_seconds=901)(lambda e, c: None),
        lambda app: app.handler(queue="q", max_concurrency=0)(lambda e, c: None),
        lambda app: app.handler(queue="q", retry=RetryPolicy(base_seconds=10, cap_seconds=1))(
            lambda e, c: None
        ),
    ],
)
def test_app_refuses_invalid_declarations(declare: Any) -> None:
    app = App("shop")
    app.queue("q")

    with pytest.raises(errors.InvalidParameterValue):
        declare(app)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("login failed: password=hunter2 for user", "hunter2"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig went bad", "eyJhbGciOiJIUzI1NiJ9"),
        (
            "key 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 rejected",
            "9f86d081884c7d659a2feaa0c55ad015",
        ),
        ('api_key: "sk-live-1234"', "sk-live-1234"),
        ("no route to postgresql://alice:hunter2@db.internal/vectors", "hunter2"),
    ],
)
def test_redaction_removes_secrets_but_keeps_the_shape(text: str, secret: str) -> None:
    cleaned = redact(text)

    assert secret not in cleaned
    assert "[redacted]" in cleaned


def test_redaction_keeps_plain_errors_and_cuts_long_ones() -> None:
    assert redact("ValueError: row 3 has no title") == "ValueError: row 3 has no title"
    assert len(redact("x " * 5000)) == 1000
