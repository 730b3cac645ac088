"""Stateful tests: random operations on a backend and on a model of SQS must agree.

Three machines share the rules that act on receipt handles and time, and each adds the sends
and receives of its queues: a standard queue that keeps messages 600 s, a FIFO queue with
content-based deduplication, and a standard queue that dead-letters after two receives, with
its dead-letter queue. SQS queues interact only through redrive, so testing them apart loses
nothing and lets each run spend its steps on one queue's states. Handles are used current,
stale and after their message is gone; the clock moves up to 400 s at a time, so visibility
timeouts, the five-minute deduplication window and the retention period all run out.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from vaultq import errors
from vaultq.queues import (
    Failure,
    FailureReason,
    OutgoingMessage,
    QueueAttributes,
    QueueBackend,
    ReceivedMessage,
    RedrivePolicy,
    SendEntry,
    SendResult,
)

from .conftest import Clock
from .sqs_model import Message, Model, Queue

RETENTION_SECONDS = 600
MAX_RECEIVE_COUNT = 2
#: The redrive queue holds at most this many messages and is always received with room for
#: all of them; ``Model._dead_letter_overdue`` says why.
REDRIVE_QUEUE_CAPACITY = 10

# Bodies of one or two letters from two, so content-based deduplication often matches.
BODIES = st.text(alphabet="ab", min_size=1, max_size=2)
STANDARD_MESSAGES = st.builds(
    OutgoingMessage, body=BODIES, delay_seconds=st.none() | st.integers(0, 60)
)
FIFO_MESSAGES = st.builds(
    OutgoingMessage,
    body=BODIES,
    group_id=st.sampled_from(["g1", "g2", "g3"]),
    deduplication_id=st.none() | st.sampled_from(["d1", "d2", "d3"]),
)
MAX_MESSAGES = st.integers(1, 10)
VISIBILITY_SECONDS = st.none() | st.integers(0, 120)
# Zero often: giving a message back at once is what a failing consumer does.
VISIBILITY_CHANGE_SECONDS = st.just(0) | st.integers(0, 120)
# Short steps keep leases alive across several operations; long ones cross the five-minute
# deduplication window and, two or three together, the 600 s retention period.
ADVANCE_SECONDS = st.integers(0, 30) | st.integers(31, 400)
FAILURES = st.none() | st.builds(
    Failure,
    reason=st.sampled_from([FailureReason.HANDLER_ERROR, FailureReason.TIMEOUT]),
    error=st.sampled_from(["boom", "timed out"]),
)


@dataclass(frozen=True, slots=True)
class Lease:
    queue: str
    message_id: str
    receipt_handle: str


@settings(max_examples=150, stateful_step_count=40, deadline=None)
class QueueModelMachine(RuleBasedStateMachine):
    """The rules every queue shares. Subclasses name their queues and add their sends and
    receives; a test binds ``backend`` and its ``clock``."""

    backend: QueueBackend
    clock: Clock
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.epoch_ms = int(self.clock() * 1000)
        self.prefix = f"model-{uuid.uuid4().hex[:12]}"
        self.names: list[str] = []
        self.sent_ids: set[str] = set()
        self.last_sequence = 0

    def create(self, queue: Queue) -> str:
        redrive = None
        if queue.dead_letter_queue is not None:
            redrive = RedrivePolicy(
                dead_letter_queue=queue.dead_letter_queue, max_receive_count=queue.max_receive_count
            )
        self.backend.create_queue(
            queue.name,
            QueueAttributes(
                fifo=queue.fifo,
                content_based_deduplication=queue.fifo,
                visibility_timeout_seconds=queue.visibility_timeout_seconds,
                message_retention_seconds=queue.retention_seconds,
                redrive_policy=redrive,
            ),
        )
        self.model.add_queue(queue)
        self.names.append(queue.name)
        return queue.name

    def teardown(self) -> None:
        for name in self.names:
            self.backend.delete_queue(name)

    @rule(lease=leases)
    def delete(self, lease: Lease) -> None:
        state = self.model.delete(lease.queue, lease.message_id, lease.receipt_handle)
        if state == "stale":
            with pytest.raises(errors.StaleReceiptHandle):
                self.backend.delete(lease.queue, lease.receipt_handle)
        else:
            self.backend.delete(lease.queue, lease.receipt_handle)

    @rule(lease=leases, seconds=VISIBILITY_CHANGE_SECONDS, failure=FAILURES)
    def change_visibility(self, lease: Lease, seconds: int, failure: Failure | None) -> None:
        outcome = self.model.change_visibility(
            lease.queue,
            lease.message_id,
            lease.receipt_handle,
            seconds,
            None if failure is None else (failure.reason, failure.error),
        )
        expected_error: type[errors.VaultqError] | None = {
            "changed": None,
            "stale": errors.StaleReceiptHandle,
            "not_in_flight": errors.MessageNotInflight,
        }[outcome]
        if expected_error is None:
            self.backend.change_visibility(
                lease.queue,
                lease.receipt_handle,
                visibility_timeout_seconds=seconds,
                failure=failure,
            )
            return
        with pytest.raises(expected_error):
            self.backend.change_visibility(
                lease.queue,
                lease.receipt_handle,
                visibility_timeout_seconds=seconds,
                failure=failure,
            )

    @rule(seconds=ADVANCE_SECONDS)
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.model.advance(seconds)

    @invariant()
    def counts_agree(self) -> None:
        for name in self.names:
            stats = self.backend.stats(name)
            expected = self.model.counts(name)
            assert (stats.visible, stats.in_flight, stats.delayed) == (
                expected.visible,
                expected.in_flight,
                expected.delayed,
            ), f"visible, in flight, delayed in {name}"

    # -- shared checks --------------------------------------------------------------------

    def send_and_check(self, queue: str, messages: list[OutgoingMessage]) -> None:
        """Send one message alone or several as a batch; check each answer."""
        if len(messages) == 1:
            results = [self.backend.send(queue, messages[0])]
        else:
            entries = [SendEntry(id=f"e{i}", message=m) for i, m in enumerate(messages)]
            batch = self.backend.send_batch(queue, entries)
            assert not batch.failed
            assert set(batch.successful) == {entry.id for entry in entries}
            results = [batch.successful[entry.id] for entry in entries]
        for message, result in zip(messages, results, strict=True):  # in order, as SQS
            self._check_send(queue, message, result)

    def _check_send(self, queue: str, message: OutgoingMessage, sent: SendResult) -> None:
        original = self.model.original(queue, message.body, message.deduplication_id)
        if original is not None:
            assert (sent.message_id, sent.sequence_number) == (
                original.message_id,
                original.sequence_number,
            ), "a duplicate within five minutes answers with the original send"
            return
        assert sent.message_id not in self.sent_ids, "a new message has a new id"
        self.sent_ids.add(sent.message_id)
        if self.model.queues[queue].fifo:
            assert sent.sequence_number is not None
            assert int(sent.sequence_number) > self.last_sequence
            self.last_sequence = int(sent.sequence_number)
        else:
            assert sent.sequence_number is None
        self.model.enqueue(
            queue,
            sent.message_id,
            message.body,
            group_id=message.group_id,
            deduplication_id=message.deduplication_id,
            sequence_number=sent.sequence_number,
            delay_seconds=message.delay_seconds or 0,
        )

    def receive_and_check(
        self, queue: str, max_messages: int, visibility_seconds: int | None
    ) -> MultipleResults[Lease]:
        deliverable = self.model.receive(queue, max_messages)
        received = self.backend.receive(
            queue,
            max_messages=max_messages,
            wait_seconds=0,
            visibility_timeout_seconds=visibility_seconds,
        )
        ids = [m.message_id for m in received]
        if self.model.queues[queue].fifo:
            assert ids == deliverable, "FIFO delivers exactly these, in this order"
        else:
            assert len(set(ids)) == len(ids) <= max_messages
            assert set(ids) <= set(deliverable), "only visible messages are delivered"
            assert ids or not deliverable, "a visible message is delivered"
        for message in received:
            expected = self.model.mark_received(
                queue, message.message_id, message.receipt_handle, visibility_seconds
            )
            assert _observed(message) == self._predicted(expected)
        return multiple(*(Lease(queue, m.message_id, m.receipt_handle) for m in received))

    def _predicted(self, message: Message) -> dict[str, object]:
        record = message.dead_letter
        assert message.first_received_at is not None
        return {
            "body": message.body,
            "group_id": message.group_id,
            "sequence_number": message.sequence_number,
            "receive_count": message.receive_count,
            "sent_at_ms": self._ms(message.sent_at),
            "first_received_at_ms": self._ms(message.first_received_at),
            "dead_letter": None
            if record is None
            else (
                record.source_queue,
                record.receive_count,
                record.reason,
                record.last_error,
                self._ms(record.moved_at),
            ),
        }

    def _ms(self, seconds: int) -> int:
        return self.epoch_ms + seconds * 1000


def _observed(message: ReceivedMessage) -> dict[str, object]:
    record = message.dead_letter
    return {
        "body": message.body,
        "group_id": message.group_id,
        "sequence_number": message.sequence_number,
        "receive_count": message.receive_count,
        "sent_at_ms": message.sent_at_ms,
        "first_received_at_ms": message.first_received_at_ms,
        "dead_letter": None
        if record is None
        else (
            record.source_queue,
            record.receive_count,
            record.reason,
            record.last_error,
            record.moved_at_ms,
        ),
    }


class StandardQueueMachine(QueueModelMachine):
    """Visibility, delays, deletes and retention on a standard queue."""

    def __init__(self) -> None:
        super().__init__()
        self.queue = self.create(Queue(name=self.prefix, retention_seconds=RETENTION_SECONDS))

    @rule(messages=st.lists(STANDARD_MESSAGES, min_size=1, max_size=4))
    def send(self, messages: list[OutgoingMessage]) -> None:
        self.send_and_check(self.queue, messages)

    @rule(
        target=QueueModelMachine.leases,
        max_messages=MAX_MESSAGES,
        visibility_seconds=VISIBILITY_SECONDS,
    )
    def receive(self, max_messages: int, visibility_seconds: int | None) -> MultipleResults[Lease]:
        return self.receive_and_check(self.queue, max_messages, visibility_seconds)


class FifoQueueMachine(QueueModelMachine):
    """Order, group blocking and deduplication on a FIFO queue."""

    def __init__(self) -> None:
        super().__init__()
        self.queue = self.create(Queue(name=f"{self.prefix}.fifo", fifo=True))

    @rule(messages=st.lists(FIFO_MESSAGES, min_size=1, max_size=4))
    def send(self, messages: list[OutgoingMessage]) -> None:
        self.send_and_check(self.queue, messages)

    @rule(
        target=QueueModelMachine.leases,
        max_messages=MAX_MESSAGES,
        visibility_seconds=VISIBILITY_SECONDS,
    )
    def receive(self, max_messages: int, visibility_seconds: int | None) -> MultipleResults[Lease]:
        return self.receive_and_check(self.queue, max_messages, visibility_seconds)


class RedriveMachine(QueueModelMachine):
    """Dead-lettering after ``max_receive_count`` receives, and the dead-letter queue."""

    def __init__(self) -> None:
        super().__init__()
        self.dead_letter_queue = self.create(Queue(name=f"{self.prefix}-dlq"))
        self.source = self.create(
            Queue(
                name=self.prefix,
                dead_letter_queue=self.dead_letter_queue,
                max_receive_count=MAX_RECEIVE_COUNT,
            )
        )

    def room(self) -> int:
        return REDRIVE_QUEUE_CAPACITY - len(self.model.queues[self.source].messages)

    @precondition(lambda self: self.room() > 0)
    @rule(messages=st.lists(STANDARD_MESSAGES, min_size=1, max_size=4))
    def send(self, messages: list[OutgoingMessage]) -> None:
        self.send_and_check(self.source, messages[: self.room()])

    @rule(target=QueueModelMachine.leases, visibility_seconds=VISIBILITY_SECONDS)
    def receive(self, visibility_seconds: int | None) -> MultipleResults[Lease]:
        return self.receive_and_check(self.source, REDRIVE_QUEUE_CAPACITY, visibility_seconds)

    @rule(
        target=QueueModelMachine.leases,
        max_messages=MAX_MESSAGES,
        visibility_seconds=VISIBILITY_SECONDS,
    )
    def receive_dead_letters(
        self, max_messages: int, visibility_seconds: int | None
    ) -> MultipleResults[Lease]:
        return self.receive_and_check(self.dead_letter_queue, max_messages, visibility_seconds)


@pytest.fixture
def stopped_clock(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The contract clock with wall time stopped at a whole second. The model counts whole
    seconds, so time must move only when a rule moves it: a millisecond of wall time at a
    visibility or deduplication boundary would make the two disagree."""
    stopped_at = float(int(time.time()))
    monkeypatch.setattr(Clock, "__call__", lambda self: stopped_at + self.offset_seconds)
    return clock


# The machines move the clock by up to 400 s a step, so backends on real time skip them.
@pytest.mark.time_travel
@pytest.mark.parametrize("machine", [StandardQueueMachine, FifoQueueMachine, RedriveMachine])
def test_backend_agrees_with_the_sqs_model(
    queues: QueueBackend, stopped_clock: Clock, machine: type[QueueModelMachine]
) -> None:
    bound = type(machine.__name__, (machine,), {"backend": queues, "clock": stopped_clock})
    run_state_machine_as_test(bound, settings=QueueModelMachine.TestCase.settings)
