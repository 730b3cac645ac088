"""The embedded queue backend: SQS semantics on one SQLite database in WAL mode.

Many processes share one database file; SQLite serialises their writes and a lock in each
process serialises its threads. Sends are durable against power loss (``synchronous=FULL``)
and concurrent sends share one commit (group commit). Leases, deletes and visibility changes
commit with ``synchronous=NORMAL``: losing one to a power cut only redelivers a message, which
at-least-once delivery allows. ``durability="process"`` commits sends that way too.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from vaultq import _sqlite, errors
from vaultq._sql import load_queries
from vaultq.queues._wakeup import Wakeup
from vaultq.queues.protocol import (
    DEDUPLICATION_WINDOW_SECONDS,
    MAX_IN_FLIGHT_MESSAGES,
    MAX_VISIBILITY_TIMEOUT_SECONDS,
    BatchEntryError,
    BatchResult,
    DeadLetterRecord,
    DeleteEntry,
    Failure,
    MessageAttribute,
    OutgoingMessage,
    QueueAttributes,
    QueueInfo,
    QueueStats,
    ReceivedMessage,
    RedriveAllowPolicy,
    RedrivePolicy,
    SendEntry,
    SendResult,
    VisibilityEntry,
    validate_batch_ids,
    validate_message,
    validate_queue_name,
    validate_receive,
    validate_visibility,
)

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Iterator, Mapping, Sequence

Durability = Literal["full", "process"]

_SQL = load_queries("vaultq.queues", "sql/sqlite.sql")
_QUEUE_CACHE_SECONDS = 1.0
_SWEEP_INTERVAL_SECONDS = 1.0
_NEXT_VISIBLE_CHECK_SECONDS = 1.0
_MAX_DEAD_LETTER_ROUNDS = 10
_SYNCHRONOUS: dict[str, _sqlite.Synchronous] = {"full": "FULL", "process": "NORMAL"}


@dataclass(frozen=True, slots=True)
class _Queue:
    id: int
    info: QueueInfo

    @property
    def attributes(self) -> QueueAttributes:
        return self.info.attributes


class SqliteQueues:
    """``QueueBackend`` on a SQLite file. ``clock`` returns seconds since the epoch."""

    def __init__(
        self,
        path: str | Path,
        *,
        durability: Durability = "full",
        clock: Callable[[], float] = time.time,
        max_in_flight: int = MAX_IN_FLIGHT_MESSAGES,
        busy_timeout_seconds: float = 30.0,
    ) -> None:
        if durability not in _SYNCHRONOUS:
            raise errors.InvalidSettings(f"durability is 'full' or 'process', not {durability!r}")
        self.path = Path(path)
        self.durability = durability
        self._clock = clock
        self._max_in_flight = max_in_flight
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._wakeup = Wakeup(self.path.with_name(self.path.name + ".wakeup"))
        except OSError as exc:
            raise errors.BackendUnavailable(f"cannot use {self.path}: {exc.strerror}") from exc
        self._busy_timeout_ms = int(busy_timeout_seconds * 1000)
        self._send_conn = self._connect(_SYNCHRONOUS[durability])
        self._ack_conn = self._connect("NORMAL")
        self._read_conn = self._connect("NORMAL")
        with self._translate_errors():
            self._send_conn.executescript(_SQL["schema"])
        self._write_lock = _sqlite.write_lock(self.path)
        self._read_lock = threading.Lock()
        self._sends = _sqlite.GroupCommit(
            self._send_conn, self._write_lock, after_commit=self._wakeup.notify
        )
        self._queue_cache: dict[str, tuple[float, _Queue]] = {}
        self._last_sweep: dict[int, float] = {}

    # -- queues ---------------------------------------------------------------------------

    def create_queue(self, name: str, attributes: QueueAttributes | None = None) -> QueueInfo:
        attributes = attributes or QueueAttributes()
        validate_queue_name(name, fifo=attributes.fifo)
        with self._write() as conn:
            existing = self._queue_row(conn, name)
            if existing is not None:
                if existing.attributes != attributes:
                    raise errors.QueueNameExists(f"queue {name!r} exists with other attributes")
                return existing.info
            self._check_redrive_policy(conn, name, attributes)
            conn.execute(
                _SQL["insert_queue"],
                {
                    "name": name,
                    "attributes": _dump_attributes(attributes),
                    "now": self._now_ms(),
                },
            )
            return self._require_queue(conn, name).info

    def get_queue(self, name: str) -> QueueInfo:
        return self._queue(name, fresh=True).info

    def set_queue_attributes(self, name: str, attributes: QueueAttributes) -> QueueInfo:
        with self._write() as conn:
            queue = self._require_queue(conn, name)
            if attributes.fifo != queue.attributes.fifo:
                raise errors.InvalidAttributeValue("a queue cannot change between standard/FIFO")
            self._check_redrive_policy(conn, name, attributes)
            conn.execute(
                _SQL["update_queue"],
                {
                    "queue": queue.id,
                    "attributes": _dump_attributes(attributes),
                },
            )
        self._queue_cache.pop(name, None)
        return self.get_queue(name)

    def list_queues(self, prefix: str = "") -> list[str]:
        with self._read() as conn:
            return [row[0] for row in conn.execute(_SQL["list_queues"], {"prefix": prefix})]

    def list_dead_letter_source_queues(self, name: str) -> list[str]:
        self._queue(name, fresh=True)
        with self._read() as conn:
            rows = conn.execute(_SQL["all_queues"]).fetchall()
        sources = []
        for row in rows:
            policy = _row_to_queue(row).attributes.redrive_policy
            if policy is not None and policy.dead_letter_queue == name:
                sources.append(row[1])
        return sorted(sources)

    def delete_queue(self, name: str) -> None:
        with self._write() as conn:
            queue = self._require_queue(conn, name)
            for query in ("delete_queue_messages", "delete_queue_dedup", "delete_queue"):
                conn.execute(_SQL[query], {"queue": queue.id})
        self._queue_cache.pop(name, None)

    # -- sending --------------------------------------------------------------------------

    def send(self, queue: str, message: OutgoingMessage) -> SendResult:
        target = self._queue(queue)
        validate_message(message, target.attributes)
        [result] = self._group_commit(target, [message])
        return result

    def send_batch(self, queue: str, entries: Sequence[SendEntry]) -> BatchResult[SendResult]:
        validate_batch_ids([entry.id for entry in entries])
        target = self._queue(queue)
        total = sum(entry.message.size_bytes() for entry in entries)
        if total > target.attributes.maximum_message_size_bytes:
            raise errors.BatchRequestTooLong(
                f"the batch is {total} bytes; at most "
                f"{target.attributes.maximum_message_size_bytes} in all"
            )
        valid: list[SendEntry] = []
        failed: list[BatchEntryError] = []
        for entry in entries:
            try:
                validate_message(entry.message, target.attributes)
            except errors.VaultqError as exc:
                failed.append(BatchEntryError(id=entry.id, code=exc.code, message=exc.message))
            else:
                valid.append(entry)
        results = self._group_commit(target, [e.message for e in valid])
        successful = {entry.id: result for entry, result in zip(valid, results, strict=True)}
        return BatchResult(successful=successful, failed=failed)

    @property
    def send_commits(self) -> int:
        """Transactions that committed sends; fewer than sends when group commit gathers them."""
        return self._sends.commits

    def _group_commit(self, queue: _Queue, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Commit these sends with every other send waiting at the same time: N concurrent
        senders share one fsync. Standard queues' rows are built before queueing up, so the
        commit leader only runs SQL while it holds the write lock."""
        if not messages:
            return []
        rows = None if queue.attributes.fifo else _standard_rows(queue, messages, self._now_ms())
        return self._sends.run(lambda conn: self._commit_sends(conn, queue, messages, rows))

    def _commit_sends(
        self,
        conn: sqlite3.Connection,
        queue: _Queue,
        messages: Sequence[OutgoingMessage],
        rows: list[dict[str, Any]] | None,
    ) -> list[SendResult]:
        current = self._queue_row(conn, queue.info.name)
        if current is None or current.id != queue.id:
            raise errors.QueueDoesNotExist(f"no queue {queue.info.name!r}")
        # Rows were built from cached attributes; if the queue changed since (a new
        # DelaySeconds), build them again from the current ones.
        if rows is None or current.attributes != queue.attributes:
            now = self._now_ms()
            return [self._insert(conn, current, m, now) for m in messages]
        conn.executemany(_SQL["insert_standard_message"], rows)
        return [SendResult(message_id=row["message_id"], md5_of_body=row["md5"]) for row in rows]

    def _insert(
        self, conn: sqlite3.Connection, queue: _Queue, message: OutgoingMessage, now: int
    ) -> SendResult:
        attributes = queue.attributes
        md5 = _md5(message.body)
        dedup_key = None
        if attributes.fifo:
            dedup_key = {
                "queue": queue.id,
                "scope": message.group_id
                if attributes.deduplication_scope == "message_group"
                else "",
                "dedup_id": message.deduplication_id or _sha256(message.body),
                "now": now,
            }
            duplicate = conn.execute(_SQL["find_duplicate"], dedup_key).fetchone()
            if duplicate is not None:
                return SendResult(
                    message_id=duplicate[0],
                    md5_of_body=duplicate[1],
                    sequence_number=_sequence(duplicate[2]),
                )
        delay = attributes.delay_seconds if message.delay_seconds is None else message.delay_seconds
        message_id = str(uuid.uuid4())
        seq = conn.execute(
            _SQL["insert_message"],
            {
                "queue": queue.id,
                "message_id": message_id,
                "body": message.body,
                "md5": md5,
                "attributes": _dump_message_attributes(message.attributes),
                "group_id": message.group_id,
                "dedup_id": dedup_key["dedup_id"] if dedup_key else None,
                "now": now,
                "visible_at": now + delay * 1000,
            },
        ).fetchone()[0]
        if dedup_key is None:
            return SendResult(message_id=message_id, md5_of_body=md5)
        conn.execute(
            _SQL["remember_dedup"],
            {
                **dedup_key,
                "message_id": message_id,
                "md5": md5,
                "seq": seq,
                "expires_at": now + DEDUPLICATION_WINDOW_SECONDS * 1000,
            },
        )
        return SendResult(message_id=message_id, md5_of_body=md5, sequence_number=_sequence(seq))

    # -- receiving ------------------------------------------------------------------------

    def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        wait_seconds: int | None = None,
        visibility_timeout_seconds: int | None = None,
    ) -> list[ReceivedMessage]:
        validate_receive(max_messages, wait_seconds, visibility_timeout_seconds)
        source = self._queue(queue)
        if wait_seconds is None:
            wait_seconds = source.attributes.receive_wait_time_seconds
        if visibility_timeout_seconds is None:
            visibility_timeout_seconds = source.attributes.visibility_timeout_seconds
        messages = self._receive_now(source, max_messages, visibility_timeout_seconds)
        if messages or wait_seconds == 0:
            return messages
        deadline = time.monotonic() + wait_seconds
        with self._wakeup.listener() as listener:
            while True:
                messages = self._receive_now(source, max_messages, visibility_timeout_seconds)
                remaining = deadline - time.monotonic()
                if messages or remaining <= 0:
                    return messages
                listener.wait(min(remaining, self._seconds_until_next_visible(source)))

    def _receive_now(
        self, queue: _Queue, max_messages: int, visibility_timeout_seconds: int
    ) -> list[ReceivedMessage]:
        with self._write() as conn:
            current = self._require_queue(conn, queue.info.name)
            now = self._now_ms()
            self._sweep_if_due(conn, current, now)
            candidates = self._lease_candidates(conn, current, now, max_messages)
            if not candidates:
                return []
            candidates = self._check_in_flight_limit(conn, current, now, candidates)
            visible_at = now + visibility_timeout_seconds * 1000
            return [
                self._received(
                    current,
                    conn.execute(
                        _SQL["lease"],
                        {
                            "seq": seq,
                            "now": now,
                            "visible_at": visible_at,
                        },
                    ).fetchone(),
                )
                for seq in candidates
            ]

    def _lease_candidates(
        self, conn: sqlite3.Connection, queue: _Queue, now: int, limit: int
    ) -> list[int]:
        """Pick what to lease, dead-lettering messages over their receive limit on the way."""
        policy = queue.attributes.redrive_policy
        for _ in range(_MAX_DEAD_LETTER_ROUNDS):
            rows = self._candidates(conn, queue, now, limit)
            overdue = (
                []
                if policy is None
                else [
                    seq for seq, receive_count in rows if receive_count >= policy.max_receive_count
                ]
            )
            if not overdue or not self._dead_letter_rows(conn, queue, overdue, now, None):
                return [seq for seq, _ in rows]
        return []

    def _candidates(
        self, conn: sqlite3.Connection, queue: _Queue, now: int, limit: int
    ) -> list[tuple[int, int]]:
        bounds = {"queue": queue.id, "now": now, "expired_before": self._expired_before(queue, now)}
        if queue.attributes.fifo:
            return self._fifo_candidates(conn, bounds, limit)
        if conn.execute(_SQL["has_groups"], bounds).fetchone() is None:
            return _pairs(conn.execute(_SQL["visible_candidates"], {**bounds, "limit": limit}))
        # A fair queue: the oldest visible message of each group first, then the rest.
        chosen = _pairs(
            conn.execute(
                _SQL["group_heads"],
                {
                    **bounds,
                    "limit": limit,
                    "visible_only": 1,
                },
            )
        )
        if len(chosen) < limit:
            taken = {seq for seq, _ in chosen}
            more = _pairs(conn.execute(_SQL["visible_candidates"], {**bounds, "limit": limit * 2}))
            chosen += [row for row in more if row[0] not in taken][: limit - len(chosen)]
        return chosen

    def _fifo_candidates(
        self, conn: sqlite3.Connection, bounds: dict[str, int], limit: int
    ) -> list[tuple[int, int]]:
        """Groups whose first message is visible (none in flight), in order, as many
        messages of one group as possible first, as SQS does."""
        heads = conn.execute(_SQL["group_heads"], {**bounds, "limit": limit, "visible_only": 0})
        chosen: list[tuple[int, int]] = []
        for _, group_id, _ in heads.fetchall():
            run = conn.execute(
                _SQL["group_run"],
                {
                    **bounds,
                    "group_id": group_id,
                    "limit": limit - len(chosen),
                },
            )
            for seq, receive_count, visible_at in run:
                if visible_at > bounds["now"]:
                    break
                chosen.append((seq, receive_count))
            if len(chosen) >= limit:
                break
        return chosen

    def _check_in_flight_limit(
        self, conn: sqlite3.Connection, queue: _Queue, now: int, candidates: list[int]
    ) -> list[int]:
        in_flight = conn.execute(
            _SQL["count_in_flight"],
            {
                "queue": queue.id,
                "now": now,
                "limit": self._max_in_flight,
            },
        ).fetchone()[0]
        room = self._max_in_flight - in_flight
        if room >= len(candidates):
            return candidates
        if not queue.attributes.fifo:
            raise errors.OverLimit(
                f"{in_flight} messages in flight; the limit is {self._max_in_flight}"
            )
        # FIFO queues answer with fewer messages rather than an error, as SQS does.
        return candidates[: max(room, 0)]

    def _seconds_until_next_visible(self, queue: _Queue) -> float:
        now = self._now_ms()
        with self._read() as conn:
            next_visible = conn.execute(
                _SQL["next_visible"],
                {
                    "queue": queue.id,
                    "now": now,
                },
            ).fetchone()[0]
        if next_visible is None:
            return _NEXT_VISIBLE_CHECK_SECONDS
        return min(max((int(next_visible) - now) / 1000, 0.001), _NEXT_VISIBLE_CHECK_SECONDS)

    def _received(self, queue: _Queue, row: sqlite3.Row) -> ReceivedMessage:
        (
            seq,
            message_id,
            lease,
            body,
            md5,
            attributes,
            sent_at,
            receive_count,
            first_received_at,
            group_id,
            dedup_id,
            dl_source,
            dl_reason,
            dl_receive_count,
            dl_last_error,
            dl_moved_at,
        ) = row
        dead_letter = None
        if dl_source is not None:
            dead_letter = DeadLetterRecord(
                source_queue=dl_source,
                reason=dl_reason,
                receive_count=dl_receive_count,
                last_error=dl_last_error,
                moved_at_ms=dl_moved_at,
            )
        return ReceivedMessage(
            message_id=message_id,
            receipt_handle=_encode_handle(queue.id, seq, lease),
            body=body,
            md5_of_body=md5,
            attributes=_load_message_attributes(attributes),
            sent_at_ms=sent_at,
            receive_count=receive_count,
            first_received_at_ms=first_received_at,
            group_id=group_id,
            deduplication_id=dedup_id,
            sequence_number=_sequence(seq) if queue.attributes.fifo else None,
            dead_letter=dead_letter,
        )

    # -- acknowledging --------------------------------------------------------------------

    def delete(self, queue: str, receipt_handle: str) -> None:
        source = self._queue(queue)
        seq, lease = _decode_handle(receipt_handle, source.id)
        with self._write() as conn:
            if self._check_lease(conn, source, seq, lease) is not None:
                conn.execute(_SQL["delete_by_seq"], {"seq": seq})

    def delete_batch(self, queue: str, entries: Sequence[DeleteEntry]) -> BatchResult[None]:
        validate_batch_ids([entry.id for entry in entries])
        source = self._queue(queue)

        def delete_one(conn: sqlite3.Connection, entry: DeleteEntry) -> None:
            seq, lease = _decode_handle(entry.receipt_handle, source.id)
            if self._check_lease(conn, source, seq, lease) is not None:
                conn.execute(_SQL["delete_by_seq"], {"seq": seq})

        return self._per_entry(entries, delete_one)

    def change_visibility(
        self,
        queue: str,
        receipt_handle: str,
        *,
        visibility_timeout_seconds: int,
        failure: Failure | None = None,
    ) -> None:
        entry = VisibilityEntry(
            id="single",
            receipt_handle=receipt_handle,
            visibility_timeout_seconds=visibility_timeout_seconds,
            failure=failure,
        )
        validate_visibility(visibility_timeout_seconds)
        source = self._queue(queue)
        with self._write() as conn:
            self._set_visibility(conn, source, entry)

    def change_visibility_batch(
        self, queue: str, entries: Sequence[VisibilityEntry]
    ) -> BatchResult[None]:
        validate_batch_ids([entry.id for entry in entries])
        source = self._queue(queue)

        def change_one(conn: sqlite3.Connection, entry: VisibilityEntry) -> None:
            validate_visibility(entry.visibility_timeout_seconds)
            self._set_visibility(conn, source, entry)

        return self._per_entry(entries, change_one)

    def _set_visibility(
        self, conn: sqlite3.Connection, queue: _Queue, entry: VisibilityEntry
    ) -> None:
        seq, lease = _decode_handle(entry.receipt_handle, queue.id)
        now = self._now_ms()
        current = self._check_lease(conn, queue, seq, lease)
        if current is None or current[2] <= now:
            raise errors.MessageNotInflight("the message is not in flight")
        visible_at = now + entry.visibility_timeout_seconds * 1000
        if visible_at - current[3] > MAX_VISIBILITY_TIMEOUT_SECONDS * 1000:
            raise errors.InvalidParameterValue(
                "a message stays in flight at most 12 hours after it was received"
            )
        failure = entry.failure
        conn.execute(
            _SQL["set_visibility"],
            {
                "seq": seq,
                "visible_at": visible_at,
                "reason": failure.reason if failure else None,
                "error": failure.error if failure else None,
            },
        )
        if entry.visibility_timeout_seconds == 0:
            self._wakeup.notify()

    def dead_letter(self, queue: str, receipt_handle: str, *, failure: Failure) -> None:
        source = self._queue(queue)
        if source.attributes.redrive_policy is None:
            raise errors.InvalidParameterValue(f"queue {queue!r} has no dead-letter queue")
        seq, lease = _decode_handle(receipt_handle, source.id)
        with self._write() as conn:
            if self._check_lease(conn, source, seq, lease) is None:
                raise errors.MessageNotInflight("the message is gone")
            if not self._dead_letter_rows(conn, source, [seq], self._now_ms(), failure):
                raise errors.QueueDoesNotExist("the dead-letter queue no longer exists")

    def _check_lease(
        self, conn: sqlite3.Connection, queue: _Queue, seq: int, lease: str
    ) -> tuple[int, str, int, int] | None:
        """The message's lease row, or None if it is gone (deleted, moved or past its
        retention, swept or not); stale handles raise."""
        row = conn.execute(_SQL["message_lease"], {"seq": seq}).fetchone()
        if row is None or row[4] <= self._expired_before(queue, self._now_ms()):
            return None
        if row[0] != queue.id or row[1] != lease:
            raise errors.StaleReceiptHandle(
                "the message was received again after this receipt handle was issued"
            )
        return (row[0], row[1], row[2], row[3])

    def _per_entry(
        self,
        entries: Sequence[DeleteEntry] | Sequence[VisibilityEntry],
        action: Callable[[sqlite3.Connection, Any], None],
    ) -> BatchResult[None]:
        successful: dict[str, None] = {}
        failed: list[BatchEntryError] = []
        with self._write() as conn:
            for entry in entries:
                try:
                    action(conn, entry)
                except errors.VaultqError as exc:
                    failed.append(BatchEntryError(id=entry.id, code=exc.code, message=exc.message))
                else:
                    successful[entry.id] = None
        return BatchResult(successful=successful, failed=failed)

    # -- dead letters ---------------------------------------------------------------------

    def _dead_letter_rows(
        self,
        conn: sqlite3.Connection,
        queue: _Queue,
        seqs: Sequence[int],
        now: int,
        failure: Failure | None,
    ) -> bool:
        policy = queue.attributes.redrive_policy
        target = None if policy is None else self._queue_row(conn, policy.dead_letter_queue)
        if target is None:
            return False
        for seq in seqs:
            self._move(conn, seq, target, now, dl_source=queue.info.name, failure=failure)
        return True

    def _move(
        self,
        conn: sqlite3.Connection,
        seq: int,
        target: _Queue,
        now: int,
        *,
        dl_source: str | None,
        failure: Failure | None = None,
    ) -> None:
        conn.execute(
            _SQL["move_message"],
            {
                "seq": seq,
                "target": target.id,
                "now": now,
                # SQS keeps a standard message's enqueue time on a move to its DLQ; FIFO resets it.
                "reset_enqueued": target.attributes.fifo or dl_source is None,
                "dl_source": dl_source,
                "reason": failure.reason if failure else None,
                "error": failure.error if failure else None,
            },
        )
        conn.execute(_SQL["delete_by_seq"], {"seq": seq})

    def redrive(
        self,
        dead_letter_queue: str,
        *,
        destination: str | None = None,
        message_ids: Sequence[str] | None = None,
    ) -> int:
        dlq = self._queue(dead_letter_queue, fresh=True)
        wanted = None if message_ids is None else set(message_ids)
        moved = 0
        with self._write() as conn:
            now = self._now_ms()
            fixed = None if destination is None else self._require_queue(conn, destination)
            targets: dict[str, _Queue | None] = {}
            rows = conn.execute(
                _SQL["dead_lettered"],
                {
                    "queue": dlq.id,
                    "expired_before": self._expired_before(dlq, now),
                },
            ).fetchall()
            for seq, message_id, source in rows:
                if wanted is not None and message_id not in wanted:
                    continue
                target = fixed
                if target is None and source is not None:
                    if source not in targets:
                        targets[source] = self._queue_row(conn, source)
                    target = targets[source]
                if target is not None:
                    self._move(conn, seq, target, now, dl_source=None)
                    moved += 1
        if moved:
            self._wakeup.notify()
        return moved

    # -- maintenance ----------------------------------------------------------------------

    def purge(self, queue: str) -> int:
        with self._write() as conn:
            target = self._require_queue(conn, queue)
            return conn.execute(_SQL["purge"], {"queue": target.id}).rowcount

    def stats(self, queue: str) -> QueueStats:
        target = self._queue(queue, fresh=True)
        now = self._now_ms()
        bounds = {
            "queue": target.id,
            "now": now,
            "expired_before": self._expired_before(target, now),
        }
        with self._read() as conn:
            visible, in_flight, delayed = conn.execute(_SQL["stats"], bounds).fetchone()
            oldest = conn.execute(_SQL["oldest"], bounds).fetchone()[0]
        age = 0 if oldest is None else max(now - oldest, 0) // 1000
        return QueueStats(
            visible=visible, in_flight=in_flight, delayed=delayed, oldest_message_age_seconds=age
        )

    def _sweep_if_due(self, conn: sqlite3.Connection, queue: _Queue, now: int) -> None:
        """Delete expired messages and deduplication ids, at most once a second per queue."""
        last = self._last_sweep.get(queue.id, 0.0)
        if time.monotonic() - last < _SWEEP_INTERVAL_SECONDS:
            return
        self._last_sweep[queue.id] = time.monotonic()
        conn.execute(
            _SQL["sweep_expired"],
            {
                "queue": queue.id,
                "expired_before": self._expired_before(queue, now),
            },
        )
        conn.execute(_SQL["sweep_dedup"], {"now": now})

    def close(self) -> None:
        for conn in (self._send_conn, self._ack_conn, self._read_conn):
            conn.close()
        self._wakeup.close()

    # -- plumbing -------------------------------------------------------------------------

    def connection_synchronous_modes(self) -> dict[str, int]:
        """``PRAGMA synchronous`` of each connection (2 is FULL, 1 NORMAL), for audits."""
        return {
            role: conn.execute("PRAGMA synchronous").fetchone()[0]
            for role, conn in (
                ("send", self._send_conn),
                ("ack", self._ack_conn),
                ("read", self._read_conn),
            )
        }

    def _connect(self, synchronous: _sqlite.Synchronous) -> sqlite3.Connection:
        return _sqlite.connect(
            self.path, synchronous=synchronous, busy_timeout_seconds=self._busy_timeout_ms / 1000
        )

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @staticmethod
    def _expired_before(queue: _Queue, now: int) -> int:
        return now - queue.attributes.message_retention_seconds * 1000

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return _sqlite.transaction(self._ack_conn, self._write_lock)

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock, self._translate_errors():
            yield self._read_conn

    def _translate_errors(self) -> contextlib.AbstractContextManager[None]:
        return _sqlite.translate_errors()

    def _queue(self, name: str, *, fresh: bool = False) -> _Queue:
        cached = self._queue_cache.get(name)
        if cached is not None and not fresh and time.monotonic() - cached[0] < _QUEUE_CACHE_SECONDS:
            return cached[1]
        with self._read() as conn:
            queue = self._require_queue(conn, name)
        self._queue_cache[name] = (time.monotonic(), queue)
        return queue

    def _require_queue(self, conn: sqlite3.Connection, name: str) -> _Queue:
        queue = self._queue_row(conn, name)
        if queue is None:
            self._queue_cache.pop(name, None)
            raise errors.QueueDoesNotExist(f"no queue named {name!r}")
        return queue

    @staticmethod
    def _queue_row(conn: sqlite3.Connection, name: str) -> _Queue | None:
        row = conn.execute(_SQL["queue_by_name"], {"name": name}).fetchone()
        return None if row is None else _row_to_queue(row)

    def _check_redrive_policy(
        self, conn: sqlite3.Connection, name: str, attributes: QueueAttributes
    ) -> None:
        policy = attributes.redrive_policy
        if policy is None:
            return
        if policy.dead_letter_queue == name:
            raise errors.InvalidAttributeValue("a queue cannot be its own dead-letter queue")
        dlq = self._queue_row(conn, policy.dead_letter_queue)
        if dlq is None:
            raise errors.InvalidAttributeValue(
                f"dead-letter queue {policy.dead_letter_queue!r} does not exist"
            )
        if dlq.attributes.fifo != attributes.fifo:
            raise errors.InvalidAttributeValue("a dead-letter queue has its source's type")
        if not dlq.attributes.redrive_allow_policy.allows(name):
            raise errors.InvalidAttributeValue(
                f"{policy.dead_letter_queue!r} does not allow {name!r} as a source"
            )


