"""Dead-letter queues: the move after maxReceiveCount, its record, and the redrive back."""

from __future__ import annotations

import pytest

from vaultq import errors
from vaultq.queues import (
    Failure,
    OutgoingMessage,
    QueueAttributes,
    QueueBackend,
    RedriveAllowPolicy,
    RedrivePolicy,
)

from .conftest import Clock, queue_with_dlq


def fail_once(queues: QueueBackend, queue: str, reason: str = "HANDLER_ERROR") -> None:
    [message] = queues.receive(queue, visibility_timeout_seconds=30)
    queues.change_visibility(
        queue,
        message.receipt_handle,
        visibility_timeout_seconds=0,
        failure=Failure(reason=reason, error=f"boom {message.receive_count}"),
    )


def test_message_moves_to_dlq_after_max_receive_count(
    queues: QueueBackend, queue_name: str
) -> None:
    source, dlq = queue_with_dlq(queues, queue_name, max_receive_count=3)
    sent = queues.send(source, OutgoingMessage(body="poison"))
    for _ in range(3):
        fail_once(queues, source)

    assert queues.receive(source) == []
    [dead] = queues.receive(dlq)

    assert dead.message_id == sent.message_id
    assert dead.body == "poison"
    assert dead.dead_letter is not None
    assert dead.dead_letter.source_queue == source
    assert dead.dead_letter.reason == "HANDLER_ERROR"
    assert dead.dead_letter.receive_count == 3
    assert dead.dead_letter.last_error == "boom 3"
    assert dead.dead_letter.moved_at_ms >= dead.sent_at_ms


@pytest.mark.sqs_deviation(
    "a message that SQS moves to its dead-letter queue by itself (maxReceiveCount "
    "reached, no failure reported to vaultq) carries no record: SQS keeps none, so "
    "SqsQueues reports dead_letter=None (a known limit of the sqs backend, not of moto)"
)
def test_unreported_failures_are_recorded_as_receive_count_exceeded(
    queues: QueueBackend, queue_name: str, clock: Clock
) -> None:
    source, dlq = queue_with_dlq(queues, queue_name, max_receive_count=1)
    queues.send(source, OutgoingMessage(body="a"))
    queues.receive(source, visibility_timeout_seconds=1)
    clock.advance(2)

    assert queues.receive(source) == []
    [dead] = queues.receive(dlq)
    assert dead.dead_letter is not None
    assert dead.dead_letter.reason == "MAX_RECEIVE_COUNT_EXCEEDED"
    assert dead.dead_letter.last_error is None


@pytest.mark.time_travel
def test_standard_dlq_keeps_the_original_sent_timestamp(
    queues: QueueBackend, queue_name: str, clock: Clock
) -> None:
    source, dlq = queue_with_dlq(queues, queue_name, max_receive_count=1)
    queues.send(source, OutgoingMessage(body="a"))
    [first] = queues.receive(source, visibility_timeout_seconds=1)
    clock.advance(100)
    queues.receive(source)

    [dead] = queues.receive(dlq, visibility_timeout_seconds=0)
    assert dead.sent_at_ms == first.sent_at_ms
    # The age of the oldest message counts from the move, as SQS reports it for a DLQ.
    assert queues.stats(dlq).oldest_message_age_seconds < 100


@pytest.mark.time_travel
def test_standard_dlq_retention_counts_from_the_original_send(
    queues: QueueBackend, queue_name: str, clock: Clock
) -> None:
    dlq = f"{queue_name}-dlq"
    queues.create_queue(dlq, QueueAttributes(message_retention_seconds=120))
    source = queue_name
    queues.create_queue(
        source,
        QueueAttributes(
            redrive_policy=RedrivePolicy(dead_letter_queue=dlq, max_receive_count=1),
        ),
    )
    queues.send(source, OutgoingMessage(body="a"))
    queues.receive(source, visibility_timeout_seconds=1)
    clock.advance(100)
    queues.receive(source)
    assert queues.stats(dlq).visible == 1

    clock.advance(30)

    assert queues.stats(dlq).visible == 0
    assert queues.receive(dlq) == []


def test_non_retryable_failure_dead_letters_at_once(queues: QueueBackend, queue_name: str) -> None:
    source, dlq = queue_with_dlq(queues, queue_name, max_receive_count=5)
    queues.send(source, OutgoingMessage(body="a"))
    [message] = queues.receive(source)

    queues.dead_letter(
        source, message.receipt_handle, failure=Failure(reason="NON_RETRYABLE", error="bad schema")
    )

    assert queues.stats(source).in_flight == 0
    [dead] = queues.receive(dlq)
    assert dead.dead_letter is not None
    assert (dead.dead_letter.reason, dead.dead_letter.last_error) == ("NON_RETRYABLE", "bad schema")
    assert dead.dead_letter.receive_count == 1


