from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.runtime.apps.behaviours import EFFECTS_SCHEMA, app
from vaultq.queues import OutgoingMessage
from vaultq.queues.sqlite import SqliteQueues
from vaultq.runtime.worker import Worker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

APP_PATH = "tests.runtime.apps.behaviours:app"


class Effects:
    """Side effects the test apps' handlers wrote down, read back across processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Created up front, so concurrent handler processes never race to create it.
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(EFFECTS_SCHEMA)

    def rows(self, handler: str) -> list[tuple[str, str, int]]:
        if not self.path.exists():
            return []
        with sqlite3.connect(self.path, timeout=30) as db:
            try:
                return db.execute(
                    "SELECT message_id, item, receive_count FROM effects WHERE handler = ?"
                    " ORDER BY rowid",
                    (handler,),
                ).fetchall()
            except sqlite3.OperationalError:
                return []

    def items(self, handler: str) -> list[str]:
        return [item for _, item, _ in self.rows(handler)]


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Effects:
    path = tmp_path / "effects.db"
    monkeypatch.setenv("VAULTQ_TEST_EFFECTS", str(path))
    return Effects(path)


@pytest.fixture
def queues(tmp_path: Path) -> Iterator[SqliteQueues]:
    backend = SqliteQueues(tmp_path / "vaultq.db")
    app.provision(backend)
    yield backend
    backend.close()


@pytest.fixture
def worker(queues: SqliteQueues, effects: Effects) -> Iterator[Callable[..., Worker]]:
    started: list[tuple[Worker, threading.Thread]] = []

    def start(*handlers: str) -> Worker:
        running = Worker(app, app_path=APP_PATH, queues=queues, handlers=list(handlers) or None)
        thread = threading.Thread(target=running.run, daemon=True)
        thread.start()
        started.append((running, thread))
        return running

    yield start
    for running, thread in started:
        running.stop()
        thread.join(timeout=30)


def send(queues: SqliteQueues, queue: str, item: str, do: str = "ok", **extra: Any) -> str:
    body = json.dumps({"id": item, "do": do, **extra})
    group = {"group_id": extra.pop("group", "g")} if queue.endswith(".fifo") else {}
    return queues.send(queue, OutgoingMessage(body=body, **group)).message_id


def wait_for(probe: Callable[[], Any], *, timeout_seconds: float = 60.0) -> Any:
    """``probe()`` once it is truthy. The deadline is generous, as a loaded CI machine can
    take tens of seconds to start handler processes; the wait ends as soon as it holds."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_seconds} s")
        time.sleep(0.05)