def _row_to_queue(row: Sequence[Any]) -> _Queue:
    queue_id, name, attributes, created_at = row
    return _Queue(
        queue_id,
        QueueInfo(name=name, attributes=_load_attributes(attributes), created_at_ms=created_at),
    )


def _standard_rows(
    queue: _Queue, messages: Sequence[OutgoingMessage], now: int
) -> list[dict[str, Any]]:
    """Insert rows for a standard queue: ids, digests and times need no database."""
    delay_seconds = queue.attributes.delay_seconds
    return [
        {
            "queue": queue.id,
            "message_id": str(uuid.uuid4()),
            "body": m.body,
            "md5": _md5(m.body),
            "attributes": _dump_message_attributes(m.attributes),
            "group_id": m.group_id,
            "dedup_id": None,
            "now": now,
            "visible_at": now
            + (delay_seconds if m.delay_seconds is None else m.delay_seconds) * 1000,
        }
        for m in messages
    ]


def _dump_attributes(attributes: QueueAttributes) -> str:
    return json.dumps(asdict(attributes), sort_keys=True)


@functools.lru_cache(maxsize=1024)
def _load_attributes(text: str) -> QueueAttributes:
    """Parsed once per distinct text: the result is frozen, so callers may share it."""
    data = json.loads(text)
    redrive = data.pop("redrive_policy")
    allow = data.pop("redrive_allow_policy")
    return QueueAttributes(
        **data,
        redrive_policy=None if redrive is None else RedrivePolicy(**redrive),
        redrive_allow_policy=RedriveAllowPolicy(
            permission=allow["permission"], source_queues=tuple(allow["source_queues"])
        ),
    )


