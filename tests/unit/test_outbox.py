"""The send outbox's contract, on every backend: what the API and the pump rely on."""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from vaultq.outbox import Outbox, PendingSend
from vaultq.outbox.dynamodb import DynamoOutbox
from vaultq.outbox.sqlite import SqliteOutbox

from ..state_fixtures import REGION, dynamodb_client_fixture, state_table_fixture  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

START_SECONDS = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = START_SECONDS

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "dynamodb"])
def open_outbox(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[Callable[[], Outbox]]:
    """Opens another outbox on the same storage, as another process would."""
    opened: list[Outbox] = []

    def open_one() -> Outbox:
        outbox: Outbox
        if request.param == "sqlite":
            outbox = SqliteOutbox(tmp_path / "vaultq.db", clock=clock)
        else:
            table: str = request.getfixturevalue("state_table")
            client: Any = request.getfixturevalue("dynamodb_client")
            outbox = DynamoOutbox(region=REGION, table=table, client=client, clock=clock)
        opened.append(outbox)
        return outbox

    yield open_one
    for outbox in opened:
        outbox.close()


def send(queue: str = "orders", **fields: Any) -> PendingSend:
    return PendingSend(id=uuid.uuid4().hex, queue=queue, body='{"n":1}', **fields)


def test_an_added_send_is_claimed_by_nobody_until_its_claim_lapses(
    open_outbox: Callable[[], Outbox], clock: FakeClock
) -> None:
    outbox = open_outbox()
    outbox.add(send(), claim_seconds=30)

    assert outbox.claim_due(limit=10, claim_seconds=30) == []
    clock.now += 30
    assert len(outbox.claim_due(limit=10, claim_seconds=30)) == 1
    assert outbox.count() == 1


def test_a_claimed_send_reads_back_whole_and_counts_its_attempts(
    open_outbox: Callable[[], Outbox], clock: FakeClock
) -> None:
    outbox = open_outbox()
    stored = send(
        "orders.fifo",
        attributes={"vaultq-job": "t#c#j", "tenant": "t"},
        group_id="t.c",
        deduplication_id="d-1",
    )
    outbox.add(stored, claim_seconds=1)
    clock.now += 1

    [claimed] = outbox.claim_due(limit=10, claim_seconds=5)
    clock.now += 5
    [again] = open_outbox().claim_due(limit=10, claim_seconds=5)

    assert (claimed.id, claimed.queue, claimed.body) == (stored.id, stored.queue, stored.body)
    assert dict(claimed.attributes) == {"vaultq-job": "t#c#j", "tenant": "t"}
    assert (claimed.group_id, claimed.deduplication_id) == ("t.c", "d-1")
    assert (claimed.attempts, again.attempts) == (2, 3)


def test_due_sends_are_claimed_oldest_first_up_to_the_limit(
    open_outbox: Callable[[], Outbox], clock: FakeClock
) -> None:
    outbox = open_outbox()
    added = []
    for _ in range(12):  # more than the index's shards: order holds across them
        added.append(send())
        outbox.add(added[-1], claim_seconds=0)
        clock.now += 0.01

    first = outbox.claim_due(limit=5, claim_seconds=60)
    rest = outbox.claim_due(limit=100, claim_seconds=60)

    assert [s.id for s in first + rest] == [s.id for s in added]


def test_a_removed_send_is_gone_and_removing_twice_is_harmless(
    open_outbox: Callable[[], Outbox], clock: FakeClock
) -> None:
    outbox = open_outbox()
    kept, sent = send(), send()
    outbox.add(kept, claim_seconds=0)
    outbox.add(sent, claim_seconds=0)

    outbox.remove(sent.id)
    outbox.remove(sent.id)

    assert outbox.count() == 1
    assert [s.id for s in outbox.claim_due(limit=10, claim_seconds=60)] == [kept.id]


def test_two_drains_racing_never_claim_one_send_twice(
    open_outbox: Callable[[], Outbox], clock: FakeClock
) -> None:
    outboxes = [open_outbox(), open_outbox()]
    for _ in range(20):
        outboxes[0].add(send(), claim_seconds=0)
    start = threading.Barrier(2)
    claimed: list[list[str]] = [[], []]

    def drain(index: int) -> None:
        start.wait()
        claimed[index] = [s.id for s in outboxes[index].claim_due(limit=20, claim_seconds=60)]

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(claimed[0]) + len(claimed[1]) == 20
    assert set(claimed[0]).isdisjoint(claimed[1])
