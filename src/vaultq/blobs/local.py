"""The embedded blob store: object files under ``root/<bucket>/``, their metadata and the
upload-event outbox in one SQLite database.

Layout::

    root/_vaultq/blobs.db          buckets, objects (key -> file), outbox, counters
    root/_vaultq/tmp/              files being written
    root/<bucket>/<xx>/<file id>   an object's bytes, exactly as put; never changed in place

Bucket names cannot contain ``_``, so ``_vaultq`` is never a bucket. Object files are named
by a random id, not by their key: no key can name a path (a key cannot escape its bucket,
whatever it holds), and keys that a file system cannot hold side by side (``a`` and ``a/b``,
``A`` and ``a`` on a case-insensitive disk, segments over 255 bytes) all work.

A put writes the bytes to a temp file, fsyncs it, renames it into the bucket and fsyncs the
directory, then commits one transaction (``synchronous=FULL``) that points the key at the
new file and records the upload events in the outbox. That commit is the moment the object
becomes visible, so its events are durable exactly when it is: a crash before the commit
leaves an unreferenced file (``collect_garbage`` removes it) and no event; a crash after it
leaves the events in the outbox, and ``deliver_pending`` sends them. An event is cleared
from the outbox only after its queue accepted it, so it may be sent twice, never lost.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaultq import _sqlite, errors
from vaultq.blobs import _signing
from vaultq.blobs.notifications import (
    OBJECT_CREATED_PUT,
    OBJECT_REMOVED_DELETE,
    EventMessage,
    ObjectEvent,
    format_sequencer,
)
from vaultq.blobs.protocol import (
    DEFAULT_CONTENT_TYPE,
    DEFAULT_MAX_OBJECT_SIZE_BYTES,
    MAX_LIST_LIMIT,
    SIGNED_METHODS,
    BucketInfo,
    ObjectInfo,
    ObjectListing,
    SignedMethod,
    validate_bucket_name,
    validate_content_type,
    validate_key,
    validate_list_limit,
    validate_prefix,
    validate_signed_url_request,
)

if TYPE_CHECKING:
    import builtins
    import sqlite3
    from collections.abc import Callable, Iterator, Sequence

    from vaultq.blobs.notifications import Notifier, ObjectEventName

log = logging.getLogger(__name__)

STATE_DIRECTORY = "_vaultq"
DEFAULT_URL_PREFIX = "/blobs"
DEFAULT_GARBAGE_AGE_SECONDS = 60 * 60
_READ_ATTEMPTS = 5
_OUTBOX_PAGE = 500
_FILE_ID = re.compile(r"^[0-9a-f]{32}$")

_SQL = {
    "schema": """
        CREATE TABLE IF NOT EXISTS buckets (
            name TEXT PRIMARY KEY,
            created_at_ms INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS objects (
            bucket TEXT NOT NULL,
            object_key TEXT NOT NULL,
            file_id TEXT NOT NULL UNIQUE,
            size_bytes INTEGER NOT NULL,
            etag TEXT NOT NULL,
            content_type TEXT NOT NULL,
            last_modified_ms INTEGER NOT NULL,
            sequencer INTEGER NOT NULL,
            PRIMARY KEY (bucket, object_key)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            queue TEXT NOT NULL,
            body TEXT NOT NULL,
            bucket TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT
        );
        CREATE TABLE IF NOT EXISTS counters (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        ) WITHOUT ROWID;
        INSERT OR IGNORE INTO counters (name, value) VALUES ('sequencer', 0);
    """,
    "insert_bucket": """
        INSERT OR IGNORE INTO buckets (name, created_at_ms) VALUES (:name, :now)
    """,
    "bucket": "SELECT name, created_at_ms FROM buckets WHERE name = :name",
    "buckets": "SELECT name, created_at_ms FROM buckets ORDER BY name",
    "lookup": """
        SELECT o.file_id, o.size_bytes, o.etag, o.content_type, o.last_modified_ms
        FROM buckets AS b
        LEFT JOIN objects AS o ON o.bucket = b.name AND o.object_key = :key
        WHERE b.name = :bucket
    """,
    "upsert_object": """
        INSERT INTO objects (bucket, object_key, file_id, size_bytes, etag, content_type,
                             last_modified_ms, sequencer)
        VALUES (:bucket, :key, :file_id, :size_bytes, :etag, :content_type, :now, :sequencer)
        ON CONFLICT (bucket, object_key) DO UPDATE SET
            file_id = excluded.file_id, size_bytes = excluded.size_bytes,
            etag = excluded.etag, content_type = excluded.content_type,
            last_modified_ms = excluded.last_modified_ms, sequencer = excluded.sequencer
    """,
    "delete_object": "DELETE FROM objects WHERE bucket = :bucket AND object_key = :key",
    "list_objects": """
        SELECT object_key, size_bytes, etag, content_type, last_modified_ms
        FROM objects
        WHERE bucket = :bucket AND object_key > :after AND object_key >= :prefix
          AND substr(object_key, 1, length(:prefix)) = :prefix
        ORDER BY object_key
        LIMIT :limit
    """,
    "file_is_referenced": "SELECT 1 FROM objects WHERE file_id = :file_id",
    "next_sequencer": """
        UPDATE counters SET value = value + 1 WHERE name = 'sequencer' RETURNING value
    """,
    "insert_outbox": """
        INSERT INTO outbox (queue, body, bucket, created_at_ms)
        VALUES (:queue, :body, :bucket, :now)
        RETURNING id
    """,
    "pending_outbox": """
        SELECT id, queue, body FROM outbox
        WHERE id > :after AND created_at_ms <= :cutoff
        ORDER BY id
        LIMIT :limit
    """,
    "count_outbox": "SELECT count(*) FROM outbox",
    "clear_outbox": "DELETE FROM outbox WHERE id = :id",
    "outbox_failed": """
        UPDATE outbox SET attempts = attempts + 1, last_error = :error WHERE id = :id
    """,
}


@dataclasses.dataclass(frozen=True, slots=True)
class _Pending:
    """An outbox row: an event message recorded durably and not yet accepted by its queue."""

    id: int
    message: EventMessage


class LocalBlobs:
    """``BlobStore`` on local files, with S3-style upload events through ``notifier``.

    ``clock`` returns seconds since the epoch. ``signing_secret`` (at least 32 bytes) signs
    the URLs of ``signed_url``; keep it out of logs and settings files that others read.
    Whoever runs the store calls ``deliver_pending()`` at start-up and periodically (events
    whose first send failed or was cut short by a crash wait there), and
    ``collect_garbage()`` now and then.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        signing_secret: bytes,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        max_object_size_bytes: int = DEFAULT_MAX_OBJECT_SIZE_BYTES,
        url_prefix: str = DEFAULT_URL_PREFIX,
        busy_timeout_seconds: float = 30.0,
    ) -> None:
        _check_settings(signing_secret, max_object_size_bytes, url_prefix)
        self.root = Path(root)
        self._secret = bytes(signing_secret)
        self._notifier = notifier
        self._clock = clock
        self._max_object_size_bytes = max_object_size_bytes
        self._url_prefix = url_prefix
        self._busy_timeout_ms = int(busy_timeout_seconds * 1000)
        self._tmp_dir = self.root / STATE_DIRECTORY / "tmp"
        with _translate_os_errors():
            _ensure_directory(self._tmp_dir)
        database = self.root / STATE_DIRECTORY / "blobs.db"
        self._write_conn = self._connect(database, "FULL")
        self._clear_conn = self._connect(database, "NORMAL")
        self._read_conn = self._connect(database, "NORMAL")
        with _sqlite.translate_errors():
            self._write_conn.executescript(_SQL["schema"])
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()

    # -- buckets --------------------------------------------------------------------------

    def create_bucket(self, name: str) -> BucketInfo:
        validate_bucket_name(name)
        with _translate_os_errors():
            _ensure_directory(self.root / name)
        with self._write() as conn:
            conn.execute(_SQL["insert_bucket"], {"name": name, "now": self._now_ms()})
            row = conn.execute(_SQL["bucket"], {"name": name}).fetchone()
        return BucketInfo(name=row[0], created_at_ms=row[1])

    def list_buckets(self) -> builtins.list[BucketInfo]:
        with self._read() as conn:
            rows = conn.execute(_SQL["buckets"]).fetchall()
        return [BucketInfo(name=row[0], created_at_ms=row[1]) for row in rows]

    # -- objects --------------------------------------------------------------------------

    def put(
        self, bucket: str, key: str, data: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        _check_address(bucket, key)
        validate_content_type(content_type)
        if not isinstance(data, bytes):
            raise errors.InvalidParameterValue("object data must be bytes")
        if len(data) > self._max_object_size_bytes:
            raise errors.EntityTooLarge(
                f"{len(data)} bytes; this store takes at most {self._max_object_size_bytes}"
            )
        self._require_bucket(bucket)  # before writing any byte
        draft = ObjectInfo(
            bucket=bucket,
            key=key,
            size_bytes=len(data),
            etag=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            last_modified_ms=0,
            content_type=content_type,
        )
        file_id = uuid.uuid4().hex
        self._write_file(bucket, file_id, data)
        try:
            info, replaced, pending = self._commit_put(draft, file_id=file_id)
        except errors.VaultqError:
            self._discard_if_unreferenced(bucket, file_id)
            raise
        if replaced is not None:
            self._remove_file(bucket, replaced)
        self._send(pending)
        return info

    def get(self, bucket: str, key: str) -> tuple[bytes, ObjectInfo]:
        _check_address(bucket, key)
        for _ in range(_READ_ATTEMPTS):
            info, file_id = self._lookup(bucket, key)
            try:
                data = self._object_path(bucket, file_id).read_bytes()
            except FileNotFoundError:
                continue  # replaced or deleted since the lookup: look again
            except OSError as exc:
                raise errors.BackendUnavailable(f"cannot read an object file: {exc}") from exc
            if len(data) != info.size_bytes:
                raise errors.BackendUnavailable("an object file does not have its recorded size")
            return data, info
        raise errors.BackendUnavailable("an object file is missing (changed by something else?)")

    def head(self, bucket: str, key: str) -> ObjectInfo:
        _check_address(bucket, key)
        return self._lookup(bucket, key)[0]

    def delete(self, bucket: str, key: str) -> None:
        _check_address(bucket, key)
        file_id, pending = self._commit_delete(bucket, key)
        if file_id is not None:
            self._remove_file(bucket, file_id)
        self._send(pending)

    def list(
        self,
        bucket: str,
        prefix: str = "",
        *,
        limit: int = MAX_LIST_LIMIT,
        cursor: str | None = None,
    ) -> ObjectListing:
        validate_bucket_name(bucket)
        validate_prefix(prefix)
        validate_list_limit(limit)
        after = "" if cursor is None else _decode_cursor(cursor, prefix)
        self._require_bucket(bucket)
        with self._read() as conn:
            rows = conn.execute(
                _SQL["list_objects"],
                {"bucket": bucket, "prefix": prefix, "after": after, "limit": limit + 1},
            ).fetchall()
        objects = tuple(_info(bucket, row[0], row[1:]) for row in rows[:limit])
        more = len(rows) > limit
        return ObjectListing(
            objects=objects, next_cursor=_encode_cursor(prefix, objects[-1].key) if more else None
        )

    # -- signed URLs ----------------------------------------------------------------------

    def signed_url(
        self, bucket: str, key: str, *, expires_in_seconds: int, method: SignedMethod = "GET"
    ) -> str:
        _check_address(bucket, key)
        validate_signed_url_request(expires_in_seconds, method)
        expires_at = int(self._clock()) + expires_in_seconds
        signature = _signing.signature(
            self._secret, method=method, bucket=bucket, key=key, expires_at=expires_at
        )
        request = _signing.SignedRequest(
            bucket=bucket, key=key, expires_at_seconds=expires_at, signature=signature
        )
        return _signing.build_url(self._url_prefix, request)

    def verify_signed_url(self, url: str, *, method: SignedMethod = "GET") -> tuple[str, str]:
        if method not in SIGNED_METHODS:
            raise errors.InvalidParameterValue(f"signed URLs are for GET or PUT, not {method!r}")
        request = _signing.parse_url(url, self._url_prefix)
        expected = _signing.signature(
            self._secret,
            method=method,
            bucket=request.bucket,
            key=request.key,
            expires_at=request.expires_at_seconds,
        )
        if not secrets.compare_digest(expected, request.signature):
            raise errors.InvalidSignature("the signature does not match this URL and method")
        if self._clock() > request.expires_at_seconds:
            raise errors.SignatureExpired("the signed URL has expired")
        return request.bucket, request.key

    # -- the outbox -----------------------------------------------------------------------

    def deliver_pending(self, *, min_age_seconds: float = 0.0) -> int:
        """Send the upload events left in the outbox; returns how many their queues took.

        Call it at start-up (``min_age_seconds=0``) and periodically; a periodic caller
        passes a few seconds so as not to race puts that are sending their own events
        (a race only sends an event twice, which consumers of S3 events must accept)."""
        if self._notifier is None:
            return 0
        cutoff = self._now_ms() - int(min_age_seconds * 1000)
        delivered, after = 0, 0
        while page := self._pending_page(after, cutoff):
            delivered += self._send(page)
            after = page[-1].id
        return delivered

    def pending_count(self) -> int:
        """Events recorded and not yet accepted by their queue."""
        with self._read() as conn:
            count: int = conn.execute(_SQL["count_outbox"]).fetchone()[0]
        return count

    def collect_garbage(self, *, min_age_seconds: float = DEFAULT_GARBAGE_AGE_SECONDS) -> int:
        """Remove files no object refers to (left by crashed writes), once they are older
        than ``min_age_seconds``, so that a write in progress keeps its file. Returns how
        many files were removed."""
        cutoff = self._clock() - min_age_seconds
        buckets = self.list_buckets()
        with _translate_os_errors():
            candidates = [path for path in self._tmp_dir.iterdir() if _older(path, cutoff)]
            for bucket in buckets:
                for path in (self.root / bucket.name).glob("*/*"):
                    if _older(path, cutoff) and not self._is_referenced(path.name):
                        candidates.append(path)
            for path in candidates:
                path.unlink(missing_ok=True)
        if candidates:
            log.info("removed %d unreferenced blob files", len(candidates))
        return len(candidates)

    def connection_synchronous_modes(self) -> dict[str, int]:
        """``PRAGMA synchronous`` of each connection (2 is FULL, 1 NORMAL), for audits."""
        conns = {"write": self._write_conn, "clear": self._clear_conn, "read": self._read_conn}
        with _sqlite.translate_errors():
            return {
                role: conn.execute("PRAGMA synchronous").fetchone()[0]
                for role, conn in conns.items()
            }

    def close(self) -> None:
        for conn in (self._write_conn, self._clear_conn, self._read_conn):
            conn.close()

    # -- internals ------------------------------------------------------------------------

    def _commit_put(
        self, draft: ObjectInfo, *, file_id: str
    ) -> tuple[ObjectInfo, str | None, builtins.list[_Pending]]:
        """Point the key at its new file and record the events: one transaction."""
        with self._write() as conn:
            info = dataclasses.replace(draft, last_modified_ms=self._now_ms())
            replaced = _file_id_of(conn, info.bucket, info.key)
            sequencer = conn.execute(_SQL["next_sequencer"]).fetchone()[0]
            conn.execute(
                _SQL["upsert_object"],
                {
                    "bucket": info.bucket,
                    "key": info.key,
                    "file_id": file_id,
                    "size_bytes": info.size_bytes,
                    "etag": info.etag,
                    "content_type": info.content_type,
                    "now": info.last_modified_ms,
                    "sequencer": sequencer,
                },
            )
            event = _event(
                OBJECT_CREATED_PUT,
                info.bucket,
                info.key,
                sequencer,
                info.last_modified_ms,
                size_bytes=info.size_bytes,
                etag=info.etag,
            )
            pending = self._record(conn, event)
        return info, replaced, pending

    def _commit_delete(self, bucket: str, key: str) -> tuple[str | None, builtins.list[_Pending]]:
        with self._write() as conn:
            file_id = _file_id_of(conn, bucket, key)
            if file_id is None:
                return None, []
            conn.execute(_SQL["delete_object"], {"bucket": bucket, "key": key})
            sequencer = conn.execute(_SQL["next_sequencer"]).fetchone()[0]
            event = _event(OBJECT_REMOVED_DELETE, bucket, key, sequencer, self._now_ms())
            return file_id, self._record(conn, event)

    def _record(self, conn: sqlite3.Connection, event: ObjectEvent) -> builtins.list[_Pending]:
        """Write the event's messages to the outbox, inside the caller's transaction."""
        if self._notifier is None:
            return []
        pending = []
        for message in self._notifier.messages_for(event):
            row = conn.execute(
                _SQL["insert_outbox"],
                {
                    "queue": message.queue,
                    "body": message.body,
                    "bucket": event.bucket,
                    "now": event.time_ms,
                },
            ).fetchone()
            pending.append(_Pending(row[0], message))
        return pending

    def _send(self, pending: Sequence[_Pending]) -> int:
        """Send each message; clear those their queue took, note the others for a retry."""
        if self._notifier is None or not pending:
            return 0
        sent: builtins.list[int] = []
        for item in pending:
            try:
                self._notifier.send(item.message)
            except errors.VaultqError as exc:
                self._note_failure(item.id, exc.code)
                log.warning(
                    "upload event %d for queue %s stays in the outbox: %s",
                    item.id,
                    item.message.queue,
                    exc.code,
                )
                continue
            sent.append(item.id)
        # Clearing after the send: a crash in between sends the event again, never loses it.
        with self._clear() as conn:
            conn.executemany(_SQL["clear_outbox"], [{"id": each} for each in sent])
        return len(sent)

    def _note_failure(self, outbox_id: int, code: str) -> None:
        with self._clear() as conn:
            conn.execute(_SQL["outbox_failed"], {"id": outbox_id, "error": code})

    def _pending_page(self, after: int, cutoff_ms: int) -> builtins.list[_Pending]:
        with self._read() as conn:
            rows = conn.execute(
                _SQL["pending_outbox"], {"after": after, "cutoff": cutoff_ms, "limit": _OUTBOX_PAGE}
            ).fetchall()
        return [_Pending(row[0], EventMessage(queue=row[1], body=row[2])) for row in rows]

    def _lookup(self, bucket: str, key: str) -> tuple[ObjectInfo, str]:
        with self._read() as conn:
            row = conn.execute(_SQL["lookup"], {"bucket": bucket, "key": key}).fetchone()
        if row is None:
            raise errors.NoSuchBucket(f"no bucket named {bucket!r}")
        if row[0] is None:
            raise errors.NoSuchKey("the bucket holds no object under that key")
        return _info(bucket, key, row[1:]), row[0]

    def _require_bucket(self, bucket: str) -> None:
        with self._read() as conn:
            if conn.execute(_SQL["bucket"], {"name": bucket}).fetchone() is None:
                raise errors.NoSuchBucket(f"no bucket named {bucket!r}")

    def _discard_if_unreferenced(self, bucket: str, file_id: str) -> None:
        # A failed commit normally leaves the new file unreferenced; if the database cannot
        # say, the file stays and collect_garbage decides later.
        with contextlib.suppress(errors.VaultqError, OSError):
            if not self._is_referenced(file_id):
                self._object_path(bucket, file_id).unlink(missing_ok=True)

    def _is_referenced(self, file_id: str) -> bool:
        with self._read() as conn:
            row = conn.execute(_SQL["file_is_referenced"], {"file_id": file_id}).fetchone()
        return row is not None

    def _write_file(self, bucket: str, file_id: str, data: bytes) -> None:
        """Write the bytes durably under their final name; no object refers to it yet."""
        temporary = self._tmp_dir / file_id
        final = self._object_path(bucket, file_id)
        with _translate_os_errors():
            try:
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                _ensure_directory(final.parent)
                temporary.replace(final)
            except OSError:
                temporary.unlink(missing_ok=True)
                raise
            _fsync_directory(final.parent)

    def _remove_file(self, bucket: str, file_id: str) -> None:
        # Best effort: a file left behind is unreferenced and collect_garbage removes it.
        with contextlib.suppress(OSError):
            self._object_path(bucket, file_id).unlink(missing_ok=True)

    def _object_path(self, bucket: str, file_id: str) -> Path:
        if not _FILE_ID.match(file_id):
            raise errors.BackendUnavailable("the blob database names a malformed file id")
        return self.root / bucket / file_id[:2] / file_id

    def _connect(self, path: Path, synchronous: _sqlite.Synchronous) -> sqlite3.Connection:
        return _sqlite.connect(
            path, synchronous=synchronous, busy_timeout_seconds=self._busy_timeout_ms / 1000
        )

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with _sqlite.transaction(self._write_conn, self._write_lock) as conn:
            yield conn

    @contextlib.contextmanager
    def _clear(self) -> Iterator[sqlite3.Connection]:
        with _sqlite.transaction(self._clear_conn, self._write_lock) as conn:
            yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock, _sqlite.translate_errors():
            yield self._read_conn


def _check_settings(signing_secret: bytes, max_object_size_bytes: int, url_prefix: str) -> None:
    if not isinstance(signing_secret, bytes) or len(signing_secret) < _signing.MIN_SECRET_BYTES:
        raise errors.InvalidSettings(
            f"signing_secret must be at least {_signing.MIN_SECRET_BYTES} random bytes"
        )
    if isinstance(max_object_size_bytes, bool) or not isinstance(max_object_size_bytes, int):
        raise errors.InvalidSettings("max_object_size_bytes must be an integer")
    if not 0 <= max_object_size_bytes <= DEFAULT_MAX_OBJECT_SIZE_BYTES:
        raise errors.InvalidSettings(
            f"max_object_size_bytes must be 0..{DEFAULT_MAX_OBJECT_SIZE_BYTES}"
        )
    if not url_prefix.startswith("/") or url_prefix.endswith("/") or "?" in url_prefix:
        raise errors.InvalidSettings("url_prefix is a path like '/blobs' (no trailing '/')")


def _check_address(bucket: str, key: str) -> None:
    validate_bucket_name(bucket)
    validate_key(key)


def _event(
    name: ObjectEventName,
    bucket: str,
    key: str,
    sequencer: int,
    time_ms: int,
    *,
    size_bytes: int | None = None,
    etag: str | None = None,
) -> ObjectEvent:
    return ObjectEvent(
        name=name,
        bucket=bucket,
        key=key,
        sequencer=format_sequencer(sequencer),
        time_ms=time_ms,
        request_id=secrets.token_hex(8).upper(),  # S3's request ids are 16 hex digits
        size_bytes=size_bytes,
        etag=etag,
    )


def _file_id_of(conn: sqlite3.Connection, bucket: str, key: str) -> str | None:
    row = conn.execute(_SQL["lookup"], {"bucket": bucket, "key": key}).fetchone()
    if row is None:
        raise errors.NoSuchBucket(f"no bucket named {bucket!r}")
    file_id: str | None = row[0]
    return file_id


def _info(bucket: str, key: str, row: Sequence[Any]) -> ObjectInfo:
    size_bytes, etag, content_type, last_modified_ms = row
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size_bytes=size_bytes,
        etag=etag,
        last_modified_ms=last_modified_ms,
        content_type=content_type,
    )