def _dump_message_attributes(attributes: Mapping[str, MessageAttribute]) -> str | None:
    if not attributes:
        return None
    return json.dumps(
        {
            name: [
                a.data_type,
                base64.b64encode(a.value).decode() if isinstance(a.value, bytes) else a.value,
            ]
            for name, a in attributes.items()
        }
    )


def _load_message_attributes(text: str | None) -> dict[str, MessageAttribute]:
    if text is None:
        return {}
    result = {}
    for name, (data_type, stored) in json.loads(text).items():
        value = base64.b64decode(stored) if data_type.startswith("Binary") else stored
        result[name] = MessageAttribute(data_type=data_type, value=value)
    return result


def _encode_handle(queue_id: int, seq: int, lease: str) -> str:
    return base64.urlsafe_b64encode(f"v1:{queue_id}:{seq}:{lease}".encode()).decode()


def _decode_handle(handle: str, queue_id: int) -> tuple[int, str]:
    try:
        version, handle_queue, seq, lease = (
            base64.urlsafe_b64decode(handle.encode()).decode().split(":")
        )
        if version != "v1" or int(handle_queue) != queue_id or len(lease) != 16:
            raise ValueError(handle)
        return int(seq), lease
    except (ValueError, binascii.Error, UnicodeError):
        raise errors.ReceiptHandleIsInvalid("not a receipt handle of this queue") from None


def _pairs(cursor: sqlite3.Cursor) -> list[tuple[int, int]]:
    return [(row[0], row[-1]) for row in cursor]


def _sequence(seq: int) -> str:
    return f"{seq:020d}"


def _md5(body: str) -> str:
    return hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()


def _sha256(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()
