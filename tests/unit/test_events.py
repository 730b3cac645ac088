"""Lambda's rules for a handler's batch response."""

from __future__ import annotations

import pytest

from vaultq.events import LambdaContext, batch_outcome

IDS = ["m1", "m2", "m3"]


@pytest.mark.parametrize(
    "response",
    [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}],
)
def test_empty_or_null_failures_mean_success(response: object) -> None:
    outcome = batch_outcome(response, IDS, report_batch_item_failures=True)

    assert outcome.failed_message_ids == frozenset()
    assert outcome.batch_error is None


def test_listed_items_fail_and_the_rest_succeed() -> None:
    outcome = batch_outcome(
        {"batchItemFailures": [{"itemIdentifier": "m2"}]}, IDS, report_batch_item_failures=True
    )

    assert outcome.failed_message_ids == {"m2"}


@pytest.mark.parametrize(
    "response",
    [
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"itemIdentifier": "unknown"}]},
        {"batchItemFailures": [{"itemId": "m1"}]},
        {"batchItemFailures": ["m1"]},
        {"batchItemFailures": "m1"},
        "not an object",
        ["m1"],
    ],
)
def test_malformed_response_fails_the_whole_batch(response: object) -> None:
    outcome = batch_outcome(response, IDS, report_batch_item_failures=True)

    assert outcome.failed_message_ids == frozenset(IDS)
    assert outcome.batch_error


def test_failures_count_only_with_report_batch_item_failures() -> None:
    outcome = batch_outcome(
        {"batchItemFailures": [{"itemIdentifier": "m1"}]}, IDS, report_batch_item_failures=False
    )

    assert outcome.failed_message_ids == frozenset()


def test_context_counts_down_to_its_deadline() -> None:
    now = [100.0]
    context = LambdaContext(
        function_name="f",
        memory_limit_in_mb=128,
        deadline_monotonic=103.5,
        monotonic=lambda: now[0],
    )

    assert context.get_remaining_time_in_millis() == 3500
    now[0] = 104.0
    assert context.get_remaining_time_in_millis() == 0
    assert context.invoked_function_arn.endswith(":function:f")
