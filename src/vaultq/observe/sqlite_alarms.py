"""The embedded alarm store: ``AlarmStore`` on a SQLite database in WAL mode.

Its table is prefixed ``alarms_``, so it shares the file of the queues and metrics. A record
is one ``BEGIN IMMEDIATE`` transaction (read the state, append, sweep), so two evaluators
never both record one change. Commits are ``synchronous=FULL``: alarm history is state a
user reads, and it changes rarely.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from vaultq import _sqlite, errors
from vaultq._sql import load_queries
from vaultq.observe.alarms import (
    DEFAULT_HISTORY_RETENTION_SECONDS,
    AlarmState,
    AlarmTransition,
)

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Iterator

    from vaultq.observe.alarms import AlarmStore

_SQL = load_queries("vaultq.observe", "sql/alarms.sql")
_MAX_HISTORY = 1000


class SqliteAlarms:
    """``AlarmStore`` on a SQLite file; history older than ``retention_seconds`` is dropped
    when its alarm next changes state."""

    def __init__(
        self,
        path: str | Path,
        *,
        retention_seconds: int = DEFAULT_HISTORY_RETENTION_SECONDS,
        busy_timeout_seconds: float = 30.0,
    ) -> None:
        if retention_seconds < 60:
            raise errors.InvalidSettings("retention_seconds must be at least 60")
        self.path = Path(path)
        self._retention_ms = retention_seconds * 1000
        self._conn = _sqlite.connect(
            self.path, synchronous="FULL", busy_timeout_seconds=busy_timeout_seconds
        )
        self._lock = threading.Lock()
        with self._read() as conn:
            conn.executescript(_SQL["schema"])

    def latest(self) -> dict[str, AlarmTransition]:
        with self._read() as conn:
            rows = conn.execute(_SQL["latest"]).fetchall()
        return {row[0]: _transition(row) for row in rows}

    def record(self, transition: AlarmTransition) -> bool:
        with _sqlite.transaction(self._conn, self._lock) as conn:
            found = conn.execute(_SQL["current_state"], {"alarm": transition.alarm}).fetchone()
            current = None if found is None else AlarmState(found[0])
            if current is not transition.old_state:
                return False
            [latest_id] = conn.execute(
                _SQL["append"],
                {
                    "alarm": transition.alarm,
                    "at_ms": transition.at_ms,
                    "old_state": transition.old_state,
                    "new_state": transition.new_state,
                    "reason": transition.reason,
                    "value": transition.value,
                },
            ).fetchone()
            conn.execute(
                _SQL["sweep"],
                {
                    "alarm": transition.alarm,
                    "before_ms": transition.at_ms - self._retention_ms,
                    "latest_id": latest_id,
                },
            )
        return True

    def history(self, alarm: str, *, limit: int = 100) -> list[AlarmTransition]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_HISTORY:
            raise errors.InvalidParameterValue(f"limit must be 1..{_MAX_HISTORY}")
        with self._read() as conn:
            rows = conn.execute(_SQL["history"], {"alarm": alarm, "limit": limit}).fetchall()
        return [_transition(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _sqlite.translate_errors():
            yield self._conn


def _transition(row: tuple[str, int, str | None, str, str, float | None]) -> AlarmTransition:
    alarm, at_ms, old_state, new_state, reason, value = row
    return AlarmTransition(
        alarm=alarm,
        at_ms=at_ms,
        old_state=None if old_state is None else AlarmState(old_state),
        new_state=AlarmState(new_state),
        reason=reason,
        value=value,
    )


if TYPE_CHECKING:

    def _satisfies_protocol(store: SqliteAlarms) -> AlarmStore:
        """mypy proves here that ``SqliteAlarms`` is an ``AlarmStore``."""
        return store
