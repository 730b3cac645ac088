"""A reference model of the SQS semantics every queue backend promises.

The model knows nothing of any backend; each rule in it is one the SQS developer guide
states. It keeps time in whole seconds, and every interval in it is half-open: a message
leased until ``t`` is visible again at ``t``, a deduplication id remembered until ``t`` no
longer matches at ``t``, and a message kept until ``t`` is gone at ``t``. Message ids,
receipt handles and sequence numbers are the backend's to choose; the model records them,
so a test can check that the backend answers with the ones SQS would.

Two choices SQS leaves open follow vaultq's contract: a receipt handle is stale once its
message was received again (SQS would accept it and do nothing), and a message moved to a
dead-letter queue starts a fresh receive count there, its dead-letter record keeping the
count it reached in its source queue.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

DEDUPLICATION_WINDOW_SECONDS = 5 * 60
DEFAULT_RETENTION_SECONDS = 4 * 24 * 60 * 60
MAX_RECEIVE_COUNT_EXCEEDED = "MAX_RECEIVE_COUNT_EXCEEDED"

#: What a receipt handle refers to: the message's latest lease, an earlier one, or nothing.
HandleState = Literal["current", "stale", "gone"]
#: What a visibility change does: what SQS answers for each handle state.
VisibilityOutcome = Literal["changed", "stale", "not_in_flight"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source_queue: str
    receive_count: int
    reason: str
    last_error: str | None
    moved_at: int


@dataclass(slots=True)
class Message:
    message_id: str
    body: str
    #: When it was sent; the retention clock, which a move to a standard dead-letter
    #: queue keeps running.
    sent_at: int
    visible_at: int
    group_id: str | None = None
    sequence_number: str | None = None
    receive_count: int = 0
    first_received_at: int | None = None
    receipt_handle: str | None = None
    #: The last failure (reason, error) a consumer reported with a visibility change.
    failure: tuple[str, str] | None = None
    dead_letter: DeadLetter | None = None

    def visible(self, now: int) -> bool:
        return self.visible_at <= now

    def in_flight(self, now: int) -> bool:
        return self.receive_count > 0 and not self.visible(now)

    def delayed(self, now: int) -> bool:
        return self.receive_count == 0 and not self.visible(now)


@dataclass(frozen=True, slots=True)
class Original:
    """The accepted send that a FIFO duplicate answers with."""

    message_id: str
    sequence_number: str | None
    expires_at: int


@dataclass(slots=True)
class Queue:
    name: str
    fifo: bool = False
    visibility_timeout_seconds: int = 30
    retention_seconds: int = DEFAULT_RETENTION_SECONDS
    dead_letter_queue: str | None = None
    max_receive_count: int = 0
    #: Live messages by id, in the order they arrived (a FIFO queue's order).
    messages: dict[str, Message] = field(default_factory=dict)
    #: Accepted FIFO sends by ``id:<deduplication id>``, or ``body:<body>`` when the send
    #: relied on content-based deduplication.
    deduplication: dict[str, Original] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Counts:
    visible: int
    in_flight: int
    delayed: int


@dataclass(slots=True)
class Model:
    queues: dict[str, Queue] = field(default_factory=dict)
    now: int = 0

    def add_queue(self, queue: Queue) -> None:
        self.queues[queue.name] = queue

    def advance(self, seconds: int) -> None:
        """Let time pass; messages past their queue's retention period are deleted."""
        self.now += seconds
        for queue in self.queues.values():
            queue.messages = {
                message_id: message
                for message_id, message in queue.messages.items()
                if self.now < message.sent_at + queue.retention_seconds
            }

    def original(self, queue: str, body: str, deduplication_id: str | None) -> Original | None:
        """The earlier send that a send to a FIFO queue duplicates: same deduplication id,
        or same body when none is given, within five minutes of the first."""
        target = self.queues[queue]
        if not target.fifo:
            return None
        found = target.deduplication.get(_deduplication_key(body, deduplication_id))
        return found if found is not None and self.now < found.expires_at else None

    def enqueue(
        self,
        queue: str,
        message_id: str,
        body: str,
        *,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        sequence_number: str | None = None,
        delay_seconds: int = 0,
    ) -> None:
        """Record an accepted (not duplicate) send."""
        target = self.queues[queue]
        target.messages[message_id] = Message(
            message_id=message_id,
            body=body,
            sent_at=self.now,
            visible_at=self.now + delay_seconds,
            group_id=group_id,
            sequence_number=sequence_number,
        )
        if target.fifo:
            key = _deduplication_key(body, deduplication_id)
            expires_at = self.now + DEDUPLICATION_WINDOW_SECONDS
            target.deduplication[key] = Original(message_id, sequence_number, expires_at)

    def receive(self, queue: str, max_messages: int) -> list[str]:
        """Start a receive: move what it would deliver over the redrive limit to the
        dead-letter queue, then answer what it may deliver. On a FIFO queue that is exactly
        the answer, in order; on a standard queue, which orders nothing, it is the set of
        visible messages that any answer must be drawn from."""
        source = self.queues[queue]
        if source.dead_letter_queue is not None:
            self._dead_letter_overdue(source, max_messages)
        if source.fifo:
            return _fifo_deliverable(source, self.now)[:max_messages]
        return [m.message_id for m in source.messages.values() if m.visible(self.now)]

    def mark_received(
        self,
        queue: str,
        message_id: str,
        receipt_handle: str,
        visibility_timeout_seconds: int | None,
    ) -> Message:
        """Record a delivery: one more receive, a new handle, a new lease."""
        source = self.queues[queue]
        message = source.messages[message_id]
        if visibility_timeout_seconds is None:
            visibility_timeout_seconds = source.visibility_timeout_seconds
        message.receive_count += 1
        if message.first_received_at is None:
            message.first_received_at = self.now
        message.visible_at = self.now + visibility_timeout_seconds
        message.receipt_handle = receipt_handle
        return message

    def handle_state(self, queue: str, message_id: str, receipt_handle: str) -> HandleState:
        message = self.queues[queue].messages.get(message_id)
        if message is None:
            return "gone"
        return "current" if message.receipt_handle == receipt_handle else "stale"

    def delete(self, queue: str, message_id: str, receipt_handle: str) -> HandleState:
        """Delete with the current handle; a stale handle is refused, and a handle of a
        message already gone (deleted, expired, dead-lettered) deletes nothing."""
        state = self.handle_state(queue, message_id, receipt_handle)
        if state == "current":
            del self.queues[queue].messages[message_id]
        return state

    def change_visibility(
        self,
        queue: str,
        message_id: str,
        receipt_handle: str,
        seconds: int,
        failure: tuple[str, str] | None = None,
    ) -> VisibilityOutcome:
        """Lease an in-flight message for ``seconds`` from now, keeping ``failure`` for its
        dead-letter record. Only the current handle of an in-flight message may."""
        state = self.handle_state(queue, message_id, receipt_handle)
        if state == "stale":
            return "stale"
        message = self.queues[queue].messages.get(message_id)
        if message is None or not message.in_flight(self.now):
            return "not_in_flight"
        message.visible_at = self.now + seconds
        if failure is not None:
            message.failure = failure
        return "changed"

    def counts(self, queue: str) -> Counts:
        messages = self.queues[queue].messages.values()
        return Counts(
            visible=sum(m.visible(self.now) for m in messages),
            in_flight=sum(m.in_flight(self.now) for m in messages),
            delayed=sum(m.delayed(self.now) for m in messages),
        )

    def _dead_letter_overdue(self, source: Queue, max_messages: int) -> None:
        """SQS moves a message received ``maxReceiveCount`` times to the dead-letter queue
        when a receive would deliver it again, instead of delivering it. A standard queue
        delivers in no set order, so the model knows which messages a receive would deliver
        only when it could deliver every message in the queue: then it is every visible one.
        """
        assert not source.fifo and max_messages >= len(source.messages), (
            "the model dead-letters only for a standard queue received with room for all"
        )
        assert source.dead_letter_queue is not None
        target = self.queues[source.dead_letter_queue]
        for message in list(source.messages.values()):
            if message.visible(self.now) and message.receive_count >= source.max_receive_count:
                del source.messages[message.message_id]
                reason, error = message.failure or (MAX_RECEIVE_COUNT_EXCEEDED, None)
                target.messages[message.message_id] = Message(
                    message_id=message.message_id,
                    body=message.body,
                    sent_at=message.sent_at,
                    visible_at=self.now,
                    group_id=message.group_id,
                    dead_letter=DeadLetter(
                        source_queue=source.name,
                        receive_count=message.receive_count,
                        reason=reason,
                        last_error=error,
                        moved_at=self.now,
                    ),
                )


def _fifo_deliverable(queue: Queue, now: int) -> list[str]:
    """FIFO delivery order: groups by their oldest message, each group's messages in order,
    as many of one group as possible before the next; a group with a message in flight
    delivers nothing."""
    groups: dict[str | None, list[Message]] = {}
    for message in queue.messages.values():
        groups.setdefault(message.group_id, []).append(message)
    return [
        message.message_id
        for group in groups.values()
        if not any(m.in_flight(now) for m in group)
        for message in itertools.takewhile(lambda m: m.visible(now), group)
    ]


def _deduplication_key(body: str, deduplication_id: str | None) -> str:
    return f"id:{deduplication_id}" if deduplication_id is not None else f"body:{body}"
