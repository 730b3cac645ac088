"""Group commit of the embedded stores: concurrent durable writes share commits, each write
succeeds or fails on its own, and an acknowledged write survives kill -9."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from typing import TYPE_CHECKING

import pytest

from vaultq import _sqlite, errors
from vaultq.jobs import JobKey, JobStatus
from vaultq.jobs.sqlite import SqliteJobs
from vaultq.outbox.protocol import PendingSend
from vaultq.outbox.sqlite import SqliteOutbox

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

CREATOR = textwrap.dedent("""
    import sys, threading, uuid
    from vaultq.jobs import JobKey
    from vaultq.jobs.sqlite import SqliteJobs
    jobs = SqliteJobs(sys.argv[1])
    printing = threading.Lock()  # print writes a line's text and its end apart
    def create_forever():
        while True:
            key = JobKey(tenant_id="t", client_id="c", job_id=uuid.uuid4().hex)
            jobs.create(key)
            with printing:
                print(key.job_id, flush=True)
    for _ in range(8):
        threading.Thread(target=create_forever, daemon=True).start()
    threading.Event().wait()
""")

INTERRUPTED_WAITER = textwrap.dedent("""
    import os, signal, sys, threading, time
    from vaultq import _sqlite
    path = sys.argv[1]
    conn = _sqlite.connect(path, synchronous="NORMAL")
    conn.execute("CREATE TABLE t (v TEXT)")
    group = _sqlite.GroupCommit(conn, _sqlite.write_lock(path))
    committing, go_on = threading.Event(), threading.Event()

    def slow(c):
        committing.set()
        go_on.wait()
        c.execute("INSERT INTO t VALUES ('led')")

    leader = threading.Thread(target=group.run, args=(slow,))
    leader.start()
    committing.wait()

    class Interrupted(Exception):
        pass

    def interrupt(*_):
        raise Interrupted

    def interrupt_the_waiter():
        while not group._queued:  # the main thread's write waits behind the slow one
            time.sleep(0.01)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGUSR1)

    signal.signal(signal.SIGUSR1, interrupt)
    threading.Thread(target=interrupt_the_waiter).start()
    try:
        group.run(lambda c: c.execute("INSERT INTO t VALUES ('interrupted')"))
    except Interrupted:
        pass
    go_on.set()
    leader.join()
    group.run(lambda c: c.execute("INSERT INTO t VALUES ('after')"))
    print(sorted(v for (v,) in conn.execute("SELECT v FROM t")))
""")


def in_threads(count: int, work: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_concurrent_writes_share_commits_and_a_failing_one_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    conn = _sqlite.connect(path, synchronous="FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    group = _sqlite.GroupCommit(conn, _sqlite.write_lock(path))
    failures: list[BaseException] = []

    def insert(i: int) -> None:
        for j in range(25):
            row = -1 if j == 10 else i * 100 + j  # every thread inserts -1 once: one wins
            try:
                group.run(lambda c, row=row: c.execute("INSERT INTO t VALUES (?)", (row,)))
            except errors.BackendUnavailable as exc:
                failures.append(exc)

    in_threads(16, insert)

    [[count]] = sqlite3.connect(path).execute("SELECT count(*) FROM t").fetchall()
    assert count == 16 * 24 + 1
    assert len(failures) == 15
    assert group.commits < 16 * 25
    conn.close()


def test_concurrent_creates_of_one_key_make_one_job_and_the_others_all_exist(
    tmp_path: Path,
) -> None:
    jobs = SqliteJobs(tmp_path / "vaultq.db")
    same = JobKey(tenant_id="t", client_id="c", job_id="same")
    won: list[int] = []
    refused: list[int] = []
    made: list[JobKey] = []

    def create(i: int) -> None:
        try:
            jobs.create(same, attributes={"by": i})
            won.append(i)
        except errors.JobAlreadyExists:
            refused.append(i)
        for _ in range(10):
            key = JobKey(tenant_id="t", client_id="c", job_id=uuid.uuid4().hex)
            jobs.create(key)
            made.append(key)

    in_threads(16, create)

    assert len(won) == 1
    assert len(refused) == 15
    found = jobs.get(same)
    assert found is not None
    assert found.attributes == {"by": won[0]}
    assert all(
        (job := jobs.get(key)) is not None and job.status is JobStatus.QUEUED for key in made
    )
    assert len(made) == 160
    jobs.close()


def test_acknowledged_creates_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "vaultq.db"
    SqliteJobs(db).close()
    with subprocess.Popen(
        [sys.executable, "-c", CREATOR, str(db)], stdout=subprocess.PIPE, text=True
    ) as creator:
        assert creator.stdout is not None
        acknowledged = [creator.stdout.readline().strip() for _ in range(200)]
        creator.send_signal(signal.SIGKILL)
        acknowledged += creator.stdout.read().split()

    jobs = SqliteJobs(db)
    missing = [
        job_id
        for job_id in acknowledged
        if jobs.get(JobKey(tenant_id="t", client_id="c", job_id=job_id)) is None
    ]
    jobs.close()
    assert missing == []
    assert len(acknowledged) >= 200


@pytest.mark.parametrize("removed", [True, False])
def test_the_pump_sends_again_only_what_was_not_removed(tmp_path: Path, removed: bool) -> None:
    outbox = SqliteOutbox(tmp_path / "vaultq.db")
    sends = [PendingSend(id=f"s{i}", queue="q", body="{}") for i in range(20)]
    in_threads(20, lambda i: outbox.add(sends[i], claim_seconds=0))
    if removed:
        in_threads(20, lambda i: outbox.remove(sends[i].id))
    outbox.close()

    reopened = SqliteOutbox(tmp_path / "vaultq.db")
    due = reopened.claim_due(limit=100, claim_seconds=30)
    assert sorted(send.id for send in due) == ([] if removed else sorted(s.id for s in sends))
    reopened.close()


def test_a_writer_interrupted_while_waiting_withdraws_and_later_writes_go_on(
    tmp_path: Path,
) -> None:
    # Ctrl-C reaches the main thread while its write waits behind another group: its write
    # is withdrawn, and the leader must not hand the next group to a thread that left.
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WAITER, str(tmp_path / "x.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "['after', 'led']"


def test_a_writer_interrupted_just_before_it_leads_hands_the_lead_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C between queueing a write and leading its commit (simulated: the first call to
    # lead raises it): the store must not stay "led" by a thread that left.
    path = tmp_path / "x.db"
    conn = _sqlite.connect(path, synchronous="NORMAL")
    conn.execute("CREATE TABLE t (v TEXT)")
    group = _sqlite.GroupCommit(conn, _sqlite.write_lock(path))
    lead = _sqlite.GroupCommit._lead
    calls = iter([True])

    def interrupted_once(self: _sqlite.GroupCommit) -> None:
        if next(calls, False):
            raise KeyboardInterrupt
        lead(self)

    monkeypatch.setattr(_sqlite.GroupCommit, "_lead", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        group.run(lambda c: c.execute("INSERT INTO t VALUES ('interrupted')"))
    later = threading.Thread(
        target=group.run,
        args=(lambda c: c.execute("INSERT INTO t VALUES ('later')"),),
        daemon=True,
    )
    later.start()
    later.join(timeout=10)

    assert not later.is_alive(), "a later write waited for a leader that had left"
    assert [v for (v,) in conn.execute("SELECT v FROM t")] == ["later"]
    conn.close()
