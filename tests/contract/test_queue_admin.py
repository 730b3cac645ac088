"""Queue lifecycle, attributes, statistics, purge and retention."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from vaultq import errors
from vaultq.queues import OutgoingMessage, QueueAttributes, QueueBackend

if TYPE_CHECKING:
    from .conftest import Clock


def test_create_is_idempotent_for_identical_attributes(
    queues: QueueBackend, queue_name: str
) -> None:
    first = queues.create_queue(queue_name, QueueAttributes(visibility_timeout_seconds=60))
    second = queues.create_queue(queue_name, QueueAttributes(visibility_timeout_seconds=60))

    assert first == second
    assert queues.get_queue(queue_name).attributes.visibility_timeout_seconds == 60


def test_create_with_other_attributes_fails(queues: QueueBackend, queue_name: str) -> None:
    queues.create_queue(queue_name)

    with pytest.raises(errors.QueueNameExists):
        queues.create_queue(queue_name, QueueAttributes(visibility_timeout_seconds=61))


@pytest.mark.parametrize("name", ["", "has space", "x" * 81, "dots.in.name", "nofifo.fifo"])
def test_invalid_queue_names_are_refused(queues: QueueBackend, name: str) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        queues.create_queue(name)


def test_fifo_queue_name_must_end_with_fifo(queues: QueueBackend, queue_name: str) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        queues.create_queue(queue_name, QueueAttributes(fifo=True))


@pytest.mark.parametrize(
    "options",
    [
        {"visibility_timeout_seconds": 43_201},
        {"message_retention_seconds": 59},
        {"message_retention_seconds": 1_209_601},
        {"delay_seconds": 901},
        {"maximum_message_size_bytes": 1_048_577},
        {"maximum_message_size_bytes": 1023},
        {"receive_wait_time_seconds": 21},
        {"content_based_deduplication": True},
    ],
)
def test_attribute_out_of_range_is_refused(options: dict[str, int]) -> None:
    with pytest.raises(errors.InvalidAttributeValue):
        QueueAttributes(**options)  # type: ignore[arg-type]


def test_list_queues_by_prefix(queues: QueueBackend, queue_name: str) -> None:
    for suffix in ("a", "b"):
        queues.create_queue(f"{queue_name}-{suffix}")
    queues.create_queue(f"other-{queue_name}")

    assert queues.list_queues(prefix=queue_name) == [f"{queue_name}-a", f"{queue_name}-b"]


def test_deleted_queue_is_gone_with_its_messages(queues: QueueBackend, queue: str) -> None:
    queues.send(queue, OutgoingMessage(body="a"))

    queues.delete_queue(queue)

    assert queue not in queues.list_queues()
    with pytest.raises(errors.QueueDoesNotExist):
        queues.receive(queue)
    queues.create_queue(queue)
    assert queues.receive(queue) == []


def test_set_attributes_changes_behaviour(queues: QueueBackend, queue: str, clock: Clock) -> None:
    queues.set_queue_attributes(queue, QueueAttributes(visibility_timeout_seconds=5))
    queues.send(queue, OutgoingMessage(body="a"))
    queues.receive(queue)

    clock.advance(6)
    assert len(queues.receive(queue)) == 1


def test_queue_cannot_change_type(queues: QueueBackend, queue: str) -> None:
    with pytest.raises(errors.InvalidAttributeValue):
        queues.set_queue_attributes(queue, QueueAttributes(fifo=True))


@pytest.mark.time_travel
def test_stats_count_visible_in_flight_and_delayed(
    queues: QueueBackend, queue: str, clock: Clock
) -> None:
    for i in range(3):
        queues.send(queue, OutgoingMessage(body=str(i)))
    queues.send(queue, OutgoingMessage(body="later", delay_seconds=120))
    queues.receive(queue, max_messages=1)
    clock.advance(10)

    stats = queues.stats(queue)

    assert (stats.visible, stats.in_flight, stats.delayed) == (2, 1, 1)
    assert stats.oldest_message_age_seconds == 10


def test_purge_deletes_everything(queues: QueueBackend, queue: str) -> None:
    for i in range(5):
        queues.send(queue, OutgoingMessage(body=str(i)))
    queues.receive(queue, max_messages=2)

    assert queues.purge(queue) == 5

    stats = queues.stats(queue)
    assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 0)


@pytest.mark.time_travel
def test_messages_expire_after_the_retention_period(
    queues: QueueBackend, queue_name: str, clock: Clock
) -> None:
    queues.create_queue(queue_name, QueueAttributes(message_retention_seconds=60))
    queues.send(queue_name, OutgoingMessage(body="old"))
    clock.advance(30)
    queues.send(queue_name, OutgoingMessage(body="new"))
    clock.advance(31)

    assert queues.stats(queue_name).visible == 1
    assert [m.body for m in queues.receive(queue_name, max_messages=10)] == ["new"]


@pytest.mark.time_travel
def test_expired_head_unblocks_its_fifo_group(
    queues: QueueBackend, queue_name: str, clock: Clock
) -> None:
    name = f"{queue_name}.fifo"
    queues.create_queue(
        name,
        QueueAttributes(
            fifo=True,
            content_based_deduplication=True,
            message_retention_seconds=60,
        ),
    )
    queues.send(name, OutgoingMessage(body="old", group_id="g"))
    queues.receive(name, visibility_timeout_seconds=120)
    clock.advance(30)
    queues.send(name, OutgoingMessage(body="new", group_id="g"))
    clock.advance(31)

    assert [m.body for m in queues.receive(name, max_messages=10)] == ["new"]
