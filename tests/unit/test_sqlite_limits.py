"""Limits of the embedded backend that are too large to reach in the contract suite."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from vaultq import errors
from vaultq.queues import OutgoingMessage, QueueAttributes
from vaultq.queues.sqlite import SqliteQueues

if TYPE_CHECKING:
    from pathlib import Path


def test_standard_queue_refuses_receives_past_the_in_flight_limit(tmp_path: Path) -> None:
    queues = SqliteQueues(tmp_path / "q.db", max_in_flight=3)
    queues.create_queue("q")
    for i in range(5):
        queues.send("q", OutgoingMessage(body=str(i)))
    assert len(queues.receive("q", max_messages=3)) == 3

    with pytest.raises(errors.OverLimit):
        queues.receive("q")
    queues.close()


def test_fifo_queue_answers_with_fewer_messages_at_the_in_flight_limit(tmp_path: Path) -> None:
    queues = SqliteQueues(tmp_path / "q.db", max_in_flight=3)
    queues.create_queue("q.fifo", QueueAttributes(fifo=True, content_based_deduplication=True))
    for i in range(5):
        queues.send("q.fifo", OutgoingMessage(body=str(i), group_id=f"g{i}"))

    assert len(queues.receive("q.fifo", max_messages=2)) == 2
    assert len(queues.receive("q.fifo", max_messages=10)) == 1
    assert queues.receive("q.fifo", max_messages=10) == []
    queues.close()


def test_unknown_durability_is_refused(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidSettings):
        SqliteQueues(tmp_path / "q.db", durability="sometimes")  # type: ignore[arg-type]


def test_unusable_database_location_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    with pytest.raises(errors.BackendUnavailable, match="cannot use"):
        SqliteQueues(blocker / "vaultq.db")
