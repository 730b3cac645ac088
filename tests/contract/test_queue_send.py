"""Sending: SQS's limits and errors, message attributes, batches and delays."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from vaultq import errors
from vaultq.queues import (
    MessageAttribute,
    OutgoingMessage,
    QueueAttributes,
    QueueBackend,
    SendEntry,
)

if TYPE_CHECKING:
    from .conftest import Clock

MIB = 1024 * 1024


def test_message_attributes_round_trip(queues: QueueBackend, queue: str) -> None:
    attributes = {
        "tenant": MessageAttribute(data_type="String", value="acme"),
        "attempt": MessageAttribute(data_type="Number", value="3"),
        "blob": MessageAttribute(data_type="Binary.gzip", value=b"\x00\xff"),
    }
    queues.send(queue, OutgoingMessage(body="a", attributes=attributes))

    [message] = queues.receive(queue)

    assert message.attributes == attributes


def test_body_of_one_mebibyte_is_accepted(queues: QueueBackend, queue: str) -> None:
    queues.send(queue, OutgoingMessage(body="x" * MIB))

    [message] = queues.receive(queue)

    assert len(message.body) == MIB


def test_body_over_the_size_limit_is_refused_and_not_stored(
    queues: QueueBackend, queue: str
) -> None:
    with pytest.raises(errors.MessageTooLong):
        queues.send(queue, OutgoingMessage(body="x" * (MIB + 1)))

    assert queues.stats(queue).visible == 0


def test_queue_maximum_message_size_counts_attributes(
    queues: QueueBackend, queue_name: str
) -> None:
    queues.create_queue(queue_name, QueueAttributes(maximum_message_size_bytes=1024))
    big_attribute = {"a": MessageAttribute(data_type="String", value="y" * 1000)}

    with pytest.raises(errors.MessageTooLong):
        queues.send(queue_name, OutgoingMessage(body="x" * 100, attributes=big_attribute))


@pytest.mark.parametrize("body", ["", "bad\x00char", "bad\x08char", "\ufffe"])
def test_body_outside_sqs_character_set_is_refused(
    queues: QueueBackend, queue: str, body: str
) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        queues.send(queue, OutgoingMessage(body=body))


def test_send_to_unknown_queue_fails(queues: QueueBackend, queue_name: str) -> None:
    with pytest.raises(errors.QueueDoesNotExist):
        queues.send(queue_name, OutgoingMessage(body="a"))


@pytest.mark.parametrize(
    "attributes",
    [
        {f"a{i}": MessageAttribute(data_type="String", value="v") for i in range(11)},
        {"aws.reserved": MessageAttribute(data_type="String", value="v")},
        {"bad name": MessageAttribute(data_type="String", value="v")},
    ],
)
def test_invalid_message_attributes_are_refused(
    queues: QueueBackend, queue: str, attributes: dict[str, MessageAttribute]
) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        queues.send(queue, OutgoingMessage(body="a", attributes=attributes))


@pytest.mark.parametrize(
    ("data_type", "value"),
    [("Number", "twelve"), ("String", b"bytes"), ("Binary", "text"), ("Float", "1")],
)
def test_attribute_value_must_match_its_type(data_type: str, value: str | bytes) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        MessageAttribute(data_type=data_type, value=value)


def test_batch_of_ten_is_sent(queues: QueueBackend, queue: str) -> None:
    entries = [SendEntry(id=f"m{i}", message=OutgoingMessage(body=str(i))) for i in range(10)]

    result = queues.send_batch(queue, entries)

    assert set(result.successful) == {f"m{i}" for i in range(10)}
    assert result.failed == []
    assert queues.stats(queue).visible == 10


@pytest.mark.parametrize(
    ("ids", "error"),
    [
        ([f"m{i}" for i in range(11)], errors.TooManyEntriesInBatchRequest),
        (["same", "same"], errors.BatchEntryIdsNotDistinct),
        ([], errors.EmptyBatchRequest),
        (["has space"], errors.InvalidBatchEntryId),
    ],
)
def test_malformed_batch_is_refused_whole(
    queues: QueueBackend, queue: str, ids: list[str], error: type[Exception]
) -> None:
    entries = [SendEntry(id=entry_id, message=OutgoingMessage(body="a")) for entry_id in ids]

    with pytest.raises(error):
        queues.send_batch(queue, entries)

    assert queues.stats(queue).visible == 0


def test_batch_larger_than_the_limit_in_total_is_refused(queues: QueueBackend, queue: str) -> None:
    entries = [
        SendEntry(id=f"m{i}", message=OutgoingMessage(body="x" * (MIB // 4))) for i in range(5)
    ]

    with pytest.raises(errors.BatchRequestTooLong):
        queues.send_batch(queue, entries)


def test_invalid_entry_fails_alone_in_a_batch(queues: QueueBackend, queue: str) -> None:
    result = queues.send_batch(
        queue,
        [
            SendEntry(id="good", message=OutgoingMessage(body="a")),
            SendEntry(id="bad", message=OutgoingMessage(body="nul\x00")),
        ],
    )

    assert list(result.successful) == ["good"]
    assert [(f.id, f.code, f.sender_fault) for f in result.failed] == [
        ("bad", "InvalidMessageContents", True)
    ]
    [message] = queues.receive(queue)
    assert message.message_id == result.successful["good"].message_id


@pytest.mark.time_travel
def test_delayed_message_is_invisible_until_its_delay_passes(
    queues: QueueBackend, queue: str, clock: Clock
) -> None:
    queues.send(queue, OutgoingMessage(body="later", delay_seconds=60))
    queues.send(queue, OutgoingMessage(body="now"))

    [now] = queues.receive(queue, max_messages=10)
    assert now.body == "now"
    queues.delete(queue, now.receipt_handle)
    assert queues.stats(queue).delayed == 1
    clock.advance(61)
    assert [m.body for m in queues.receive(queue, max_messages=10)] == ["later"]


@pytest.mark.time_travel
def test_queue_delay_applies_to_every_message(
    queues: QueueBackend, queue_name: str, clock: Clock
) -> None:
    queues.create_queue(queue_name, QueueAttributes(delay_seconds=30))
    queues.send(queue_name, OutgoingMessage(body="a"))

    assert queues.receive(queue_name) == []
    clock.advance(31)
    assert len(queues.receive(queue_name)) == 1


def test_delay_over_fifteen_minutes_is_refused(queues: QueueBackend, queue: str) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        queues.send(queue, OutgoingMessage(body="a", delay_seconds=901))


def test_deduplication_id_on_a_standard_queue_is_refused(queues: QueueBackend, queue: str) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        queues.send(queue, OutgoingMessage(body="a", deduplication_id="d"))
