"""What every embedded (SQLite) adapter does the same way: open a WAL connection, run a
write transaction, and turn driver errors into vaultq's."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from vaultq import errors

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

Synchronous = Literal["FULL", "NORMAL"]
T = TypeVar("T")


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


class GroupCommit:
    """Writes of many threads committed together: one thread leads a transaction for every
    write queued while the last one committed, so N concurrent writes cost one commit (one
    fsync on a ``synchronous=FULL`` connection) instead of N in a row behind the lock.

    Each write runs in its own savepoint: one that raises is undone alone, and its caller
    gets the error, while the others commit. A failed commit fails every write of its group.

    Each waiting thread is woken exactly once: when its group committed, or to lead the next
    group. (A condition shared by all would wake every waiter at each commit, and each wake-up
    is a switch of the GIL that the other threads, serving requests, wait for.)
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        lock: threading.Lock,
        *,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self._conn = conn
        self._lock = lock
        #: Run by the leader once per committed group, e.g. to wake consumers.
        self._after_commit = after_commit
        self._mutex = threading.Lock()
        self._queued: list[_Write[Any]] = []
        self._leading = False
        #: Transactions committed; fewer than writes when concurrent writes share them.
        self.commits = 0

    def run(self, write: Callable[[sqlite3.Connection], T]) -> T:
        """``write(conn)``'s result once its transaction committed; what it raised, else."""
        item: _Write[T] = _Write(write)
        with self._mutex:
            self._queued.append(item)
            follow, self._leading = self._leading, True
            item.chosen = not follow  # it leads the next group itself
        try:
            if follow:
                item.wake.acquire()
            if not item.done:
                self._lead()
        except BaseException:  # e.g. Ctrl-C in the main thread while it waited its turn
            self._abandon(item)
            raise
        if item.error is not None:
            raise item.error
        return item.result

    def _lead(self) -> None:
        group: list[_Write[Any]] = []
        committed = False
        try:
            with self._mutex:
                group, self._queued = self._queued, []
            committed = self._commit(group)
        finally:
            with self._mutex:
                successor = self._choose_successor()
            for item in group:
                item.wake.release()
            if successor is not None:
                successor.wake.release()
        if committed and self._after_commit is not None:
            self._after_commit()

    def _abandon(self, item: _Write[Any]) -> None:
        """Withdraw the write of a thread that stopped waiting. Had it been chosen to lead
        the next group, another waiter must lead instead, or every later write would wait
        for ever."""
        with self._mutex:
            if item not in self._queued:
                return  # already in a group, whose leader wakes the next one
            self._queued.remove(item)
            successor = self._choose_successor() if item.chosen else None
        if successor is not None:
            successor.wake.release()

    def _choose_successor(self) -> _Write[Any] | None:
        """The oldest waiter, marked to lead the next group (call under ``_mutex``)."""
        successor = self._queued[0] if self._queued else None
        self._leading = successor is not None
        if successor is not None:
            successor.chosen = True
        return successor

    def _commit(self, group: list[_Write[Any]]) -> bool:
        try:
            with transaction(self._conn, self._lock) as conn:
                for item in group:
                    item.apply(conn)
            self.commits += 1
            return True
        except BaseException as exc:  # every waiting writer must learn that its commit failed
            for item in group:
                item.error = exc
            if not isinstance(exc, Exception):
                raise
            return False
        finally:
            for item in group:
                item.done = True


class _Write(Generic[T]):
    __slots__ = ("chosen", "done", "error", "result", "wake", "write")

    def __init__(self, write: Callable[[sqlite3.Connection], T]) -> None:
        self.write = write
        self.result: T
        self.error: BaseException | None = None
        self.done = False
        #: Picked to lead the next group.
        self.chosen = False
        # Held until the write's thread may go on: released once, by the thread that led.
        self.wake = threading.Lock()
        self.wake.acquire()

    def apply(self, conn: sqlite3.Connection) -> None:
        conn.execute("SAVEPOINT vaultq_write")
        try:
            with translate_errors():
                self.result = self.write(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO vaultq_write")
            self.error = exc
        conn.execute("RELEASE vaultq_write")
