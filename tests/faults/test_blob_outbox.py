"""Upload events under crashes: a writer process dies at the worst moments, and after a
restart ``deliver_pending`` sends every event whose object is there. Nothing is lost."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

import pytest

from vaultq.blobs import BucketNotification, QueueNotifier
from vaultq.blobs.local import LocalBlobs
from vaultq.queues.sqlite import SqliteQueues

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SECRET = b"fault-suite-signing-secret-32byte"

# argv: root, queue database, mode. Modes:
#   loop         put objects until killed, printing each acknowledged key
#   before-send  die (os._exit) after the object and its event are committed, before the send
#   in-commit    die while the commit that would make the object visible is open
WRITER = textwrap.dedent("""
    import os
    import sys
    from vaultq.blobs import BucketNotification, QueueNotifier
    from vaultq.blobs.local import LocalBlobs
    from vaultq.queues.sqlite import SqliteQueues

    root, queue_db, mode = sys.argv[1:4]

    class CrashingNotifier(QueueNotifier):
        def messages_for(self, event):
            messages = super().messages_for(event)
            if mode == "in-commit":
                os._exit(3)
            return messages

        def send(self, message):
            if mode == "before-send":
                os._exit(3)
            super().send(message)

    notifications = {"inbox": [BucketNotification("uploads")]}
    notifier = CrashingNotifier(SqliteQueues(queue_db), notifications)
    store = LocalBlobs(root, signing_secret=SECRET, notifier=notifier)
    for i in range(1_000_000):
        key = f"tenant/{os.getpid()}/message {i}.bin"
        store.put("inbox", key, os.urandom(64 + i % 512))
        print(key, flush=True)
""").replace("SECRET", repr(SECRET))


def _prepare(tmp_path: Path) -> tuple[Path, Path]:
    root, queue_db = tmp_path / "blobs", tmp_path / "queues.db"
    queues = SqliteQueues(queue_db)
    queues.create_queue("uploads")
    queues.close()
    setup = LocalBlobs(root, signing_secret=SECRET)
    setup.create_bucket("inbox")
    setup.close()
    return root, queue_db


def _run_writer(root: Path, queue_db: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WRITER, str(root), str(queue_db), mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def closing() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


def _restart(
    closing: contextlib.ExitStack,
    root: Path,
    queue_db: Path,
    *,
    clock_offset_seconds: float = 0.0,
) -> tuple[LocalBlobs, SqliteQueues]:
    queues = SqliteQueues(queue_db)
    closing.callback(queues.close)
    notifier = QueueNotifier(queues, {"inbox": [BucketNotification("uploads")]})
    store = LocalBlobs(
        root,
        signing_secret=SECRET,
        notifier=notifier,
        clock=lambda: time.time() + clock_offset_seconds,
    )
    closing.callback(store.close)
    return store, queues


def _event_objects(queues: SqliteQueues) -> list[dict[str, object]]:
    objects = []
    while batch := queues.receive("uploads", max_messages=10, visibility_timeout_seconds=300):
        for message in batch:
            [record] = json.loads(message.body)["Records"]
            objects.append(record["s3"]["object"])
    return objects


def test_an_event_cut_off_before_its_send_is_delivered_after_restart(
    tmp_path: Path, closing: contextlib.ExitStack
) -> None:
    root, queue_db = _prepare(tmp_path)

    crashed = _run_writer(root, queue_db, "before-send")

    assert crashed.returncode == 3
    assert crashed.stdout == ""  # the put never returned
    store, queues = _restart(closing, root, queue_db)
    [info] = store.list("inbox").objects  # the object is there...
    assert queues.stats("uploads").visible == 0  # ...its event is not on the queue yet
    assert store.pending_count() == 1

    assert store.deliver_pending() == 1

    [event] = _event_objects(queues)
    assert unquote_plus(str(event["key"])) == info.key
    assert event["eTag"] == info.etag
    assert event["size"] == info.size_bytes
    assert store.pending_count() == 0


def test_a_crash_inside_the_commit_leaves_neither_object_nor_event(
    tmp_path: Path, closing: contextlib.ExitStack
) -> None:
    root, queue_db = _prepare(tmp_path)

    crashed = _run_writer(root, queue_db, "in-commit")

    assert crashed.returncode == 3
    store, queues = _restart(closing, root, queue_db, clock_offset_seconds=2 * 60 * 60)
    assert store.list("inbox").objects == ()
    assert store.pending_count() == 0
    assert store.deliver_pending() == 0
    assert queues.stats("uploads").visible == 0
    # The bytes were written before the crash; nothing refers to them, so they are collected.
    assert store.collect_garbage() == 1
    assert [p for p in (root / "inbox").rglob("*") if p.is_file()] == []


@pytest.mark.slow
def test_no_event_is_lost_when_the_writer_is_killed(
    tmp_path: Path, closing: contextlib.ExitStack
) -> None:
    root, queue_db = _prepare(tmp_path)
    acknowledged: list[str] = []
    for _ in range(3):  # kill at three different moments
        with subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(queue_db), "loop"],
            stdout=subprocess.PIPE,
            text=True,
        ) as writer:
            assert writer.stdout is not None
            acknowledged += [writer.stdout.readline().strip() for _ in range(50)]
            writer.send_signal(signal.SIGKILL)
            rest = writer.stdout.read()
            # A line cut by the kill is not an acknowledgement.
            acknowledged += rest.splitlines() if rest.endswith("\n") else rest.splitlines()[:-1]

    store, queues = _restart(closing, root, queue_db)
    store.deliver_pending()
    stored = set()
    cursor = None
    while True:
        page = store.list("inbox", cursor=cursor)
        stored |= {o.key for o in page.objects}
        if (cursor := page.next_cursor) is None:
            break
    notified = {unquote_plus(str(event["key"])) for event in _event_objects(queues)}

    assert set(acknowledged) <= stored
    assert stored <= notified
    assert store.pending_count() == 0


def test_the_commit_that_records_events_syncs_fully(
    tmp_path: Path, closing: contextlib.ExitStack
) -> None:
    store = LocalBlobs(tmp_path, signing_secret=SECRET)
    closing.callback(store.close)

    # 2 is FULL: the object and its outbox rows are on disk before put returns.
    assert store.connection_synchronous_modes() == {"write": 2, "clear": 1, "read": 1}
