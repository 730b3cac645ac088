"""The embedded job table: ``JobStore`` on a SQLite database in WAL mode.

Its tables are prefixed ``jobs_``, so it may share a file with ``SqliteQueues``. Every write
is a read-modify-write inside ``BEGIN IMMEDIATE``: SQLite's write lock serialises processes
and a lock per store serialises threads, so a conditional transition sees the job exactly as
the last write left it. Writes commit with ``synchronous=FULL``: a job a user was told about
survives a power cut. Creations that run at the same time share one commit (group commit),
each in its own savepoint, so a burst of submissions costs one fsync, not one each.

A worker's store (``durable_updates=False``) commits its updates with ``synchronous=NORMAL``:
WAL commits are ordered, so a power cut can only lose the newest ones together, with the
message deletes (also NORMAL) that followed them; the job is then back where its message is,
in flight, and runs again when the message comes back (at-least-once). The next FULL commit
on the file makes them durable anyway. Creations stay FULL.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaultq import _sqlite, errors
from vaultq._sql import load_queries
from vaultq.jobs import _records as records
from vaultq.jobs.protocol import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TTL_SECONDS,
    Job,
    JobKey,
    JobPage,
    JobStatus,
    encode_json,
    require_key,
    validate_day,
    validate_id,
    validate_limit,
    validate_range,
    validate_status,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from vaultq.jobs._records import Change
    from vaultq.jobs.protocol import JobStore

_SQL = load_queries("vaultq.jobs", "sql/sqlite.sql")
_SWEEP_BATCH = 500
# The first page starts after every possible position: (created_at_ms, pk) < (max, "").
_START = (2**63 - 1, "")


class SqliteJobs(records.ChangeWrites):
    """``JobStore`` on a SQLite file. ``clock`` returns seconds since the epoch."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_seconds: float = 30.0,
        durable_updates: bool = True,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._busy_timeout_ms = int(busy_timeout_seconds * 1000)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_conn = self._connect("FULL")
        self._update_conn = self._write_conn if durable_updates else self._connect("NORMAL")
        self._read_conn = self._connect("FULL")
        self._write_lock = _sqlite.write_lock(self.path)
        self._read_lock = threading.Lock()
        self._creates = _sqlite.GroupCommit(self._write_conn, self._write_lock)
        with self._translate_errors():
            self._write_conn.executescript(_SQL["schema"])
        self._secret = self._cursor_secret()

    # -- one job --------------------------------------------------------------------------

    def create(
        self,
        key: JobKey,
        *,
        input_files: Sequence[str] = (),
        attributes: Mapping[str, Any] | None = None,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> Job:
        make = records.new_job(
            key, input_files=input_files, attributes=attributes, ttl_seconds=ttl_seconds
        )
        pk = str(key)

        def insert(conn: sqlite3.Connection) -> Job:
            now = self._now_ms()
            # An expired job is gone: its key is free again even before a sweep.
            conn.execute(_SQL["delete_expired_job"], {"pk": pk, "now": now})
            if conn.execute(_SQL["get_job"], {"pk": pk, "now": now}).fetchone() is not None:
                raise errors.JobAlreadyExists(f"job {pk} already exists")
            job = make(now)
            conn.execute(_SQL["insert_job"], _row(job))
            return job

        # Concurrent submissions share one commit: one fsync for many new jobs.
        return self._creates.run(insert)

    def get(self, key: JobKey) -> Job | None:
        pk = str(require_key(key))
        with self._read() as conn:
            row = conn.execute(_SQL["get_job"], {"pk": pk, "now": self._now_ms()}).fetchone()
        return None if row is None else _job(row)

    def _update(self, key: JobKey, change: Change) -> Job:
        pk = str(require_key(key))
        with self._write() as conn:
            now = self._now_ms()
            row = conn.execute(_SQL["get_job"], {"pk": pk, "now": now}).fetchone()
            if row is None:
                raise errors.JobNotFound(f"no job {pk}")
            job = change(_job(row), now)
            conn.execute(_SQL["update_job"], _row(job))
        return job

    # -- listings -------------------------------------------------------------------------

    def list_by_status(
        self,
        tenant_id: str,
        status: JobStatus,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> JobPage:
        validate_id("tenant_id", tenant_id)
        since, until = validate_range(since_ms, until_ms)
        filters = {
            "tenant_id": tenant_id,
            "status": validate_status(status).value,
            "since_ms": since,
            "until_ms": until,
        }
        return self._page("list_by_status", filters, limit=limit, cursor=cursor)

    def list_by_client(
        self,
        tenant_id: str,
        client_id: str,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> JobPage:
        validate_id("tenant_id", tenant_id)
        validate_id("client_id", client_id)
        since, until = validate_range(since_ms, until_ms)
        filters = {
            "tenant_id": tenant_id,
            "client_id": client_id,
            "since_ms": since,
            "until_ms": until,
        }
        return self._page("list_by_client", filters, limit=limit, cursor=cursor)

    def list_by_day(
        self,
        tenant_id: str,
        day: str,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> JobPage:
        validate_id("tenant_id", tenant_id)
        filters = {"tenant_id": tenant_id, "day": validate_day(day)}
        return self._page("list_by_day", filters, limit=limit, cursor=cursor)

    def _page(
        self, query: str, filters: Mapping[str, object], *, limit: int, cursor: str | None
    ) -> JobPage:
        validate_limit(limit)
        scope = records.cursor_scope(query, filters)
        after = _START if cursor is None else records.decode_cursor(self._secret, scope, cursor)
        params = {
            **filters,
            "after_created_at_ms": after[0],
            "after_pk": after[1],
            "now": self._now_ms(),
            "limit": limit + 1,
        }
        with self._read() as conn:
            rows = conn.execute(_SQL[query], params).fetchall()
        jobs = [_job(row) for row in rows]
        return records.page(jobs, limit=limit, secret=self._secret, scope=scope)

    # -- maintenance ----------------------------------------------------------------------

    def count_by_status(self) -> dict[JobStatus, int]:
        with self._read() as conn:
            rows = conn.execute(_SQL["count_by_status"], {"now": self._now_ms()}).fetchall()
        return {JobStatus(status): count for status, count in rows}

    def sweep_expired(self) -> int:
        # Small batches, each its own transaction: a large sweep never blocks writers long.
        deleted = 0
        while True:
            with self._write() as conn:
                params = {"now": self._now_ms(), "limit": _SWEEP_BATCH}
                count = conn.execute(_SQL["sweep_expired"], params).rowcount
            deleted += count
            if count < _SWEEP_BATCH:
                return deleted

    def close(self) -> None:
        for conn in {self._write_conn, self._update_conn, self._read_conn}:
            conn.close()

    # -- plumbing -------------------------------------------------------------------------

    def _cursor_secret(self) -> bytes:
        """The key that signs this store's cursors; made once, kept in the database so that
        every process and every reopen accepts the same cursors."""
        with self._write() as conn:
            conn.execute(_SQL["remember_secret"], {"secret": secrets.token_bytes(32)})
            secret: bytes = conn.execute(_SQL["secret"]).fetchone()[0]
        return secret

    def connection_synchronous_modes(self) -> dict[str, int]:
        """``PRAGMA synchronous`` of each connection (2 FULL, 1 NORMAL), for the tests."""
        connections = {"create": self._write_conn, "update": self._update_conn}
        return {
            name: conn.execute("PRAGMA synchronous").fetchone()[0]
            for name, conn in connections.items()
        }

    def _connect(self, synchronous: _sqlite.Synchronous) -> sqlite3.Connection:
        conn = _sqlite.connect(
            self.path, synchronous=synchronous, busy_timeout_seconds=self._busy_timeout_ms / 1000
        )
        conn.row_factory = sqlite3.Row
        return conn

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with _sqlite.transaction(self._update_conn, self._write_lock) as conn:
            yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock, self._translate_errors():
            yield self._read_conn

    def _translate_errors(self) -> contextlib.AbstractContextManager[None]:
        return _sqlite.translate_errors()


def _row(job: Job) -> dict[str, Any]:
    return {
        "pk": str(job.key),
        "tenant_id": job.key.tenant_id,
        "client_id": job.key.client_id,
        "job_id": job.key.job_id,
        "status": job.status.value,
        "day": job.day,
        "created_at_ms": job.created_at_ms,
        "updated_at_ms": job.updated_at_ms,
        "expires_at_ms": job.expires_at_ms,
        "version": job.version,
        "attempts": job.attempts,
        "current_stage": job.current_stage,
        "progress": job.progress,
        "stages_completed": encode_json(job.stages_completed),
        "checkpoints": encode_json(list(job.checkpoints.items())),
        "input_files": encode_json(job.input_files),
        "output_files": encode_json(job.output_files),
        "result": None if job.result is None else encode_json(job.result),
        "error": job.error,
        "attributes": encode_json(job.attributes),
    }


def _job(row: sqlite3.Row) -> Job:
    return Job(
        key=JobKey(tenant_id=row["tenant_id"], client_id=row["client_id"], job_id=row["job_id"]),
        status=JobStatus(row["status"]),
        created_at_ms=row["created_at_ms"],
        updated_at_ms=row["updated_at_ms"],
        expires_at_ms=row["expires_at_ms"],
        version=row["version"],
        attempts=row["attempts"],
        stages_completed=tuple(json.loads(row["stages_completed"])),
        current_stage=row["current_stage"],
        progress=row["progress"],
        checkpoints=dict(json.loads(row["checkpoints"])),
        input_files=tuple(json.loads(row["input_files"])),
        output_files=tuple(json.loads(row["output_files"])),
        result=None if row["result"] is None else json.loads(row["result"]),
        error=row["error"],
        attributes=json.loads(row["attributes"]),
    )


if TYPE_CHECKING:

    def _satisfies_protocol(store: SqliteJobs) -> JobStore:
        """mypy proves here that ``SqliteJobs`` is a ``JobStore``."""
        return store
