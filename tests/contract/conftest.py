"""Fixtures of the contract suite: one ``queues`` fixture per backend, one behaviour per test.

Tests that need time to pass call ``clock.advance(seconds)``: backends that take an injected
clock move it instantly; a backend on real time (a remote service) would sleep instead.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, TypeVar

import pytest

from vaultq.queues import QueueAttributes, QueueBackend, RedrivePolicy
from vaultq.queues.sqlite import SqliteQueues

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

QUEUE_BACKENDS = ["sqlite"]

T = TypeVar("T")


class Clock:
    """Wall time plus an offset the test controls."""

    def __init__(self) -> None:
        self.offset_seconds = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_seconds

    def advance(self, seconds: float) -> None:
        self.offset_seconds += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sqlite_queues(tmp_path: Path, clock: Clock) -> Iterator[QueueBackend]:
    backend = SqliteQueues(tmp_path / "vaultq.db", clock=clock)
    yield backend
    backend.close()


@pytest.fixture(params=QUEUE_BACKENDS)
def queues(request: pytest.FixtureRequest) -> QueueBackend:
    backend: QueueBackend = request.getfixturevalue(f"{request.param}_queues")
    return backend


@pytest.fixture
def queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def queue(queues: QueueBackend, queue_name: str) -> str:
    queues.create_queue(queue_name, QueueAttributes(visibility_timeout_seconds=30))
    return queue_name


@pytest.fixture
def fifo_queue(queues: QueueBackend, queue_name: str) -> str:
    name = f"{queue_name}.fifo"
    queues.create_queue(name, QueueAttributes(fifo=True, content_based_deduplication=True))
    return name


def queue_with_dlq(
    queues: QueueBackend, name: str, *, max_receive_count: int, fifo: bool = False
) -> tuple[str, str]:
    """Create ``name`` with a dead-letter queue; returns (source, dead-letter queue)."""
    suffix = ".fifo" if fifo else ""
    dlq = f"{name}-dlq{suffix}"
    queues.create_queue(dlq, QueueAttributes(fifo=fifo))
    source = f"{name}{suffix}"
    queues.create_queue(
        source,
        QueueAttributes(
            fifo=fifo,
            content_based_deduplication=fifo,
            redrive_policy=RedrivePolicy(
                dead_letter_queue=dlq, max_receive_count=max_receive_count
            ),
        ),
    )
    return source, dlq


def eventually(probe: Callable[[], T], *, timeout_seconds: float = 5.0) -> T:
    """Call ``probe`` until it returns something truthy, or fail after the deadline."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing within {timeout_seconds} s")
        time.sleep(0.01)