def test_dead_letter_needs_a_redrive_policy(queues: QueueBackend, queue: str) -> None:
    queues.send(queue, OutgoingMessage(body="a"))
    [message] = queues.receive(queue)

    with pytest.raises(errors.InvalidParameterValue):
        queues.dead_letter(
            queue, message.receipt_handle, failure=Failure(reason="NON_RETRYABLE", error="x")
        )


def test_redrive_moves_messages_back_with_a_fresh_receive_count(
    queues: QueueBackend, queue_name: str
) -> None:
    source, dlq = queue_with_dlq(queues, queue_name, max_receive_count=1)
    queues.send(source, OutgoingMessage(body="a"))
    queues.send(source, OutgoingMessage(body="b"))
    for _ in range(2):
        fail_once(queues, source)
    assert queues.receive(source, max_messages=10) == []
    assert queues.stats(dlq).visible == 2

    assert queues.redrive(dlq) == 2

    back = queues.receive(source, max_messages=10)
    assert sorted(m.body for m in back) == ["a", "b"]
    assert all(m.receive_count == 1 and m.dead_letter is None for m in back)
    assert queues.stats(dlq).visible == 0


def test_redrive_of_selected_messages_leaves_the_rest(
    queues: QueueBackend, queue_name: str
) -> None:
    source, dlq = queue_with_dlq(queues, queue_name, max_receive_count=1)
    keep = queues.send(source, OutgoingMessage(body="keep")).message_id
    move = queues.send(source, OutgoingMessage(body="move")).message_id
    for _ in range(2):
        fail_once(queues, source)
    queues.receive(source, max_messages=10)

    assert queues.redrive(dlq, message_ids=[move]) == 1

    [back] = queues.receive(source)
    assert back.message_id == move
    [still_dead] = queues.receive(dlq)
    assert still_dead.message_id == keep


def test_redrive_to_another_destination(queues: QueueBackend, queue_name: str) -> None:
    source, dlq = queue_with_dlq(queues, queue_name, max_receive_count=1)
    other = f"{queue_name}-other"
    queues.create_queue(other)
    queues.send(source, OutgoingMessage(body="a"))
    fail_once(queues, source)
    queues.receive(source)

    assert queues.redrive(dlq, destination=other) == 1
    assert [m.body for m in queues.receive(other)] == ["a"]


def test_fifo_dlq_keeps_group_order(queues: QueueBackend, queue_name: str) -> None:
    source, dlq = queue_with_dlq(queues, queue_name, max_receive_count=1, fifo=True)
    for body in ("1", "2", "3"):
        queues.send(source, OutgoingMessage(body=body, group_id="g"))
    batch = queues.receive(source, max_messages=10)
    for message in batch:
        queues.change_visibility(source, message.receipt_handle, visibility_timeout_seconds=0)

    assert queues.receive(source, max_messages=10) == []
    assert [m.body for m in queues.receive(dlq, max_messages=10)] == ["1", "2", "3"]


def test_redrive_policy_needs_an_existing_dlq(queues: QueueBackend, queue_name: str) -> None:
    policy = RedrivePolicy(dead_letter_queue=f"{queue_name}-missing", max_receive_count=3)

    with pytest.raises(errors.InvalidAttributeValue):
        queues.create_queue(queue_name, QueueAttributes(redrive_policy=policy))


def test_dlq_must_match_the_source_type(queues: QueueBackend, queue_name: str) -> None:
    queues.create_queue(f"{queue_name}-dlq")
    policy = RedrivePolicy(dead_letter_queue=f"{queue_name}-dlq", max_receive_count=3)

    with pytest.raises(errors.InvalidAttributeValue):
        queues.create_queue(
            f"{queue_name}.fifo",
            QueueAttributes(
                fifo=True,
                content_based_deduplication=True,
                redrive_policy=policy,
            ),
        )


@pytest.mark.sqs_deviation(
    "moto 5.2 neither keeps nor enforces RedriveAllowPolicy; AWS refuses a source queue "
    "that the dead-letter queue's RedriveAllowPolicy does not allow (SQS developer "
    "guide, redrive allow policy)"
)
def test_redrive_allow_policy_limits_sources(queues: QueueBackend, queue_name: str) -> None:
    dlq = f"{queue_name}-dlq"
    allowed = f"{queue_name}-allowed"
    queues.create_queue(
        dlq,
        QueueAttributes(
            redrive_allow_policy=RedriveAllowPolicy(permission="byQueue", source_queues=(allowed,)),
        ),
    )
    policy = RedrivePolicy(dead_letter_queue=dlq, max_receive_count=3)

    queues.create_queue(allowed, QueueAttributes(redrive_policy=policy))
    with pytest.raises(errors.InvalidAttributeValue):
        queues.create_queue(f"{queue_name}-other", QueueAttributes(redrive_policy=policy))
    assert queues.list_dead_letter_source_queues(dlq) == [allowed]


@pytest.mark.parametrize("count", [0, 1001])
def test_max_receive_count_out_of_range_is_refused(count: int) -> None:
    with pytest.raises(errors.InvalidAttributeValue):
        RedrivePolicy(dead_letter_queue="dlq", max_receive_count=count)
