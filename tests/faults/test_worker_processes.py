"""Worker processes under signals: SIGKILL loses nothing, SIGTERM drains, workers share."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.runtime.apps.behaviours import app
from tests.runtime.conftest import Effects, wait_for
from vaultq.queues import OutgoingMessage, SendEntry
from vaultq.queues.sqlite import SqliteQueues

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def setup(
    tmp_path: Path,
) -> Iterator[tuple[SqliteQueues, Effects, Callable[[], subprocess.Popen[str]]]]:
    db = tmp_path / "vaultq.db"
    queues = SqliteQueues(db)
    app.provision(queues)
    effects = Effects(tmp_path / "effects.db")
    env = {**os.environ, "VAULTQ_URL": f"sqlite:///{db}", "VAULTQ_TEST_EFFECTS": str(effects.path)}
    workers: list[subprocess.Popen[str]] = []

    def start_worker() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vaultq",
                "worker",
                "tests.runtime.apps.behaviours:app",
                "--handler",
                "steady",
            ],
            cwd=ROOT,
            env=env,
            text=True,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        workers.append(process)
        return process

    yield queues, effects, start_worker
    for process in workers:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    queues.close()


def send_items(queues: SqliteQueues, count: int, *, seconds: float = 0.0) -> set[str]:
    items = {f"m{i}" for i in range(count)}
    ordered = sorted(items)
    for start in range(0, count, 10):
        queues.send_batch(
            "steady",
            [
                SendEntry(
                    id=item,
                    message=OutgoingMessage(
                        body=json.dumps({"id": item, "do": "sleep", "n": seconds})
                    ),
                )
                for item in ordered[start : start + 10]
            ],
        )
    return items


def worker_pids(effects: Effects) -> set[int]:
    with sqlite3.connect(effects.path) as db:
        return {row[0] for row in db.execute("SELECT worker_pid FROM effects")}


def test_sigkill_of_a_worker_loses_no_message(setup) -> None:
    queues, effects, start_worker = setup
    items = send_items(queues, 6, seconds=0.5)
    first = start_worker()
    wait_for(lambda: effects.items("steady-start"))

    os.killpg(first.pid, signal.SIGKILL)  # the worker and its handler processes, mid-batch
    first.wait()
    start_worker()

    wait_for(lambda: set(effects.items("steady-done")) == items, timeout_seconds=60)
    wait_for(lambda: queues.stats("steady").in_flight == 0)
    assert queues.stats("steady").visible == 0


def test_sigterm_drains_the_running_batches_and_returns_the_rest(setup) -> None:
    queues, effects, start_worker = setup
    send_items(queues, 8, seconds=1.5)
    worker = start_worker()
    started = wait_for(lambda: effects.items("steady-start"))

    worker.send_signal(signal.SIGTERM)
    _, stderr = worker.communicate(timeout=30)

    assert worker.returncode == 0, stderr
    done = effects.items("steady-done")
    assert set(started) <= set(done), "batches already running finished"
    stats = queues.stats("steady")
    assert stats.in_flight == 0, "nothing is left leased by a stopped worker"
    assert stats.visible == 8 - len(done)


def polling(worker: subprocess.Popen[str]) -> None:
    """Return once ``worker`` says it polls: a worker still starting finds no backlog left."""
    assert worker.stderr is not None
    for line in worker.stderr:
        if "worker polling" in line:
            return
    raise AssertionError(f"the worker exited with {worker.wait()} before it polled")


def test_two_worker_processes_share_the_work(setup) -> None:
    queues, effects, start_worker = setup
    for worker in [start_worker(), start_worker()]:
        polling(worker)
    items = send_items(queues, 40, seconds=0.1)

    wait_for(lambda: set(effects.items("steady-done")) == items, timeout_seconds=60)

    assert len(worker_pids(effects)) == 2
    assert sorted(effects.items("steady-done")) == sorted(items), "each message handled once"
