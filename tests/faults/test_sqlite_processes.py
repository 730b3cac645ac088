"""The embedded backend under real processes: kill -9, shared databases, durable sends."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from typing import TYPE_CHECKING

from vaultq.queues import OutgoingMessage, SendEntry
from vaultq.queues.sqlite import SqliteQueues
from vaultq.wiring import open_jobs

if TYPE_CHECKING:
    from pathlib import Path

SENDER = textwrap.dedent("""
    import sys
    from vaultq.queues import OutgoingMessage
    from vaultq.queues.sqlite import SqliteQueues
    queues = SqliteQueues(sys.argv[1])
    for i in range(1_000_000):
        sent = queues.send("q", OutgoingMessage(body=f"m{i}"))
        print(sent.message_id, flush=True)
""")

CONSUMER = textwrap.dedent("""
    import pathlib
    import sys
    import time
    from vaultq.queues import DeleteEntry
    from vaultq.queues.sqlite import SqliteQueues
    queues, go = SqliteQueues(sys.argv[1]), pathlib.Path(sys.argv[2])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    while batch := queues.receive("q", max_messages=10, wait_seconds=1,
                                  visibility_timeout_seconds=300):
        for message in batch:
            print(message.body, flush=True)
        time.sleep(0.005)  # some work, so that no one process drains the backlog alone
        queues.delete_batch("q", [DeleteEntry(id=str(i), receipt_handle=m.receipt_handle)
                                  for i, m in enumerate(batch)])
""")


def test_every_connection_that_commits_sends_syncs_fully(tmp_path: Path) -> None:
    full = SqliteQueues(tmp_path / "full.db")
    process = SqliteQueues(tmp_path / "process.db", durability="process")

    # 2 is FULL (fsync on every commit), 1 is NORMAL (WAL is synced at checkpoints).
    assert full.connection_synchronous_modes() == {"send": 2, "ack": 1, "read": 1}
    assert process.connection_synchronous_modes()["send"] == 1
    full.close()
    process.close()


def test_only_a_worker_s_job_updates_skip_the_fsync(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/vaultq.db"
    api, worker = open_jobs(url), open_jobs(url, durable_updates=False)

    # Creations (what the API promised a caller) are FULL everywhere; a worker's updates are
    # NORMAL: a power cut loses only the newest, with the deletes after them.
    assert api.connection_synchronous_modes() == {"create": 2, "update": 2}  # type: ignore[attr-defined]
    assert worker.connection_synchronous_modes() == {"create": 2, "update": 1}  # type: ignore[attr-defined]
    api.close()
    worker.close()


def test_acknowledged_sends_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "vaultq.db"
    setup = SqliteQueues(db)
    setup.create_queue("q")
    setup.close()
    with subprocess.Popen(
        [sys.executable, "-c", SENDER, str(db)], stdout=subprocess.PIPE, text=True
    ) as sender:
        assert sender.stdout is not None
        acknowledged = [sender.stdout.readline().strip() for _ in range(200)]
        sender.send_signal(signal.SIGKILL)
        acknowledged += sender.stdout.read().split()

    queues = SqliteQueues(db)
    stored = set()
    while batch := queues.receive("q", max_messages=10, visibility_timeout_seconds=300):
        stored |= {m.message_id for m in batch}
    queues.close()
    assert set(acknowledged) <= stored
    assert len(acknowledged) >= 200


def test_concurrent_sends_share_commits(tmp_path: Path) -> None:
    queues = SqliteQueues(tmp_path / "vaultq.db")
    queues.create_queue("q")
    sent: list[str] = []

    def send_many() -> None:
        for i in range(50):
            sent.append(queues.send("q", OutgoingMessage(body=str(i))).message_id)

    threads = [threading.Thread(target=send_many) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(sent)) == 32 * 50
    assert queues.stats("q").visible == 32 * 50
    assert queues.send_commits < 32 * 50
    queues.close()


def test_consumer_processes_share_a_backlog_without_duplicates(tmp_path: Path) -> None:
    db = tmp_path / "vaultq.db"
    queues = SqliteQueues(db)
    queues.create_queue("q")
    go = tmp_path / "go"
    consumers = [
        subprocess.Popen(
            [sys.executable, "-c", CONSUMER, str(db), str(go)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    expected = set()
    for start in range(0, 2000, 10):
        bodies = [f"m{i}" for i in range(start, start + 10)]
        queues.send_batch("q", [SendEntry(id=b, message=OutgoingMessage(body=b)) for b in bodies])
        expected |= set(bodies)
    for consumer in consumers:
        assert consumer.stdout is not None
        assert consumer.stdout.readline().strip() == "ready"
    # Both are up, however long their start took, and the whole backlog waits: an empty
    # receive now means it is drained, not that the sender fell behind.
    go.touch()

    outputs = [consumer.communicate(timeout=60)[0].split() for consumer in consumers]

    received = outputs[0] + outputs[1]
    assert sorted(received) == sorted(expected)
    assert all(outputs), "both processes took part"
    assert queues.stats("q").visible == 0
    queues.close()
