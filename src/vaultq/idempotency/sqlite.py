"""The embedded idempotency store: ``IdempotencyStore`` on a SQLite database in WAL mode.

Its one table, ``idempotency_records``, may share a file with ``SqliteQueues``. A claim is
one upsert inside ``BEGIN IMMEDIATE``: SQLite's write lock serialises processes and a lock
per store serialises threads, so two claims for one key never both win. Writes commit with
``synchronous=FULL``: a completed result survives a power cut, so a duplicate arriving after
one does not repeat the handler's side effects.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vaultq import _sqlite, errors
from vaultq._sql import load_queries
from vaultq.idempotency.protocol import (
    IdempotencyRecord,
    IdempotencyStatus,
    validate_claim,
    validate_completion,
    validate_key,
)

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Iterator

_SQL = load_queries("vaultq.idempotency", "sql/sqlite.sql")
_SWEEP_INTERVAL_SECONDS = 60.0
_SWEEP_BATCH = 500


class SqliteIdempotency:
    """``IdempotencyStore`` on a SQLite file. ``clock`` returns seconds since the epoch."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_seconds: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._busy_timeout_ms = int(busy_timeout_seconds * 1000)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.BackendUnavailable(f"cannot use {self.path}: {exc.strerror}") from exc
        self._write_conn = self._connect()
        self._read_conn = self._connect()
        self._write_lock = _sqlite.write_lock(self.path)
        self._read_lock = threading.Lock()
        self._last_sweep = 0.0
        with self._translate_errors():
            self._write_conn.executescript(_SQL["schema"])

    def claim(self, key: str, *, claim_id: str, in_progress_ms: int) -> IdempotencyRecord:
        validate_key(key)
        validate_claim(claim_id, in_progress_ms=in_progress_ms)
        with self._write() as conn:
            now = self._now_ms()
            self._sweep_if_due(conn, now)
            conn.execute(
                _SQL["claim"],
                {
                    "key": key,
                    "claim_id": claim_id,
                    "expires_at_ms": now + in_progress_ms,
                    "now": now,
                },
            )
            row = conn.execute(_SQL["get"], {"key": key, "now": now}).fetchone()
        # The upsert leaves a live record or writes ours, so the key has a live record now.
        return _record(row)

    def complete(
        self, key: str, *, claim_id: str, result_json: str, expires_after_seconds: int
    ) -> bool:
        validate_key(key)
        validate_completion(result_json, expires_after_seconds=expires_after_seconds)
        with self._write() as conn:
            now = self._now_ms()
            changed = conn.execute(
                _SQL["complete"],
                {
                    "key": key,
                    "claim_id": claim_id,
                    "result": result_json,
                    "expires_at_ms": now + expires_after_seconds * 1000,
                },
            ).rowcount
        return changed == 1

    def release(self, key: str, *, claim_id: str) -> None:
        validate_key(key)
        with self._write() as conn:
            conn.execute(_SQL["release"], {"key": key, "claim_id": claim_id})

    def get(self, key: str) -> IdempotencyRecord | None:
        validate_key(key)
        with self._read() as conn:
            row = conn.execute(_SQL["get"], {"key": key, "now": self._now_ms()}).fetchone()
        return None if row is None else _record(row)

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._write_conn.close()
            self._read_conn.close()

    def _sweep_if_due(self, conn: sqlite3.Connection, now_ms: int) -> None:
        """Delete a batch of expired records, at most once a minute per store."""
        if time.monotonic() - self._last_sweep < _SWEEP_INTERVAL_SECONDS:
            return
        self._last_sweep = time.monotonic()
        conn.execute(_SQL["sweep"], {"now": now_ms, "limit": _SWEEP_BATCH})

    def _connect(self) -> sqlite3.Connection:
        conn = _sqlite.connect(
            self.path, synchronous="FULL", busy_timeout_seconds=self._busy_timeout_ms / 1000
        )
        return conn

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with _sqlite.transaction(self._write_conn, self._write_lock) as conn:
            yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock, self._translate_errors():
            yield self._read_conn

    def _translate_errors(self) -> contextlib.AbstractContextManager[None]:
        return _sqlite.translate_errors()


def _record(row: tuple[str, str, str, int, str | None]) -> IdempotencyRecord:
    key, status, claim_id, expires_at_ms, result = row
    return IdempotencyRecord(
        key=key,
        status=IdempotencyStatus(status),
        claim_id=claim_id,
        expires_at_ms=expires_at_ms,
        result_json=result,
    )
