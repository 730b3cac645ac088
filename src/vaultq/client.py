"""The client side of the private-embeddings flow: seal messages, upload them as one job.

``upload_messages`` makes one data key per job, seals each text with it
(``vaultq.privacy.envelope``), wraps the key to the worker fleet's public key for that job
(``vaultq.privacy.keys``), wipes its copy of the key, and puts ONE upload object into a
bucket under ``jobs/<tenant>/<job_id>.json``. The bucket's ``ObjectCreated`` notification
then brings the job to a worker (``vaultq.embeddings.pipeline``).

Upload object, version 1 (UTF-8 JSON, every field required but ``client_id`` and
``wrapped_vector_key``, no other field allowed)::

    {"version": 1, "tenant": "...", "job_id": "...", "client_id": "...",
     "wrapped_key": "<base64 of WrappedKey.to_bytes()>",
     "wrapped_vector_key": "<base64 of WrappedKey.to_bytes()>",
     "messages": [{"message_id": "...", "sealed": "<base64 of the sealed text>"}, ...]}

``wrapped_vector_key`` is the tenant's vector key (32 random bytes the client keeps, see
``read_vector_key``) wrapped to the workers for this tenant and job only
(``vaultq.privacy.keys.wrap_vector_key``); a sealed collection needs it, to seal the vectors.

``client_id`` is present when the upload is a tracked job: ``upload_messages(jobs=...)``
creates the job ``tenant#client_id#job_id`` before the put, and the worker reports its
progress there (S3 events cannot carry the job themselves).

A search query travels as a ``SealedQuery``: the text sealed under its own data key (AAD
``vaultq/v1|tenant|query_id``), the key wrapped to the workers for ``tenant`` and
``query_id``, and (for a sealed collection) the tenant's vector key wrapped for the same
tenant and ``query_id``; ``seal_query`` makes one on the caller's machine. When the API
seals the text, the caller sends a ``WrappedVectorKey`` (``wrap_vector_key_for``) and the
API seals the query under its ``request_id``: the API never holds a vector key. A generate
request carries a ``WrappedVectorKey`` too.

The public key a client is given decides the suite: a 32-byte key is ``x25519``, a
1,216-byte one the hybrid post-quantum ``mlkem768-x25519`` (``vaultq.privacy.keys``); a
hybrid wrapped key is about 1.2 KB instead of 98 bytes, so each upload, query and vector key
grant grows by that much per wrapped key.

What it holds in clear: the tenant, the job id, the worker key id and suite (inside the
wrapped key), the message ids, how many messages there are and each text's length (a sealed
text is 29 bytes longer than its UTF-8 text). Texts and the data key are never in it in
usable form.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from vaultq import errors
from vaultq.jobs.protocol import JobKey
from vaultq.privacy.envelope import seal
from vaultq.privacy.keys import (
    VECTOR_KEY_BYTES,
    WrappedKey,
    key_id_for,
    new_data_key,
    wrap_data_key,
    wrap_vector_key,
)
from vaultq.privacy.zeroise import wipe, wiping
from vaultq.vectors.protocol import validate_id

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

    from vaultq.blobs.protocol import BlobStore, ObjectInfo
    from vaultq.jobs.protocol import JobStore

__all__ = [
    "MAX_MESSAGES",
    "MAX_QUERY_BYTES",
    "MAX_SEALED_MESSAGE_BYTES",
    "MAX_TEXT_BYTES",
    "MAX_UPLOAD_BYTES",
    "UPLOAD_FORMAT_VERSION",
    "UPLOAD_PREFIX",
    "InvalidUpload",
    "SealedMessage",
    "SealedQuery",
    "SealedUpload",
    "UploadReceipt",
    "WrappedVectorKey",
    "encode_text",
    "new_vector_key_file",
    "read_vector_key",
    "seal_messages",
    "seal_query",
    "split_uploads",
    "upload_key",
    "upload_messages",
    "wrap_vector_key_for",
]

UPLOAD_FORMAT_VERSION = 1
UPLOAD_PREFIX = "jobs/"
MAX_MESSAGES = 10_000
#: A message's text, in UTF-8 bytes.
MAX_TEXT_BYTES = 64 * 1024
#: What sealing adds to a text: the envelope's version byte, nonce and tag.
_SEAL_OVERHEAD_BYTES = 29
#: A sealed text: the text plus the envelope's 29 bytes.
MAX_SEALED_MESSAGE_BYTES = MAX_TEXT_BYTES + _SEAL_OVERHEAD_BYTES
#: The whole upload object, checked before it is parsed.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
#: What an upload object holds besides its messages, at most: ids, and two wrapped keys of
#: ~1.6 KB of base64 each when hybrid.
_UPLOAD_HEADER_BYTES = 16 * 1024
#: A search query's text, in UTF-8 bytes.
MAX_QUERY_BYTES = 2048
_FIELDS = frozenset({"version", "tenant", "job_id", "wrapped_key", "messages"})
_OPTIONAL_FIELDS = frozenset({"client_id", "wrapped_vector_key"})
_QUERY_FIELDS = frozenset({"query_id", "wrapped_key", "sealed"})
_OPTIONAL_QUERY_FIELDS = frozenset({"wrapped_vector_key"})
_VECTOR_KEY_FIELDS = frozenset({"request_id", "wrapped_key"})
_MESSAGE_FIELDS = frozenset({"message_id", "sealed"})


class InvalidUpload(errors.InvalidParameterValue):
    """An upload object that is not a well-formed version-1 document, or that lies at a key
    other than its own tenant and job's. The message names fields, never their values."""

    code = "InvalidUpload"
    failure_reason = "INVALID_UPLOAD"


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedMessage:
    message_id: str
    #: The envelope's version-1 bytes, bound to ``tenant|message_id``.
    sealed: bytes

    def __post_init__(self) -> None:
        _check_id("message_id", self.message_id)
        if not isinstance(self.sealed, bytes) or not 1 <= len(self.sealed) <= (
            MAX_SEALED_MESSAGE_BYTES
        ):
            raise InvalidUpload(
                f"a sealed message is 1-{MAX_SEALED_MESSAGE_BYTES:,} bytes (a text of at most "
                f"{MAX_TEXT_BYTES:,} bytes, sealed)"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedUpload:
    """One job's upload object; ``to_json`` and ``from_json`` are exact inverses."""

    tenant: str
    job_id: str
    wrapped_key: WrappedKey
    messages: tuple[SealedMessage, ...]
    version: int = UPLOAD_FORMAT_VERSION
    #: The client whose job tracks this upload (``tenant#client_id#job_id``); None: untracked.
    client_id: str | None = None
    #: The tenant's vector key wrapped for this tenant and job; None: indexed collections only.
    wrapped_vector_key: WrappedKey | None = None

    def __post_init__(self) -> None:
        if self.version != UPLOAD_FORMAT_VERSION:
            raise InvalidUpload(f"unknown upload format version (known: {UPLOAD_FORMAT_VERSION})")
        _check_id("tenant", self.tenant)
        _check_id("job_id", self.job_id)
        if self.client_id is not None:
            _check_id("client_id", self.client_id)
        _check_wrapped(self.wrapped_key, self.wrapped_vector_key)
        if not isinstance(self.messages, tuple):
            raise InvalidUpload("messages must be a tuple of SealedMessage")
        if not 1 <= len(self.messages) <= MAX_MESSAGES:
            raise InvalidUpload(
                f"an upload holds 1-{MAX_MESSAGES:,} messages, not {len(self.messages):,}"
            )
        seen: set[str] = set()
        for message in self.messages:
            # Shown: a message id passed the id rules, and an upload holds it in clear anyway.
            if message.message_id in seen:
                raise InvalidUpload(f"an upload names message_id {message.message_id} twice")
            seen.add(message.message_id)

    @property
    def object_key(self) -> str:
        return upload_key(tenant=self.tenant, job_id=self.job_id)

    @property
    def job_key(self) -> JobKey | None:
        if self.client_id is None:
            return None
        return JobKey(tenant_id=self.tenant, client_id=self.client_id, job_id=self.job_id)

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "version": self.version,
            "tenant": self.tenant,
            "job_id": self.job_id,
            **({} if self.client_id is None else {"client_id": self.client_id}),
            "wrapped_key": _b64(self.wrapped_key.to_bytes()),
            **_optional_key(self.wrapped_vector_key),
            "messages": [
                {"message_id": message.message_id, "sealed": _b64(message.sealed)}
                for message in self.messages
            ],
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SealedUpload:
        """Parse an upload object strictly: ``InvalidUpload`` for anything but exactly the
        version-1 document (unknown or duplicate fields, wrong types, sizes beyond the
        limits); ``DecryptionFailed`` for a malformed wrapped key."""
        if not isinstance(data, bytes) or len(data) > MAX_UPLOAD_BYTES:
            raise InvalidUpload(f"an upload object is at most {MAX_UPLOAD_BYTES} bytes")
        try:
            document = json.loads(data, object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise InvalidUpload("an upload object is one UTF-8 JSON document") from None
        fields = _fields(document, _FIELDS, "the upload", optional=_OPTIONAL_FIELDS)
        messages = fields["messages"]
        if not isinstance(messages, list) or len(messages) > MAX_MESSAGES:
            raise InvalidUpload(f"messages must be a list of at most {MAX_MESSAGES}")
        version = fields["version"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidUpload("version must be an integer")
        return cls(
            version=version,
            tenant=_text(fields, "tenant"),
            job_id=_text(fields, "job_id"),
            client_id=_text(fields, "client_id") if "client_id" in fields else None,
            wrapped_key=_wrapped(fields, "wrapped_key"),
            wrapped_vector_key=_wrapped_vector_key(fields),
            messages=tuple(_message(entry) for entry in messages),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedQuery:
    """A search query sealed for the worker fleet; ``as_json``/``from_json`` are inverses."""

    query_id: str
    wrapped_key: WrappedKey
    #: The envelope's version-1 bytes, bound to ``tenant|query_id``.
    sealed: bytes
    #: The tenant's vector key wrapped for ``tenant`` and ``query_id``; sealed collections.
    wrapped_vector_key: WrappedKey | None = None

    def __post_init__(self) -> None:
        _check_id("query_id", self.query_id)
        _check_wrapped(self.wrapped_key, self.wrapped_vector_key)
        if not isinstance(self.sealed, bytes) or not 1 <= len(self.sealed) <= MAX_QUERY_BYTES + 29:
            raise InvalidUpload(f"a sealed query is 1-{MAX_QUERY_BYTES + 29} bytes")

    def as_json(self) -> dict[str, str]:
        return {
            "query_id": self.query_id,
            "wrapped_key": _b64(self.wrapped_key.to_bytes()),
            "sealed": _b64(self.sealed),
            **_optional_key(self.wrapped_vector_key),
        }

    @classmethod
    def from_json(cls, document: object) -> SealedQuery:
        """``InvalidUpload`` for anything but exactly the three fields and, optionally,
        ``wrapped_vector_key``, well formed."""
        fields = _fields(document, _QUERY_FIELDS, "a sealed query", optional=_OPTIONAL_QUERY_FIELDS)
        return cls(
            query_id=_text(fields, "query_id"),
            wrapped_key=_wrapped(fields, "wrapped_key"),
            sealed=_unb64(fields, "sealed"),
            wrapped_vector_key=_wrapped_vector_key(fields),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WrappedVectorKey:
    """A tenant's vector key wrapped to the workers for one request id of that tenant (a
    generate job, or a query the API seals under ``request_id``)."""

    request_id: str
    wrapped_key: WrappedKey

    def __post_init__(self) -> None:
        _check_id("request_id", self.request_id)
        _check_wrapped(self.wrapped_key, None)

    def as_json(self) -> dict[str, str]:
        return {"request_id": self.request_id, "wrapped_key": _b64(self.wrapped_key.to_bytes())}

    @classmethod
    def from_json(cls, document: object) -> WrappedVectorKey:
        """``InvalidUpload`` for anything but exactly the two fields, well formed."""
        fields = _fields(document, _VECTOR_KEY_FIELDS, "a wrapped vector key")
        return cls(
            request_id=_text(fields, "request_id"), wrapped_key=_wrapped(fields, "wrapped_key")
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadReceipt:
    job_id: str
    bucket: str
    object_key: str
    message_count: int
    size_bytes: int


def upload_key(*, tenant: str, job_id: str) -> str:
    """Where a job's upload object lives: ``jobs/<tenant>/<job_id>.json``."""
    return f"{UPLOAD_PREFIX}{_check_id('tenant', tenant)}/{_check_id('job_id', job_id)}.json"


def new_vector_key_file(path: Path) -> None:
    """Write a new tenant vector key (32 random bytes, base64) to a new file, mode 0600."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise errors.InvalidParameterValue(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "w") as file:
        file.write(base64.b64encode(os.urandom(VECTOR_KEY_BYTES)).decode() + "\n")


def read_vector_key(path: Path) -> bytearray:
    """A tenant vector key file's 32 bytes, in a buffer the caller wipes (the file's text
    and its decoding are immutable copies Python cannot wipe)."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise errors.InvalidParameterValue(
            f"cannot read the vector key file {path}: {exc.strerror}"
        ) from None
    try:
        key = bytearray(base64.b64decode(text.strip(), validate=True))
    except (ValueError, binascii.Error):
        key = bytearray()
    if len(key) != VECTOR_KEY_BYTES:
        wipe(key)
        raise errors.InvalidParameterValue(
            f"{path} is not a vector key file (the base64 of {VECTOR_KEY_BYTES} bytes, "
            "as `vaultq keys vector` writes)"
        )
    return key


def wrap_vector_key_for(
    vector_key: bytes | bytearray,
    *,
    public_key: bytes,
    tenant: str,
    new_request_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> WrappedVectorKey:
    """Wrap ``tenant``'s vector key to the workers of ``public_key`` for a new request id."""
    request_id = _check_id("request_id", new_request_id())
    wrapped = wrap_vector_key(
        vector_key, public_key=public_key, tenant=_check_id("tenant", tenant), job_id=request_id
    )
    return WrappedVectorKey(request_id=request_id, wrapped_key=wrapped)


def seal_messages(
    messages: Sequence[tuple[str, str]],
    *,
    public_key: bytes,
    tenant: str,
    vector_key: bytes | bytearray | None = None,
    key_id: str | None = None,
    job_id: str | None = None,
    new_job_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> SealedUpload:
    """Seal ``[(message_id, text)]`` under a fresh data key, wrapped to ``public_key`` (a raw
    worker public key of either suite) for a new job, with the tenant's ``vector_key``
    (needed by sealed collections) wrapped for the same job. ``key_id``, when given, must be
    the public key's id: a guard against a key id and public key that were copied from
    different places."""
    if key_id is not None and key_id != key_id_for(public_key):
        raise errors.InvalidParameterValue("key_id is not the id of this public key")
    job = _check_id("job_id", job_id if job_id is not None else new_job_id())
    _check_id("tenant", tenant)
    with wiping(new_data_key()) as data_key:
        wrapped = wrap_data_key(data_key, public_key=public_key, tenant=tenant, job_id=job)
        sealed = tuple(
            SealedMessage(
                message_id=_check_id("message_id", message_id),
                sealed=seal(
                    data_key,
                    tenant=tenant,
                    message_id=message_id,
                    plaintext=encode_text(text, where=f"message {message_id}: text"),
                ),
            )
            for message_id, text in messages
        )
    return SealedUpload(
        tenant=tenant,
        job_id=job,
        wrapped_key=wrapped,
        wrapped_vector_key=_wrap_optional(vector_key, public_key, tenant, job),
        messages=sealed,
    )


def seal_query(
    text: str,
    *,
    public_key: bytes,
    tenant: str,
    vector_key: bytes | bytearray | None = None,
    new_query_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> SealedQuery:
    """Seal a search query's ``text`` for the workers of ``public_key``, for ``tenant`` only:
    a fresh data key seals it, and is wrapped for ``tenant`` and a new query id, as is the
    tenant's ``vector_key`` (needed to search a sealed collection)."""
    plaintext = encode_text(text, where="a query", max_bytes=MAX_QUERY_BYTES)
    query_id = _check_id("query_id", new_query_id())
    _check_id("tenant", tenant)
    with wiping(new_data_key()) as data_key:
        wrapped = wrap_data_key(data_key, public_key=public_key, tenant=tenant, job_id=query_id)
        sealed = seal(data_key, tenant=tenant, message_id=query_id, plaintext=plaintext)
    return SealedQuery(
        query_id=query_id,
        wrapped_key=wrapped,
        sealed=sealed,
        wrapped_vector_key=_wrap_optional(vector_key, public_key, tenant, query_id),
    )


def upload_messages(
    blobs: BlobStore,
    messages: Sequence[tuple[str, str]],
    *,
    bucket: str,
    public_key: bytes,
    tenant: str,
    vector_key: bytes | bytearray | None = None,
    key_id: str | None = None,
    job_id: str | None = None,
    jobs: JobStore | None = None,
    client_id: str | None = None,
) -> UploadReceipt:
    """Seal ``messages`` as one job (``seal_messages``) and put its upload object into
    ``bucket``; returns the job id and counts. With ``jobs`` (and the ``client_id`` the
    caller reads jobs as, e.g. its API subject) the upload is first created as a ``queued``
    job there, whose progress the worker then reports (``GET /jobs/{job_id}``)."""
    if (jobs is None) != (client_id is None):
        raise errors.InvalidParameterValue("a tracked upload needs both jobs and client_id")
    upload = seal_messages(
        messages,
        public_key=public_key,
        tenant=tenant,
        vector_key=vector_key,
        key_id=key_id,
        job_id=job_id,
    )
    if client_id is not None:
        upload = replace(upload, client_id=client_id)
    data = upload.to_json()
    if len(data) > MAX_UPLOAD_BYTES:
        # Refused here: a worker would dead-letter it unread (split_uploads avoids it).
        raise errors.EntityTooLarge(
            f"the upload is {len(data):,} bytes, at most {MAX_UPLOAD_BYTES:,}: "
            "split the messages into several uploads"
        )
    if jobs is not None and client_id is not None:
        jobs.create(
            JobKey(tenant_id=tenant, client_id=client_id, job_id=upload.job_id),
            attributes={"messages_total": len(upload.messages)},
        )
    info: ObjectInfo = blobs.put(bucket, upload.object_key, data, content_type="application/json")
    return UploadReceipt(
        job_id=upload.job_id,
        bucket=bucket,
        object_key=upload.object_key,
        message_count=len(upload.messages),
        size_bytes=info.size_bytes,
    )


def split_uploads(
    messages: Sequence[tuple[str, str]],
    *,
    max_messages: int = MAX_MESSAGES,
    max_bytes: int = MAX_UPLOAD_BYTES - _UPLOAD_HEADER_BYTES,
) -> list[list[tuple[str, str]]]:
    """``messages`` in order, cut into as few runs as fit one upload each: at most
    ``max_messages``, and at most ``max_bytes`` of messages in the upload object (each
    message costs exactly its JSON there: its id and the base64 of its sealed text)."""
    runs: list[list[tuple[str, str]]] = [[]]
    size = 0
    for message_id, text in messages:
        _check_id("message_id", message_id)
        sealed_bytes = len(encode_text(text, where=f"message {message_id}: text"))
        sealed_bytes += _SEAL_OVERHEAD_BYTES
        cost = len('{"message_id":"","sealed":""},') + len(message_id) + (sealed_bytes + 2) // 3 * 4
        if runs[-1] and (len(runs[-1]) == max_messages or size + cost > max_bytes):
            runs.append([])
            size = 0
        runs[-1].append((message_id, text))
        size += cost
    return runs if runs[-1] else []


def encode_text(text: object, *, where: str, max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """``text`` as the UTF-8 that is sealed: 1 to ``max_bytes`` bytes of it. Errors start
    with ``where`` and show no part of the text."""
    if not isinstance(text, str):
        raise errors.InvalidParameterValue(f"{where} must be a string")
    try:
        data = text.encode()
    except UnicodeEncodeError:
        raise errors.InvalidParameterValue(
            f"{where} holds a lone surrogate (e.g. \\ud800), which UTF-8 cannot encode"
        ) from None
    if not data:
        raise errors.InvalidParameterValue(f"{where} is empty")
    if len(data) > max_bytes:
        raise errors.InvalidParameterValue(
            f"{where} is {len(data):,} bytes of UTF-8, at most {max_bytes:,}"
        )
    return data


def _wrap_optional(
    vector_key: bytes | bytearray | None, public_key: bytes, tenant: str, job_id: str
) -> WrappedKey | None:
    if vector_key is None:
        return None
    return wrap_vector_key(vector_key, public_key=public_key, tenant=tenant, job_id=job_id)


def _check_wrapped(wrapped_key: object, wrapped_vector_key: object) -> None:
    if not isinstance(wrapped_key, WrappedKey) or not isinstance(
        wrapped_vector_key, WrappedKey | None
    ):
        raise InvalidUpload("a wrapped key must be a WrappedKey")


def _wrapped(fields: Mapping[str, Any], name: str) -> WrappedKey:
    return WrappedKey.from_bytes(_unb64(fields, name))


def _wrapped_vector_key(fields: Mapping[str, Any]) -> WrappedKey | None:
    return _wrapped(fields, "wrapped_vector_key") if "wrapped_vector_key" in fields else None


def _optional_key(wrapped: WrappedKey | None) -> dict[str, str]:
    return {} if wrapped is None else {"wrapped_vector_key": _b64(wrapped.to_bytes())}


def _check_id(label: str, value: object) -> str:
    try:
        return validate_id(label, value)
    except errors.InvalidParameterValue:
        # validate_id shows the value; an id is not secret, but keep errors value-free.
        raise InvalidUpload(f"{label} must be 1-128 of A-Z a-z 0-9 _ . : -") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise InvalidUpload("a JSON object names a field twice")
    return document


def _fields(
    document: object, names: frozenset[str], where: str, *, optional: frozenset[str] = frozenset()
) -> Mapping[str, Any]:
    if not isinstance(document, dict):
        raise InvalidUpload(f"{where} must be a JSON object")
    unknown, missing = set(document) - names - optional, names - set(document)
    if unknown or missing:
        raise InvalidUpload(
            f"{where} has unknown fields {sorted(unknown)} or lacks {sorted(missing)}"
        )
    return document


def _text(fields: Mapping[str, Any], name: str) -> str:
    value = fields[name]
    if not isinstance(value, str):
        raise InvalidUpload(f"{name} must be a string")
    return value


def _unb64(fields: Mapping[str, Any], name: str) -> bytes:
    try:
        return base64.b64decode(_text(fields, name), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidUpload(f"{name} must be standard base64") from None


def _message(entry: object) -> SealedMessage:
    fields = _fields(entry, _MESSAGE_FIELDS, "a message")
    return SealedMessage(message_id=_text(fields, "message_id"), sealed=_unb64(fields, "sealed"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
