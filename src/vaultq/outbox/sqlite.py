"""The embedded send outbox: one table. Adds commit with ``synchronous=FULL`` (an accepted
job's send must survive a power cut as the job does), and adds that run at the same time
share one commit (group commit).

``durable_adds=False`` is for a caller that makes a ``synchronous=FULL`` commit on the same
file after every add and before it tells anyone about it, as the API does: it creates the
send's job right after. WAL commits are ordered and a FULL commit syncs the log up to
itself, so that commit makes the add durable too, and the add skips its own fsync.

Removals commit with ``synchronous=NORMAL``: a removal follows a send that is already
durable, so a power cut that loses one only leaves the row for the pump to send again. That
duplicate is what at-least-once delivery allows, as after a crash between a send and its
removal: the worker deletes a finished job's message without running it. No fsync per
removal; the next FULL commit on the file (the next submission's) syncs it anyway."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vaultq import _sqlite
from vaultq._sql import load_queries
from vaultq.outbox.protocol import PendingSend

if TYPE_CHECKING:
    import contextlib
    import sqlite3
    from collections.abc import Callable

_SQL = load_queries("vaultq.outbox", "sql/sqlite.sql")


class SqliteOutbox:
    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        durable_adds: bool = True,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = _sqlite.write_lock(self.path)
        self._conn = _sqlite.connect(self.path, synchronous="FULL")
        self._removals = _sqlite.connect(self.path, synchronous="NORMAL")
        self._adds = _sqlite.GroupCommit(self._conn if durable_adds else self._removals, self._lock)
        self._removes = _sqlite.GroupCommit(self._removals, self._lock)
        with _sqlite.translate_errors():
            self._conn.executescript(_SQL["schema"])

    def add(self, send: PendingSend, *, claim_seconds: float) -> None:
        now = self._now_ms()
        row = {
            "id": send.id,
            "queue": send.queue,
            "body": send.body,
            "attributes": json.dumps(dict(send.attributes)),
            "group_id": send.group_id,
            "deduplication_id": send.deduplication_id,
            "now": now,
            "claimed_until": now + int(claim_seconds * 1000),
        }
        self._adds.run(lambda conn: conn.execute(_SQL["add"], row))

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
        self._removes.run(lambda conn: conn.execute(_SQL["remove"], {"id": send_id}))

    def count(self) -> int:
        with self._lock, _sqlite.translate_errors():
            return int(self._conn.execute(_SQL["count"]).fetchone()[0])

    def close(self) -> None:
        self._conn.close()
        self._removals.close()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return _sqlite.transaction(self._conn, self._lock)


if TYPE_CHECKING:
    from vaultq.outbox.protocol import Outbox

    _fits: type[Outbox] = SqliteOutbox
