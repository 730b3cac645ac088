"""The embedded metrics store: ``MetricsStore`` on a SQLite database in WAL mode.

Its tables are prefixed ``metrics_``, so it may share a file with ``SqliteQueues``. A record
is one transaction (``BEGIN IMMEDIATE``) of two upserts per series, one into its running
total and one into its minute's bucket: SQLite's write lock serialises processes and a lock
per store serialises threads, and each upsert adds to what is stored, so concurrent writers
lose nothing. Commits use ``synchronous=NORMAL``, which skips the fsync per commit: a power
cut may lose the commits made since the log was last synced (by a checkpoint, or by a
``synchronous=FULL`` commit of a store sharing the file), about the last second of metrics;
it never corrupts them, and a crash of a process loses nothing it committed.

API requests and handler invocations are counted in memory and written once a second by a
background thread, in one transaction for all of that second's series: a request then costs
a dictionary update, not a write, so the event loop calls it directly, and a worker's
invocation does not take the file's write lock from the API's submissions. Every read of
this store and ``close`` write what is pending first, so this process always reads its own
counts; other processes see them within about a second. A crash of the process (not a
graceful stop) loses the counts of its last second.
"""

from __future__ import annotations

import contextlib
import json
import logging
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
    embedding_batch_increments,
    invocation_increments,
    validate_since,
)

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from vaultq.observe.protocol import Increment, MetricsStore, Series

log = logging.getLogger(__name__)
_SQL = load_queries("vaultq.observe", "sql/metrics.sql")
_FLUSH_INTERVAL_SECONDS = 1.0
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
        # (name, labels, minute) -> [count, sum] of requests not yet written.
        self._pending: dict[tuple[str, str, int], list[float]] = {}
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._closed = threading.Event()
        self._flusher: threading.Thread | None = None
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
        self._count(
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
        self._count(
            api_request_increments(
                route, status_code=status_code, duration_seconds=duration_seconds
            )
        )

    def record_embedding_batch(self, model: str, *, fallback: bool, messages: int) -> None:
        self._count(embedding_batch_increments(model, fallback=fallback, messages=messages))

    def flush(self) -> None:
        """Write the counts kept in memory, in one transaction."""
        with self._flush_lock:
            with self._pending_lock:
                pending, self._pending = self._pending, {}
            if not pending:
                return
            try:
                with self._write() as conn:
                    self._sweep_if_due(conn)
                    for (name, labels, minute_ms), (count, total) in pending.items():
                        self._upsert(conn, name, labels, minute_ms, count=int(count), total=total)
            except errors.VaultqError:
                self._keep(pending)  # for the next flush
                raise

    def totals(self) -> list[SeriesTotal]:
        self.flush()
        with self._read() as conn:
            rows = conn.execute(_SQL["totals"]).fetchall()
        return [
            SeriesTotal(name=name, labels=json.loads(labels), count=count, sum=total)
            for name, labels, count, total in rows
        ]

    def window(self, metric: Series, *, since_ms: int) -> float:
        since = validate_since(since_ms)
        self.flush()
        params = {"name": metric.name, "since_minute_ms": since - since % BUCKET_MS}
        with self._read() as conn:
            rows = conn.execute(_SQL["window"], params).fetchall()
        column = 1 if metric.statistic == "count" else 2
        return float(sum(row[column] for row in rows if metric.matches(json.loads(row[0]))))

    def sweep_expired(self) -> int:
        self.flush()
        deleted = 0
        while True:
            with self._write() as conn:
                count = self._sweep(conn, self._now_ms())
            deleted += count
            if count < _SWEEP_BATCH:
                return deleted

    def close(self) -> None:
        self._closed.set()
        if self._flusher is not None:
            self._flusher.join()
        self.flush()
        with self._write_lock, self._read_lock:
            self._write_conn.close()
            self._read_conn.close()

    # -- plumbing -------------------------------------------------------------------------

    def _count(self, increments: Sequence[Increment]) -> None:
        minute_ms = self._now_ms() // BUCKET_MS * BUCKET_MS
        with self._pending_lock:
            for increment in increments:
                key = (increment.name, _encode_labels(increment.labels), minute_ms)
                amounts = self._pending.setdefault(key, [0, 0.0])
                amounts[0] += increment.count
                amounts[1] += increment.sum
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_every_second, name="vaultq-metrics", daemon=True
                )
                self._flusher.start()

    def _upsert(
        self,
        conn: sqlite3.Connection,
        name: str,
        labels: str,
        minute_ms: int,
        *,
        count: int,
        total: float,
    ) -> None:
        amounts = {"count": count, "sum": total}
        [series_id] = conn.execute(
            _SQL["add_to_total"], {"name": name, "labels": labels, **amounts}
        ).fetchone()
        bucket = {"series_id": series_id, "minute_ms": minute_ms, **amounts}
        conn.execute(_SQL["add_to_bucket"], bucket)

    def _sweep_if_due(self, conn: sqlite3.Connection) -> int:
        """Sweep if a minute passed since the last sweep; returns the time, in ms."""
        now = self._now_ms()
        if self._sweep_due(now):
            self._sweep(conn, now)
        return now

    def _keep(self, pending: dict[tuple[str, str, int], list[float]]) -> None:
        with self._pending_lock:
            for key, (count, total) in pending.items():
                amounts = self._pending.setdefault(key, [0, 0.0])
                amounts[0] += count
                amounts[1] += total

    def _flush_every_second(self) -> None:
        while not self._closed.wait(_FLUSH_INTERVAL_SECONDS):
            try:
                self.flush()
            except errors.VaultqError as exc:
                log.warning("writing metrics failed: %s", exc.code)

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
