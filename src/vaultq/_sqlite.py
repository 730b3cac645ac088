"""What every embedded (SQLite) adapter does the same way: open a WAL connection, run a
write transaction, and turn driver errors into vaultq's."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from vaultq import errors

if TYPE_CHECKING:
    from collections.abc import Iterator

Synchronous = Literal["FULL", "NORMAL"]


def connect(
    path: str | Path, *, synchronous: Synchronous, busy_timeout_seconds: float = 30.0
) -> sqlite3.Connection:
    """A connection in WAL mode, autocommit (transactions are explicit), usable from any
    thread under the caller's own lock, waiting up to ``busy_timeout_seconds`` for other
    processes' writes."""
    if synchronous not in ("FULL", "NORMAL"):
        raise errors.InvalidSettings(f"synchronous is FULL or NORMAL, not {synchronous!r}")
    with translate_errors():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_seconds * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()


def write_lock(path: str | Path) -> threading.Lock:
    """The lock every writer of the database at ``path`` in this process takes.

    SQLite lets one connection write at a time and makes the others wait in its busy
    handler, which sleeps up to 100 ms per try: stores of one process that share a file
    queue on this lock instead, and only other processes ever meet SQLite's."""
    key = os.path.realpath(path)
    with _write_locks_guard:
        return _write_locks.setdefault(key, threading.Lock())


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, lock: threading.Lock) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` under ``lock``: committed on success, rolled back on any error.
    Taking the write lock up front means no transaction ever upgrades a read lock and
    deadlocks against another process."""
    with lock, translate_errors():
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise errors.BackendUnavailable(f"sqlite: {exc}") from exc
