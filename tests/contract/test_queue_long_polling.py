"""Long polling: a waiting receive returns as soon as a message can be delivered."""

from __future__ import annotations

import threading
import time

from vaultq.queues import OutgoingMessage, QueueAttributes, QueueBackend


def send_later(queues: QueueBackend, queue: str, delay_seconds: float) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: (time.sleep(delay_seconds), queues.send(queue, OutgoingMessage(body="x")))
    )
    thread.start()
    return thread


def test_waiting_receive_wakes_when_a_message_arrives(queues: QueueBackend, queue: str) -> None:
    sender = send_later(queues, queue, 0.3)
    started = time.monotonic()

    messages = queues.receive(queue, wait_seconds=20)

    elapsed = time.monotonic() - started
    sender.join()
    assert [m.body for m in messages] == ["x"]
    # Woken by the send, not by the end of the wait; a loaded machine may be slow to wake.
    assert 0.25 <= elapsed < 10


def test_waiting_receive_gives_up_after_the_wait(queues: QueueBackend, queue: str) -> None:
    started = time.monotonic()

    assert queues.receive(queue, wait_seconds=1) == []
    assert time.monotonic() - started >= 0.95


def test_queue_receive_wait_time_is_the_default_wait(queues: QueueBackend, queue_name: str) -> None:
    queues.create_queue(queue_name, QueueAttributes(receive_wait_time_seconds=10))
    sender = send_later(queues, queue_name, 0.3)

    messages = queues.receive(queue_name)

    sender.join()
    assert len(messages) == 1


def test_waiting_receive_wakes_when_a_visibility_timeout_expires(
    queues: QueueBackend, queue: str
) -> None:
    queues.send(queue, OutgoingMessage(body="x"))
    [first] = queues.receive(queue, visibility_timeout_seconds=1)
    started = time.monotonic()

    [again] = queues.receive(queue, wait_seconds=20)

    assert again.message_id == first.message_id
    assert time.monotonic() - started < 10, "woken when the lease lapsed, not at the wait's end"
