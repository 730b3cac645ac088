"""The client side of the private-embeddings flow: seal messages, upload them as one job.

``upload_messages`` makes one data key per job, seals each text with it
(``vaultq.privacy.envelope``), wraps the key to the worker fleet's public key for that job
(``vaultq.privacy.keys``), wipes its copy of the key, and puts ONE upload object into a
bucket under ``jobs/<tenant>/<job_id>.json``. The bucket's ``ObjectCreated`` notification
then brings the job to a worker (``vaultq.embeddings.pipeline``).

Upload object, version 1 (UTF-8 JSON, every field required but ``client_id``, no other
field allowed)::

    {"version": 1, "tenant": "...", "job_id": "...", "client_id": "...",
     "wrapped_key": "<base64 of WrappedKey.to_bytes()>",
     "messages": [{"message_id": "...", "sealed": "<base64 of the sealed text>"}, ...]}

``client_id`` is present when the upload is a tracked job: ``upload_messages(jobs=...)``
creates the job ``tenant#client_id#job_id`` before the put, and the worker reports its
progress there (S3 events cannot carry the job themselves).

A search query travels as a ``SealedQuery``: the text sealed under its own data key (AAD
``vaultq/v1|tenant|query_id``), the key wrapped to the workers for ``tenant`` and
``query_id``; ``seal_query`` makes one, on the caller's machine or in the API.

What it holds in clear: the tenant, the job id, the worker key id (inside the wrapped key),
the message ids, how many messages there are and each text's length (a sealed text is 29
bytes longer than its UTF-8 text). Texts and the data key are never in it in usable form.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from vaultq import errors
from vaultq.jobs.protocol import JobKey
from vaultq.privacy.envelope import seal
from vaultq.privacy.keys import WrappedKey, key_id_for, new_data_key, wrap_data_key
from vaultq.privacy.zeroise import wiping
from vaultq.vectors.protocol import validate_id

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from vaultq.blobs.protocol import BlobStore, ObjectInfo
    from vaultq.jobs.protocol import JobStore

__all__ = [
    "MAX_MESSAGES",
    "MAX_QUERY_BYTES",
    "MAX_SEALED_MESSAGE_BYTES",
    "MAX_UPLOAD_BYTES",
    "UPLOAD_FORMAT_VERSION",
    "UPLOAD_PREFIX",
    "InvalidUpload",
    "SealedMessage",
    "SealedQuery",
    "SealedUpload",
    "UploadReceipt",
    "seal_messages",
    "seal_query",
    "upload_key",
    "upload_messages",
]

UPLOAD_FORMAT_VERSION = 1
UPLOAD_PREFIX = "jobs/"
MAX_MESSAGES = 10_000
#: A sealed text: at most 64 KiB of UTF-8 plus the envelope's 29 bytes.
MAX_SEALED_MESSAGE_BYTES = 64 * 1024 + 29
#: The whole upload object, checked before it is parsed.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
#: A search query's text, in UTF-8 bytes.
MAX_QUERY_BYTES = 2048
_FIELDS = frozenset({"version", "tenant", "job_id", "wrapped_key", "messages"})
_OPTIONAL_FIELDS = frozenset({"client_id"})
_QUERY_FIELDS = frozenset({"query_id", "wrapped_key", "sealed"})
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
            raise InvalidUpload(f"a sealed message is 1-{MAX_SEALED_MESSAGE_BYTES} bytes")


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

    def __post_init__(self) -> None:
        if self.version != UPLOAD_FORMAT_VERSION:
            raise InvalidUpload(f"unknown upload format version (known: {UPLOAD_FORMAT_VERSION})")
        _check_id("tenant", self.tenant)
        _check_id("job_id", self.job_id)
        if self.client_id is not None:
            _check_id("client_id", self.client_id)
        if not isinstance(self.wrapped_key, WrappedKey):
            raise InvalidUpload("wrapped_key must be a WrappedKey")
        if not isinstance(self.messages, tuple) or not 1 <= len(self.messages) <= MAX_MESSAGES:
            raise InvalidUpload(f"an upload holds 1-{MAX_MESSAGES} messages (a tuple)")
        ids = {message.message_id for message in self.messages}
        if len(ids) != len(self.messages):
            raise InvalidUpload("an upload names the same message_id twice")

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
            wrapped_key=WrappedKey.from_bytes(_unb64(fields, "wrapped_key")),
            messages=tuple(_message(entry) for entry in messages),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedQuery:
    """A search query sealed for the worker fleet; ``as_json``/``from_json`` are inverses."""

    query_id: str
    wrapped_key: WrappedKey
    #: The envelope's version-1 bytes, bound to ``tenant|query_id``.
    sealed: bytes

    def __post_init__(self) -> None:
        _check_id("query_id", self.query_id)
        if not isinstance(self.sealed, bytes) or not 1 <= len(self.sealed) <= MAX_QUERY_BYTES + 29:
            raise InvalidUpload(f"a sealed query is 1-{MAX_QUERY_BYTES + 29} bytes")

    def as_json(self) -> dict[str, str]:
        return {
            "query_id": self.query_id,
            "wrapped_key": _b64(self.wrapped_key.to_bytes()),
            "sealed": _b64(self.sealed),
        }

    @classmethod
    def from_json(cls, document: object) -> SealedQuery:
        """``InvalidUpload`` for anything but exactly the three fields, well formed."""
        fields = _fields(document, _QUERY_FIELDS, "a sealed query")
        return cls(
            query_id=_text(fields, "query_id"),
            wrapped_key=WrappedKey.from_bytes(_unb64(fields, "wrapped_key")),
            sealed=_unb64(fields, "sealed"),
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


def seal_messages(
    messages: Sequence[tuple[str, str]],
    *,
    public_key: bytes,
    tenant: str,
    key_id: str | None = None,
    job_id: str | None = None,
    new_job_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> SealedUpload:
    """Seal ``[(message_id, text)]`` under a fresh data key, wrapped to ``public_key`` (raw
    32-byte X25519) for a new job. ``key_id``, when given, must be the public key's id: a
    guard against a key id and public key that were copied from different places."""
    if key_id is not None and key_id != key_id_for(public_key):
        raise errors.InvalidParameterValue("key_id is not the id of this public key")
    job = _check_id("job_id", job_id if job_id is not None else new_job_id())
    _check_id("tenant", tenant)
    with wiping(new_data_key()) as data_key:
        wrapped = wrap_data_key(data_key, public_key=public_key, tenant=tenant, job_id=job)
        sealed = tuple(
            SealedMessage(
                message_id=_check_id("message_id", message_id),
                sealed=seal(data_key, tenant=tenant, message_id=message_id, plaintext=_utf8(text)),
            )
            for message_id, text in messages
        )
    return SealedUpload(tenant=tenant, job_id=job, wrapped_key=wrapped, messages=sealed)


def seal_query(
    text: str,
    *,
    public_key: bytes,
    tenant: str,
    new_query_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> SealedQuery:
    """Seal a search query's ``text`` for the workers of ``public_key``, for ``tenant`` only:
    a fresh data key seals it, and is wrapped for ``tenant`` and a new query id."""
    plaintext = _utf8(text)
    if not 1 <= len(plaintext) <= MAX_QUERY_BYTES:
        raise errors.InvalidParameterValue(f"a query is 1-{MAX_QUERY_BYTES} bytes of UTF-8")
    query_id = _check_id("query_id", new_query_id())
    _check_id("tenant", tenant)
    with wiping(new_data_key()) as data_key:
        wrapped = wrap_data_key(data_key, public_key=public_key, tenant=tenant, job_id=query_id)
        sealed = seal(data_key, tenant=tenant, message_id=query_id, plaintext=plaintext)
    return SealedQuery(query_id=query_id, wrapped_key=wrapped, sealed=sealed)


def upload_messages(
    blobs: BlobStore,
    messages: Sequence[tuple[str, str]],
    *,
    bucket: str,
    public_key: bytes,
    tenant: str,
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
        messages, public_key=public_key, tenant=tenant, key_id=key_id, job_id=job_id
    )
    if jobs is not None and client_id is not None:
        upload = replace(upload, client_id=client_id)
        jobs.create(
            JobKey(tenant_id=tenant, client_id=client_id, job_id=upload.job_id),
            attributes={"messages_total": len(upload.messages)},
        )
    info: ObjectInfo = blobs.put(
        bucket, upload.object_key, upload.to_json(), content_type="application/json"
    )
    return UploadReceipt(
        job_id=upload.job_id,
        bucket=bucket,
        object_key=upload.object_key,
        message_count=len(upload.messages),
        size_bytes=info.size_bytes,
    )


def _utf8(text: str) -> bytes:
    if not isinstance(text, str):
        raise errors.InvalidParameterValue("a message's text must be a str")
    return text.encode()


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
