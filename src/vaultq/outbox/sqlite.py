"""The embedded send outbox: one table, ``synchronous=FULL`` (an accepted job's send must
survive a power cut as the job does)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vaultq import errors
from vaultq._sql import load_queries
from vaultq.outbox.protocol import PendingSend

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_SQL = load_queries("vaultq.outbox", "sql/sqlite.sql")


class SqliteOutbox:
    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        with self._translate_errors():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout = 30000")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.executescript(_SQL["schema"])

    def add(self, send: PendingSend, *, claim_seconds: float) -> None:
        now = self._now_ms()
        with self._transaction() as conn:
            conn.execute(
                _SQL["add"],
                {
                    "id": send.id,
                    "queue": send.queue,
                    "body": send.body,
                    "attributes": json.dumps(dict(send.attributes)),
                    "group_id": send.group_id,
                    "deduplication_id": send.deduplication_id,
                    "now": now,
                    "claimed_until": now + int(claim_seconds * 1000),
                },
            )

    def claim_due(self, *, limit: int, claim_seconds: float) -> list[PendingSend]:
        now = self._now_ms()
        with self._transaction() as conn:
            due = conn.execute(_SQL["due"], {"now": now, "limit": limit}).fetchall()
            rows = [
                conn.execute(
                    _SQL["claim"],
                    {
                        "id": send_id,
                        "claimed_until": now + int(claim_seconds * 1000),
                    },
                ).fetchone()
                for (send_id,) in due
            ]
        return [
            PendingSend(
                id=row[0],
                queue=row[1],
                body=row[2],
                attributes=json.loads(row[3]),
                group_id=row[4],
                deduplication_id=row[5],
                attempts=row[6],
            )
            for row in rows
        ]

    def remove(self, send_id: str) -> None:
        with self._transaction() as conn:
            conn.execute(_SQL["remove"], {"id": send_id})

    def count(self) -> int:
        with self._lock, self._translate_errors():
            return int(self._conn.execute(_SQL["count"]).fetchone()[0])

    def close(self) -> None:
        self._conn.close()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._translate_errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise errors.BackendUnavailable(f"outbox: {exc}") from exc


if TYPE_CHECKING:
    from vaultq.outbox.protocol import Outbox

    _fits: type[Outbox] = SqliteOutbox
