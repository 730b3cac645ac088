"""The embedded rate limiter: ``RateLimiter`` on a SQLite database in WAL mode.

Its one table, ``ratelimit_buckets``, holds a bucket's state per key and may share a file
with ``SqliteQueues``. Every process that opens the file shares the limits. A decision is
one read-modify-write inside ``BEGIN IMMEDIATE`` (decisions made at the same time share the
transaction, one savepoint each, one after the other): SQLite's write lock serialises
processes and a lock per file serialises threads, and the time is read once the lock is
held, so states are written in time order. The arithmetic is ``TokenBucket.take``, done once in
Python rather than again in SQL.

Commits use ``synchronous=NORMAL``: no fsync per decision, and a crash of the process
loses nothing. A power cut can lose the commits since the WAL was last synced, rolling
those buckets back to an earlier state: the requests allowed in the lost commits are
allowed once more, never fewer. A restart usually outlasts a bucket's refill
(``burst / rate_per_second``) anyway, and a limit protects a provider's quota, not data,
so an fsync per request (5-10x the cost, measured) buys nothing a user would notice.

Refusals are often answered without the database, from the last state this process wrote
for the key (``LastKnownStates``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from vaultq import _sqlite, errors
from vaultq._sql import load_queries
from vaultq.runtime.rate_limit import BucketState, BucketTable, LastKnownStates

if TYPE_CHECKING:
    import contextlib
    import sqlite3
    from collections.abc import Callable, Mapping

    from vaultq.runtime.rate_limit import Decision, RateLimiter, TokenBucket

_SQL = load_queries("vaultq.ratelimits", "sql/sqlite.sql")
_SWEEP_INTERVAL_MS = 1000
_SWEEP_BATCH = 500
# Keys whose last state this process remembers; past this, it forgets them all at once.


class SqliteRateLimiter:
    """``RateLimiter`` on a SQLite file, shared by every process that opens it.

    ``default`` limits every key that no prefix in ``by_prefix`` matches (the longest
    matching prefix wins). Every process must be given the same buckets. ``clock`` returns
    seconds since the epoch: a wall clock, because the state outlives processes and reboots.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        default: TokenBucket | None = None,
        by_prefix: Mapping[str, TokenBucket] | None = None,
        clock: Callable[[], float] = time.time,
        busy_timeout_seconds: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self._buckets = BucketTable(default=default, by_prefix=by_prefix)
        self._clock = clock
        self._busy_timeout_ms = int(busy_timeout_seconds * 1000)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.BackendUnavailable(f"cannot use {self.path}: {exc.strerror}") from exc
        self._conn = self._connect()
        self._lock = _sqlite.write_lock(self.path)
        # Decisions of concurrent requests share a transaction, each in its own savepoint
        # and in the order they run, so each still reads the state the last one wrote.
        self._decisions = _sqlite.GroupCommit(self._conn, self._lock)
        self._known = LastKnownStates()
        self._next_sweep_ms = 0
        with self._translate_errors():
            self._conn.executescript(_SQL["schema"])

    def acquire(self, key: str, *, cost: float = 1.0) -> Decision:
        bucket = self._buckets.for_key(key)
        bucket.check_cost(cost)
        refused = self._known.refusal(key, bucket, now_ms=self._now_ms(), cost=cost)
        if refused is not None:
            return refused

        def decide(conn: sqlite3.Connection) -> tuple[Decision, BucketState]:
            now_ms = self._now_ms()
            self._sweep_if_due(conn, now_ms)
            stored = _state(conn.execute(_SQL["get"], {"key": key}).fetchone())
            decision, state = bucket.take(stored, now_ms=now_ms, cost=cost)
            if state is not stored:
                conn.execute(_SQL["put"], _row(key, state, full_at_ms=bucket.full_at_ms(state)))
            return decision, state

        decision, state = self._decisions.run(decide)
        self._known.remember(key, state)
        return decision

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _sweep_if_due(self, conn: sqlite3.Connection, now_ms: int) -> None:
        """Delete up to 500 full buckets, at most once a second per limiter: an index probe
        when there are none, and enough for 30,000 new keys a minute."""
        if now_ms < self._next_sweep_ms:
            return
        self._next_sweep_ms = now_ms + _SWEEP_INTERVAL_MS
        conn.execute(_SQL["sweep"], {"now": now_ms, "limit": _SWEEP_BATCH})

    def _connect(self) -> sqlite3.Connection:
        conn = _sqlite.connect(
            self.path, synchronous="NORMAL", busy_timeout_seconds=self._busy_timeout_ms / 1000
        )
        return conn

    def _now_ms(self) -> int:
        # Rounded, not truncated: a clock at t0 + 0.1 s must read as t0 + 100 ms exactly.
        return round(self._clock() * 1000)

    def _translate_errors(self) -> contextlib.AbstractContextManager[None]:
        return _sqlite.translate_errors()


def _state(row: tuple[float, int] | None) -> BucketState | None:
    return None if row is None else BucketState(tokens=row[0], updated_at_ms=row[1])


def _row(key: str, state: BucketState, *, full_at_ms: int) -> dict[str, object]:
    return {
        "key": key,
        "tokens": state.tokens,
        "updated_at_ms": state.updated_at_ms,
        "full_at_ms": full_at_ms,
    }


if TYPE_CHECKING:

    def _satisfies_protocol(limiter: SqliteRateLimiter) -> RateLimiter:
        """mypy proves here that ``SqliteRateLimiter`` is a ``RateLimiter``."""
        return limiter
