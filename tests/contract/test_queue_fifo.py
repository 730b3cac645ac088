"""FIFO queues: order per group, group blocking, deduplication, sequence numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from vaultq import errors
from vaultq.queues import OutgoingMessage, QueueAttributes, QueueBackend, SendEntry

if TYPE_CHECKING:
    from .conftest import Clock


def send(queues: QueueBackend, queue: str, body: str, group: str = "g") -> str:
    return queues.send(queue, OutgoingMessage(body=body, group_id=group)).message_id


def test_messages_of_a_group_arrive_in_send_order(queues: QueueBackend, fifo_queue: str) -> None:
    for i in range(25):
        send(queues, fifo_queue, f"m{i}")

    bodies = []
    while batch := queues.receive(fifo_queue, max_messages=10):
        bodies += [m.body for m in batch]
        for message in batch:
            queues.delete(fifo_queue, message.receipt_handle)

    assert bodies == [f"m{i}" for i in range(25)]


def test_group_is_blocked_while_a_message_is_in_flight(
    queues: QueueBackend, fifo_queue: str
) -> None:
    send(queues, fifo_queue, "first")
    send(queues, fifo_queue, "second")
    [first] = queues.receive(fifo_queue, max_messages=1)

    assert queues.receive(fifo_queue, max_messages=10) == []

    queues.delete(fifo_queue, first.receipt_handle)
    [second] = queues.receive(fifo_queue, max_messages=10)
    assert second.body == "second"


def test_failed_message_comes_back_before_later_ones(queues: QueueBackend, fifo_queue: str) -> None:
    send(queues, fifo_queue, "first")
    send(queues, fifo_queue, "second")
    batch = queues.receive(fifo_queue, max_messages=10)
    assert [m.body for m in batch] == ["first", "second"]

    queues.delete(fifo_queue, batch[1].receipt_handle)
    queues.change_visibility(fifo_queue, batch[0].receipt_handle, visibility_timeout_seconds=0)

    [again] = queues.receive(fifo_queue, max_messages=10)
    assert (again.body, again.receive_count) == ("first", 2)


def test_other_groups_flow_while_one_is_blocked(queues: QueueBackend, fifo_queue: str) -> None:
    send(queues, fifo_queue, "a1", group="a")
    send(queues, fifo_queue, "a2", group="a")
    send(queues, fifo_queue, "b1", group="b")
    [a1] = queues.receive(fifo_queue, max_messages=1)
    assert a1.body == "a1"

    assert [m.body for m in queues.receive(fifo_queue, max_messages=10)] == ["b1"]


@pytest.mark.sqs_deviation(
    "moto 5.2 returns FIFO messages in send order across groups; AWS returns as many "
    "messages of one group as possible (SQS developer guide, FIFO delivery logic)"
)
def test_receive_fills_from_one_group_first(queues: QueueBackend, fifo_queue: str) -> None:
    send(queues, fifo_queue, "a1", group="a")
    send(queues, fifo_queue, "b1", group="b")
    send(queues, fifo_queue, "a2", group="a")

    batch = queues.receive(fifo_queue, max_messages=10)

    assert [m.body for m in batch] == ["a1", "a2", "b1"]
    assert [m.group_id for m in batch] == ["a", "a", "b"]


@pytest.mark.sqs_deviation(
    "moto 5.2 sends no SequenceNumber with content-based deduplication, and random "
    "digits otherwise; AWS documents a sequence number that keeps increasing "
    "(SendMessage API reference)"
)
def test_sequence_numbers_increase(queues: QueueBackend, fifo_queue: str) -> None:
    first = queues.send(fifo_queue, OutgoingMessage(body="1", group_id="g"))
    second = queues.send(fifo_queue, OutgoingMessage(body="2", group_id="h"))

    assert first.sequence_number is not None and second.sequence_number is not None
    assert int(second.sequence_number) > int(first.sequence_number)
    [received, _] = queues.receive(fifo_queue, max_messages=10)
    assert received.sequence_number == first.sequence_number


@pytest.mark.time_travel
def test_content_duplicate_within_five_minutes_is_dropped(
    queues: QueueBackend, fifo_queue: str, clock: Clock
) -> None:
    original = send(queues, fifo_queue, "same")
    clock.advance(299)
    duplicate = send(queues, fifo_queue, "same")

    assert duplicate == original
    assert queues.stats(fifo_queue).visible == 1


@pytest.mark.sqs_deviation(
    "moto 5.2 forgets a deduplication id once its message is deleted; AWS keeps it for "
    "the five-minute interval (SQS developer guide, exactly-once processing)"
)
def test_duplicate_is_dropped_even_after_the_original_was_deleted(
    queues: QueueBackend, fifo_queue: str
) -> None:
    send(queues, fifo_queue, "same")
    [message] = queues.receive(fifo_queue)
    queues.delete(fifo_queue, message.receipt_handle)

    send(queues, fifo_queue, "same")

    assert queues.receive(fifo_queue) == []


@pytest.mark.time_travel
def test_same_content_after_five_minutes_is_a_new_message(
    queues: QueueBackend, fifo_queue: str, clock: Clock
) -> None:
    original = send(queues, fifo_queue, "same")
    clock.advance(301)

    assert send(queues, fifo_queue, "same") != original
    assert queues.stats(fifo_queue).visible == 2


@pytest.mark.sqs_deviation(
    "moto 5.2 answers a deduplicated send with a fresh MessageId (it stores no "
    "duplicate); the contract answers with the original send's result, and AWS accepts "
    "a duplicate without delivering it (SQS developer guide, exactly-once processing)"
)
def test_explicit_deduplication_id_wins_over_content(queues: QueueBackend, fifo_queue: str) -> None:
    first = queues.send(fifo_queue, OutgoingMessage(body="a", group_id="g", deduplication_id="x"))
    second = queues.send(fifo_queue, OutgoingMessage(body="b", group_id="g", deduplication_id="x"))
    third = queues.send(fifo_queue, OutgoingMessage(body="a", group_id="g", deduplication_id="y"))

    assert second.message_id == first.message_id
    assert third.message_id != first.message_id


@pytest.mark.sqs_deviation(
    "moto 5.2 answers a deduplicated send with a fresh MessageId (it stores no "
    "duplicate); the contract answers with the original send's result, and AWS accepts "
    "a duplicate without delivering it (SQS developer guide, exactly-once processing)"
)
def test_duplicates_inside_one_batch_are_dropped(queues: QueueBackend, fifo_queue: str) -> None:
    result = queues.send_batch(
        fifo_queue,
        [
            SendEntry(id="one", message=OutgoingMessage(body="same", group_id="g")),
            SendEntry(id="two", message=OutgoingMessage(body="same", group_id="g")),
        ],
    )

    assert result.successful["one"].message_id == result.successful["two"].message_id
    assert queues.stats(fifo_queue).visible == 1


@pytest.mark.sqs_deviation(
    "moto 5.2 ignores DeduplicationScope=messageGroup; AWS deduplicates per message "
    "group then (SQS developer guide, high throughput for FIFO queues)"
)
def test_deduplication_scope_per_group(queues: QueueBackend, queue_name: str) -> None:
    name = f"{queue_name}.fifo"
    queues.create_queue(
        name,
        QueueAttributes(
            fifo=True,
            content_based_deduplication=True,
            deduplication_scope="message_group",
        ),
    )

    a = send(queues, name, "same", group="a")
    b = send(queues, name, "same", group="b")

    assert a != b
    assert send(queues, name, "same", group="a") == a


def test_fifo_send_without_group_id_is_refused(queues: QueueBackend, fifo_queue: str) -> None:
    with pytest.raises(errors.MissingParameter):
        queues.send(fifo_queue, OutgoingMessage(body="a"))


def test_fifo_send_without_deduplication_is_refused(queues: QueueBackend, queue_name: str) -> None:
    name = f"{queue_name}.fifo"
    queues.create_queue(name, QueueAttributes(fifo=True))

    with pytest.raises(errors.MissingParameter):
        queues.send(name, OutgoingMessage(body="a", group_id="g"))


def test_fifo_refuses_per_message_delay(queues: QueueBackend, fifo_queue: str) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        queues.send(fifo_queue, OutgoingMessage(body="a", group_id="g", delay_seconds=5))


@pytest.mark.time_travel
def test_queue_delay_on_fifo_keeps_order(
    queues: QueueBackend, queue_name: str, clock: Clock
) -> None:
    name = f"{queue_name}.fifo"
    queues.create_queue(
        name,
        QueueAttributes(
            fifo=True,
            content_based_deduplication=True,
            delay_seconds=10,
        ),
    )
    send(queues, name, "first")
    clock.advance(5)
    send(queues, name, "second")

    assert queues.receive(name, max_messages=10) == []
    clock.advance(6)
    assert [m.body for m in queues.receive(name, max_messages=10)] == ["first"]
