"""The embedded metrics store: ``MetricsStore`` on a SQLite database in WAL mode.

Its tables are prefixed ``metrics_``, so it may share a file with ``SqliteQueues``. A record
is one transaction (``BEGIN IMMEDIATE``) of two upserts per series, one into its running
total and one into its minute's bucket: SQLite's write lock serialises processes and a lock
per store serialises threads, and each upsert adds to what is stored, so concurrent writers
lose nothing. Commits use ``synchronous=NORMAL``, which skips the fsync per commit: a power
cut may lose the commits made since the log was last synced (by a checkpoint, or by a
``synchronous=FULL`` commit of a store sharing the file), about the last second of metrics;
it never corrupts them, and a crash of a process loses nothing it committed.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vaultq import _sqlite, errors
from vaultq._sql import load_queries
from vaultq.observe.protocol import (
    BUCKET_MS,
    DEFAULT_RETENTION_SECONDS,
    SeriesTotal,
    api_request_increments,
    invocation_increments,
    validate_since,
)

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from vaultq.observe.protocol import Increment, MetricsStore, Series

_SQL = load_queries("vaultq.observe", "sql/metrics.sql")
_SWEEP_INTERVAL_MS = 60_000
_SWEEP_BATCH = 1000


class SqliteMetrics:
    """``MetricsStore`` on a SQLite file. ``clock`` returns seconds since the epoch."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        retention_seconds: int = DEFAULT_RETENTION_SECONDS,
        busy_timeout_seconds: float = 30.0,
    ) -> None:
        if retention_seconds < BUCKET_MS // 1000:
            raise errors.InvalidSettings("retention_seconds must be at least 60")
        self.path = Path(path)
        self._clock = clock
        self._retention_ms = retention_seconds * 1000
        self._busy_timeout_ms = int(busy_timeout_seconds * 1000)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.BackendUnavailable(f"cannot use {self.path}: {exc.strerror}") from exc
        self._write_conn = self._connect()
        self._read_conn = self._connect()
        self._write_lock = _sqlite.write_lock(self.path)
        self._read_lock = threading.Lock()
        self._last_sweep_ms: int | None = None
        with self._translate_errors():
            self._write_conn.executescript(_SQL["schema"])

    def record_invocation(
        self,
        handler: str,
        *,
        outcome: str,
        duration_seconds: float,
        messages: int,
        failed: int,
        dead_lettered: int,
    ) -> None:
        self._add(
            invocation_increments(
                handler,
                outcome=outcome,
                duration_seconds=duration_seconds,
                messages=messages,
                failed=failed,
                dead_lettered=dead_lettered,
            )
        )

    def record_api_request(self, route: str, *, status_code: int, duration_seconds: float) -> None:
        self._add(
            api_request_increments(
                route, status_code=status_code, duration_seconds=duration_seconds
            )
        )

    def totals(self) -> list[SeriesTotal]:
        with self._read() as conn:
            rows = conn.execute(_SQL["totals"]).fetchall()
        return [
            SeriesTotal(name=name, labels=json.loads(labels), count=count, sum=total)
            for name, labels, count, total in rows
        ]

    def window(self, metric: Series, *, since_ms: int) -> float:
        since = validate_since(since_ms)
        params = {"name": metric.name, "since_minute_ms": since - since % BUCKET_MS}
        with self._read() as conn:
            rows = conn.execute(_SQL["window"], params).fetchall()
        column = 1 if metric.statistic == "count" else 2
        return float(sum(row[column] for row in rows if metric.matches(json.loads(row[0]))))

    def sweep_expired(self) -> int:
        deleted = 0
        while True:
            with self._write() as conn:
                count = self._sweep(conn, self._now_ms())
            deleted += count
            if count < _SWEEP_BATCH:
                return deleted

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._write_conn.close()
            self._read_conn.close()

    # -- plumbing -------------------------------------------------------------------------

    def _add(self, increments: Sequence[Increment]) -> None:
        with self._write() as conn:
            now = self._now_ms()
            if self._sweep_due(now):
                self._sweep(conn, now)
            minute_ms = now - now % BUCKET_MS
            for increment in increments:
                amounts = {"count": increment.count, "sum": increment.sum}
                labels = _encode_labels(increment.labels)
                total = {"name": increment.name, "labels": labels, **amounts}
                [series_id] = conn.execute(_SQL["add_to_total"], total).fetchone()
                bucket = {"series_id": series_id, "minute_ms": minute_ms, **amounts}
                conn.execute(_SQL["add_to_bucket"], bucket)

    def _sweep_due(self, now_ms: int) -> bool:
        return self._last_sweep_ms is None or now_ms - self._last_sweep_ms >= _SWEEP_INTERVAL_MS

    def _sweep(self, conn: sqlite3.Connection, now_ms: int) -> int:
        # Once a minute a sweep deletes about a minute of buckets. A full batch means it is
        # behind (the store was stopped): it stays due, and the next write sweeps again.
        params = {"before_ms": now_ms - self._retention_ms, "limit": _SWEEP_BATCH}
        count: int = conn.execute(_SQL["sweep"], params).rowcount
        if count < _SWEEP_BATCH:
            self._last_sweep_ms = now_ms
        return count

    def _connect(self) -> sqlite3.Connection:
        # Metrics may lose their last commits to a power cut (see the module's docs).
        return _sqlite.connect(
            self.path, synchronous="NORMAL", busy_timeout_seconds=self._busy_timeout_ms / 1000
        )

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


def _encode_labels(labels: Mapping[str, str]) -> str:
    # Sorted and compact: one series has exactly one text, so upserts find its row.
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


if TYPE_CHECKING:

    def _satisfies_protocol(store: SqliteMetrics) -> MetricsStore:
        """mypy proves here that ``SqliteMetrics`` is a ``MetricsStore``."""
        return store
