"""Idempotent handlers under a real worker: duplicates cause one side effect in total.

The handlers run in the worker's handler processes and open the idempotency store from
VAULTQ_URL there; it shares the database file with the queues.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import pytest

from tests.runtime.apps.idempotent_app import app
from tests.runtime.conftest import wait_for
from vaultq.queues import OutgoingMessage
from vaultq.queues.sqlite import SqliteQueues
from vaultq.runtime.worker import Worker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.runtime.conftest import Effects

APP_PATH = "tests.runtime.apps.idempotent_app:app"
ORDER_BODY = json.dumps({"order_id": "o-42", "amount_cents": 1999})


class Log:
    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self, kind: str) -> list[tuple[str, int, Any, float]]:
        """(message id, receive count, result, time) of each ``kind`` row, in order."""
        if not self.path.exists():
            return []
        with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as db:
            try:
                found = db.execute(
                    "SELECT message_id, receive_count, result, at FROM idempotency_log"
                    " WHERE kind = ? ORDER BY rowid",
                    (kind,),
                ).fetchall()
            except sqlite3.OperationalError:
                return []
        return [(m, count, json.loads(result), at) for m, count, result, at in found]


@pytest.fixture
def log(effects: Effects) -> Log:
    return Log(effects.path)


@pytest.fixture
def order_queues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqliteQueues]:
    database = tmp_path / "vaultq.db"
    monkeypatch.setenv("VAULTQ_URL", f"sqlite:///{database}")
    monkeypatch.setenv("IDEMPOTENT_APP_RELEASE", str(tmp_path / "release"))
    backend = SqliteQueues(database)
    app.provision(backend)
    yield backend
    backend.close()


@pytest.fixture
def start_worker(order_queues: SqliteQueues) -> Iterator[Callable[[str], Worker]]:
    started: list[tuple[Worker, threading.Thread]] = []

    def start(handler: str) -> Worker:
        running = Worker(app, app_path=APP_PATH, queues=order_queues, handlers=[handler])
        thread = threading.Thread(target=running.run, daemon=True)
        thread.start()
        started.append((running, thread))
        return running

    yield start
    for running, thread in started:
        running.stop()
        thread.join(timeout=30)


def send_order(queues: SqliteQueues, queue: str) -> str:
    return queues.send(queue, OutgoingMessage(body=ORDER_BODY)).message_id


def drained(queues: SqliteQueues, queue: str) -> bool:
    stats = queues.stats(queue)
    return stats.visible == 0 and stats.in_flight == 0 and stats.delayed == 0


def test_a_message_sent_twice_is_charged_once_and_both_get_the_result(
    order_queues: SqliteQueues, log: Log, start_worker: Callable[[str], Worker]
) -> None:
    first = send_order(order_queues, "orders")
    second = send_order(order_queues, "orders")

    start_worker("orders")
    answers = wait_for(lambda: len(log.rows("answered")) == 2 and log.rows("answered"))

    assert [m for m, *_ in log.rows("charged")] == [first]
    assert [(m, result["charged_by"]) for m, _, result, _ in answers] == [
        (first, first),
        (second, first),
    ], "the duplicate got the stored result of the first charge"
    wait_for(lambda: drained(order_queues, "orders"))


def test_a_duplicate_during_the_first_attempt_is_retried_then_gets_the_stored_result(
    order_queues: SqliteQueues, log: Log, start_worker: Callable[[str], Worker], tmp_path: Path
) -> None:
    first = send_order(order_queues, "slow-orders")
    start_worker("slow_orders")
    wait_for(lambda: log.rows("charged"))  # the first attempt is running

    second = send_order(order_queues, "slow-orders")
    [(turned_away, count, _, _)] = wait_for(lambda: log.rows("in-progress")[:1])
    (tmp_path / "release").touch()
    answers = wait_for(lambda: len(log.rows("answered")) == 2 and log.rows("answered"))

    assert (turned_away, count) == (second, 1)
    assert [m for m, *_ in log.rows("charged")] == [first], "one side effect in total"
    by_message = {m: (count, result) for m, count, result, _ in answers}
    assert by_message[first][0] == 1
    assert by_message[second][0] >= 2, "answered on a later receive, after its back-off"
    assert by_message[second][1] == by_message[first][1]
    wait_for(lambda: drained(order_queues, "slow-orders"))


def test_a_killed_attempts_claim_lapses_at_its_deadline_and_a_retry_completes(
    order_queues: SqliteQueues, log: Log, start_worker: Callable[[str], Worker]
) -> None:
    message = send_order(order_queues, "crashy-orders")

    start_worker("crashy_orders")
    [(_, count, result, _)] = wait_for(lambda: log.rows("answered"))

    [killed, retried] = log.rows("charged")
    assert (killed[0], killed[1]) == (message, 1)
    assert retried[1] == count > 1
    claim_lapsed_at = killed[3] + killed[2]["remaining_ms"] / 1000
    assert retried[3] >= claim_lapsed_at - 0.05, "no retry ran while the claim was live"
    assert result == retried[2]
    wait_for(lambda: drained(order_queues, "crashy-orders"))
