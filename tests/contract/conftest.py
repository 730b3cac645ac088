"""Fixtures of the contract suite: one ``queues`` fixture per backend, one behaviour per test.

Tests that need time to pass call ``clock.advance(seconds)``: backends that take an injected
clock move it instantly; on a backend that runs on real time (SQS) the clock sleeps instead,
for at most ``REAL_TIME_MAX_ADVANCE_SECONDS`` per call. A test that moves time further is
marked ``time_travel`` and is skipped on real-time backends, saying why.

A test marked ``sqs_deviation(reason)`` is a strict xfail on the ``sqs`` backend only: the
reason names what moto (the suite's SQS endpoint) or AWS itself does instead of the contract,
and cites the AWS documentation. Nothing else in the suite depends on the backend.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, TypeVar

import pytest

from vaultq.queues import QueueAttributes, QueueBackend, RedrivePolicy
from vaultq.queues.sqlite import SqliteQueues
from vaultq.queues.sqs import SqsQueues

from ..aws_server import REGION

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

QUEUE_BACKENDS = ["sqlite", "sqs"]
#: A real-time clock sleeps this long at most per advance; longer jumps need ``time_travel``.
REAL_TIME_MAX_ADVANCE_SECONDS = 6.0

T = TypeVar("T")


class Clock:
    """Wall time plus an offset the test controls; or, once ``use_real_time()`` was called by
    a backend that reads the wall clock itself, wall time that ``advance`` waits for."""

    def __init__(self) -> None:
        self.offset_seconds = 0.0
        self.can_travel = True

    def __call__(self) -> float:
        return time.time() + self.offset_seconds

    def use_real_time(self) -> None:
        self.can_travel = False

    def advance(self, seconds: float) -> None:
        if self.can_travel:
            self.offset_seconds += seconds
        elif seconds <= REAL_TIME_MAX_ADVANCE_SECONDS:
            time.sleep(seconds)
        else:
            raise AssertionError(
                f"advancing a real-time clock by {seconds} s: mark the test time_travel"
            )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "time_travel: moves the contract clock further than a real-time backend can wait",
    )
    config.addinivalue_line(
        "markers",
        "sqs_deviation(reason): strict xfail on the sqs backend; the reason cites moto or AWS",
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sqlite_queues(tmp_path: Path, clock: Clock) -> Iterator[QueueBackend]:
    backend = SqliteQueues(tmp_path / "vaultq.db", clock=clock)
    yield backend
    backend.close()


@pytest.fixture
def sqs_queues(
    request: pytest.FixtureRequest, aws_endpoint: str, clock: Clock
) -> Iterator[QueueBackend]:
    deviation = request.node.get_closest_marker("sqs_deviation")
    if deviation is not None:
        request.applymarker(pytest.mark.xfail(reason=deviation.args[0], strict=True))
    clock.use_real_time()
    backend = SqsQueues(region=REGION, endpoint_url=aws_endpoint)
    yield backend
    backend.close()


@pytest.fixture(params=QUEUE_BACKENDS)
def queues(request: pytest.FixtureRequest, clock: Clock) -> QueueBackend:
    backend: QueueBackend = request.getfixturevalue(f"{request.param}_queues")
    travel = request.node.get_closest_marker("time_travel")
    if travel is not None and not clock.can_travel:
        pytest.skip(
            f"{request.param} runs on real time (its clock cannot be injected) and this test "
            f"moves time further than {REAL_TIME_MAX_ADVANCE_SECONDS:g} s at once"
        )
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
