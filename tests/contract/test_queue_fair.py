"""Fair queues: a standard queue whose messages carry group ids shares out receives by group."""

from __future__ import annotations

import pytest

from vaultq.queues import OutgoingMessage, QueueBackend, SendEntry


@pytest.mark.sqs_deviation(
    "moto 5.2 ignores MessageGroupId on standard queues; AWS fair queues serve the "
    "quiet groups' messages ahead of a noisy group's backlog (SQS developer guide, fair "
    "queues)"
)
def test_noisy_group_does_not_starve_a_quiet_one(queues: QueueBackend, queue: str) -> None:
    for batch in range(20):
        queues.send_batch(
            queue,
            [
                SendEntry(
                    id=f"n{i}", message=OutgoingMessage(body=f"noisy-{batch}-{i}", group_id="noisy")
                )
                for i in range(10)
            ],
        )
    queues.send(queue, OutgoingMessage(body="quiet", group_id="quiet"))

    first = queues.receive(queue, max_messages=10)

    assert "quiet" in [m.body for m in first]
    assert len(first) == 10


@pytest.mark.sqs_deviation(
    "moto 5.2 ignores MessageGroupId on standard queues; AWS fair queues serve the "
    "quiet groups' messages ahead of a noisy group's backlog (SQS developer guide, fair "
    "queues)"
)
def test_groups_share_a_receive(queues: QueueBackend, queue: str) -> None:
    for group in ("a", "b", "c"):
        for i in range(5):
            queues.send(queue, OutgoingMessage(body=f"{group}{i}", group_id=group))

    batch = queues.receive(queue, max_messages=3)

    assert sorted(m.group_id or "" for m in batch) == ["a", "b", "c"]


def test_fair_queue_does_not_block_a_group_in_flight(queues: QueueBackend, queue: str) -> None:
    queues.send(queue, OutgoingMessage(body="a1", group_id="a"))
    queues.send(queue, OutgoingMessage(body="a2", group_id="a"))
    [first] = queues.receive(queue)

    [second] = queues.receive(queue)

    assert {first.body, second.body} == {"a1", "a2"}
