"""At-least-once delivery: visibility timeouts, receive counts, deletes and receipt handles."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest

from vaultq import errors
from vaultq.queues import DeleteEntry, OutgoingMessage, QueueBackend, VisibilityEntry

if TYPE_CHECKING:
    from .conftest import Clock


@pytest.mark.time_travel
def test_received_message_is_invisible_until_its_timeout(
    queues: QueueBackend, queue: str, clock: Clock
) -> None:
    queues.send(queue, OutgoingMessage(body="a"))
    [first] = queues.receive(queue, visibility_timeout_seconds=10)

    assert queues.receive(queue) == []
    clock.advance(10.5)
    [again] = queues.receive(queue)

    assert again.message_id == first.message_id
    assert again.receive_count == 2
    assert again.first_received_at_ms == first.first_received_at_ms


def test_deleted_message_never_comes_back(queues: QueueBackend, queue: str, clock: Clock) -> None:
    queues.send(queue, OutgoingMessage(body="a"))
    [message] = queues.receive(queue, visibility_timeout_seconds=1)

    queues.delete(queue, message.receipt_handle)
    clock.advance(5)

    assert queues.receive(queue) == []


def test_delete_is_idempotent_for_the_current_handle(queues: QueueBackend, queue: str) -> None:
    queues.send(queue, OutgoingMessage(body="a"))
    [message] = queues.receive(queue)

    queues.delete(queue, message.receipt_handle)
    queues.delete(queue, message.receipt_handle)

    assert queues.stats(queue).in_flight == 0


def test_message_carries_sqs_system_attributes(
    queues: QueueBackend, queue: str, clock: Clock
) -> None:
    before_ms = int(clock() * 1000)
    sent = queues.send(queue, OutgoingMessage(body="héllo"))
    [message] = queues.receive(queue)

    assert message.message_id == sent.message_id
    assert message.body == "héllo"
    assert (
        message.md5_of_body
        == sent.md5_of_body
        == hashlib.md5("héllo".encode(), usedforsecurity=False).hexdigest()
    )
    assert before_ms <= message.sent_at_ms <= message.first_received_at_ms
    assert message.receive_count == 1


@pytest.mark.sqs_deviation(
    "AWS documents that DeleteMessage with a receipt handle other than the latest one "
    "succeeds without deleting the message (DeleteMessage API reference), so SQS cannot "
    "raise StaleReceiptHandle on a delete; moto 5.2 even deletes the message"
)
def test_stale_receipt_handle_cannot_delete_a_redelivered_message(
    queues: QueueBackend, queue: str, clock: Clock
) -> None:
    queues.send(queue, OutgoingMessage(body="a"))
    [first] = queues.receive(queue, visibility_timeout_seconds=1)
    clock.advance(2)
    [second] = queues.receive(queue, visibility_timeout_seconds=30)

    with pytest.raises(errors.StaleReceiptHandle):
        queues.delete(queue, first.receipt_handle)
    with pytest.raises(errors.StaleReceiptHandle):
        queues.change_visibility(queue, first.receipt_handle, visibility_timeout_seconds=60)

    assert queues.stats(queue).in_flight == 1
    queues.delete(queue, second.receipt_handle)
    assert queues.stats(queue).in_flight == 0


def test_handle_of_an_expired_but_unreceived_lease_still_deletes(
    queues: QueueBackend, queue: str, clock: Clock
) -> None:
    queues.send(queue, OutgoingMessage(body="a"))
    [message] = queues.receive(queue, visibility_timeout_seconds=1)
    clock.advance(2)

    queues.delete(queue, message.receipt_handle)

    assert queues.receive(queue) == []


@pytest.mark.parametrize("handle", ["", "not-a-handle", "djE6OTk5OTk6MTpiYWQ="])
def test_forged_receipt_handle_is_refused(queues: QueueBackend, queue: str, handle: str) -> None:
    with pytest.raises(errors.ReceiptHandleIsInvalid):
        queues.delete(queue, handle)


def test_handle_from_another_queue_is_refused(
    queues: QueueBackend, queue: str, queue_name: str
) -> None:
    other = f"{queue_name}-other"
    queues.create_queue(other)
    queues.send(other, OutgoingMessage(body="a"))
    [message] = queues.receive(other)

    with pytest.raises(errors.ReceiptHandleIsInvalid):
        queues.delete(queue, message.receipt_handle)


def test_change_visibility_to_zero_makes_message_visible_now(
    queues: QueueBackend, queue: str
) -> None:
    queues.send(queue, OutgoingMessage(body="a"))
    [message] = queues.receive(queue, visibility_timeout_seconds=300)

    queues.change_visibility(queue, message.receipt_handle, visibility_timeout_seconds=0)
    [again] = queues.receive(queue)

    assert again.message_id == message.message_id
    assert again.receive_count == 2


@pytest.mark.time_travel
def test_change_visibility_counts_from_now(queues: QueueBackend, queue: str, clock: Clock) -> None:
    queues.send(queue, OutgoingMessage(body="a"))
    [message] = queues.receive(queue, visibility_timeout_seconds=10)
    clock.advance(8)

    queues.change_visibility(queue, message.receipt_handle, visibility_timeout_seconds=10)
    clock.advance(8)
    assert queues.receive(queue) == []
    clock.advance(3)
    assert len(queues.receive(queue)) == 1


@pytest.mark.time_travel
def test_visibility_cannot_extend_past_twelve_hours_from_receipt(
    queues: QueueBackend, queue: str, clock: Clock
) -> None:
    queues.send(queue, OutgoingMessage(body="a"))
    [message] = queues.receive(queue, visibility_timeout_seconds=43_200)
    clock.advance(3600)

    with pytest.raises(errors.InvalidParameterValue):
        queues.change_visibility(queue, message.receipt_handle, visibility_timeout_seconds=43_200)
    queues.change_visibility(queue, message.receipt_handle, visibility_timeout_seconds=39_500)


@pytest.mark.sqs_deviation(
    "moto 5.2 changes the visibility of a message whose visibility timeout already "
    "expired; AWS refuses it (MessageNotInflight, ChangeMessageVisibility API "
    "reference)"
)
def test_change_visibility_of_a_message_no_longer_in_flight_fails(
    queues: QueueBackend, queue: str, clock: Clock
) -> None:
    queues.send(queue, OutgoingMessage(body="a"))
    [message] = queues.receive(queue, visibility_timeout_seconds=1)
    clock.advance(2)

    with pytest.raises(errors.MessageNotInflight):
        queues.change_visibility(queue, message.receipt_handle, visibility_timeout_seconds=30)


@pytest.mark.sqs_deviation(
    "AWS documents that DeleteMessage with a receipt handle other than the latest one "
    "succeeds without deleting the message (DeleteMessage API reference), so SQS cannot "
    "raise StaleReceiptHandle on a delete; moto 5.2 even deletes the message"
)
def test_batch_delete_reports_each_entry(queues: QueueBackend, queue: str, clock: Clock) -> None:
    for body in "abc":
        queues.send(queue, OutgoingMessage(body=body))
    messages = queues.receive(queue, max_messages=3, visibility_timeout_seconds=1)
    assert len(messages) == 3
    clock.advance(2)
    [redelivered] = queues.receive(queue, max_messages=1)
    stale = next(m for m in messages if m.message_id == redelivered.message_id)
    fresh = [m for m in messages if m is not stale]

    result = queues.delete_batch(
        queue,
        [
            DeleteEntry(id="stale", receipt_handle=stale.receipt_handle),
            *(
                DeleteEntry(id=f"ok{i}", receipt_handle=m.receipt_handle)
                for i, m in enumerate(fresh)
            ),
        ],
    )

    assert set(result.successful) == {"ok0", "ok1"}
    assert [(f.id, f.code) for f in result.failed] == [("stale", "StaleReceiptHandle")]


def test_batch_change_visibility_reports_each_entry(queues: QueueBackend, queue: str) -> None:
    queues.send(queue, OutgoingMessage(body="a"))
    [message] = queues.receive(queue)

    result = queues.change_visibility_batch(
        queue,
        [
            VisibilityEntry(
                id="good", receipt_handle=message.receipt_handle, visibility_timeout_seconds=0
            ),
            VisibilityEntry(id="bad", receipt_handle="garbage", visibility_timeout_seconds=0),
        ],
    )

    assert list(result.successful) == ["good"]
    assert [(f.id, f.code) for f in result.failed] == [("bad", "ReceiptHandleIsInvalid")]
    assert len(queues.receive(queue)) == 1


def test_receive_returns_at_most_max_messages(queues: QueueBackend, queue: str) -> None:
    for i in range(15):
        queues.send(queue, OutgoingMessage(body=str(i)))

    first = queues.receive(queue, max_messages=10)
    second = queues.receive(queue, max_messages=10)

    assert len(first) == 10
    assert len(second) == 5
    assert {m.body for m in first + second} == {str(i) for i in range(15)}


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"max_messages": 11}, "InvalidParameterValue"),
        ({"max_messages": 0}, "InvalidParameterValue"),
        ({"wait_seconds": 21}, "InvalidParameterValue"),
        ({"visibility_timeout_seconds": 43_201}, "InvalidParameterValue"),
        ({"visibility_timeout_seconds": -1}, "InvalidParameterValue"),
    ],
)
def test_receive_refuses_out_of_range_options(
    queues: QueueBackend, queue: str, options: dict[str, int], code: str
) -> None:
    with pytest.raises(errors.InvalidParameterValue) as caught:
        queues.receive(queue, **options)  # type: ignore[arg-type]
    assert caught.value.code == code
