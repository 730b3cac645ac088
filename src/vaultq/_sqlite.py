"""What every embedded (SQLite) adapter does the same way: open a WAL connection, run a
write transaction, and turn driver errors into vaultq's."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from vaultq import errors

if TYPE_CHECKING:
    import threading
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