def _encode_cursor(prefix: str, after: str) -> str:
    raw = json.dumps({"v": 1, "prefix": prefix, "after": after}).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _decode_cursor(cursor: str, prefix: str) -> str:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeError, AttributeError):
        decoded = None
    valid = (
        isinstance(decoded, dict)
        and decoded.get("v") == 1
        and isinstance(decoded.get("after"), str)
        and decoded.get("prefix") == prefix
    )
    if not valid:
        raise errors.InvalidParameterValue("the cursor is not one this listing returned")
    after: str = decoded["after"]
    return after


def _older(path: Path, cutoff_seconds: float) -> bool:
    try:
        return path.is_file() and path.stat().st_mtime < cutoff_seconds
    except FileNotFoundError:
        return False


def _ensure_directory(path: Path) -> None:
    """Create ``path`` (private to this user) and make its entry durable in its parent."""
    if path.is_dir():
        return
    _ensure_directory(path.parent)
    path.mkdir(mode=0o700, exist_ok=True)
    _fsync_directory(path.parent)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _translate_os_errors() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise errors.BackendUnavailable(f"blob files: {exc.strerror or exc}") from exc


if TYPE_CHECKING:
    from vaultq.blobs.protocol import BlobStore

    # mypy proves here that the embedded store meets the contract.
    _FITS_PROTOCOL: type[BlobStore] = LocalBlobs
