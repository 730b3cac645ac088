"""Re-wrap stored uploads to another worker key, so that the old key can be retired.

Upload objects (``vaultq.client.SealedUpload``) stay in their bucket after their job: a
generate request opens them again. ``rewrap_uploads`` takes each object under a prefix whose
data key, or wrapped vector key, is wrapped to another worker key, unwraps it with a
``KeyRing`` that holds that key, wraps the same key to the target public key for the same
tenant and job (``KeyRing.rewrap``), wipes it, and writes the object back. The sealed texts
are not touched: the data key is the same. An object already wrapped to the target is left
as it is, so a second run re-wraps nothing. An object that is not an upload, or does not
open (changed, or wrapped to a key the ring lacks), is reported by key and reason code and
left byte for byte as it was.

Writing an object back fires ``ObjectCreated:Put`` again. The rewritten object says so in
its content type, ``application/json; vaultq-rewrapped-from=<etag>;
vaultq-uploaded-ms=<ms>``: the ETag and time of the client's own write, kept through later
re-wraps. The pipeline embeds a marked upload only for the event of that write
(``is_rewrap_write``): an event of a re-wrap's write is acknowledged with nothing embedded,
while the client's own event, if it is still queued when the re-wrap lands, embeds the
re-wrapped object as it would have the original. ``regenerate`` orders a tenant's uploads by
the client's time (``uploaded_at_ms``), so a re-wrapped old upload does not pass for the
latest. A client can set these parameters itself, on its own upload only: all it gains is
that its upload is not embedded, or sorts as older or newer among its tenant's uploads.
vaultq's ``BlobStore`` has no user metadata, so the marker is a content type parameter,
which S3 and the embedded store both keep as given.

The write back is not conditional (the ``BlobStore`` has no conditional put): a client that
replaces an upload under the same job id while it is being re-wrapped can lose that write.
Job ids are new per upload, so this needs a client that re-puts one on purpose.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from vaultq import errors
from vaultq.blobs.protocol import validate_prefix
from vaultq.client import UPLOAD_PREFIX, InvalidUpload, SealedUpload
from vaultq.privacy.keys import kem_of_public_key, key_id_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from vaultq.blobs.protocol import BlobStore, ObjectInfo
    from vaultq.privacy.keys import KeyRing

__all__ = [
    "REWRAPPED_PARAMETER",
    "UPLOADED_PARAMETER",
    "Outcome",
    "RewrapFailure",
    "RewrapSummary",
    "is_rewrap_write",
    "rewrap_uploads",
    "rewrapped_from",
    "uploaded_at_ms",
]

log = logging.getLogger(__name__)

#: The content type parameter that marks a re-wrapped upload; its value is the ETag of the
#: client's own write.
REWRAPPED_PARAMETER = "vaultq-rewrapped-from"
#: The content type parameter that keeps the client's write time (``last_modified_ms``).
UPLOADED_PARAMETER = "vaultq-uploaded-ms"
_FAILURES = (InvalidUpload, errors.DecryptionFailed, errors.UnknownKeyId, errors.NoSuchKey)


class Outcome(StrEnum):
    """What ``rewrap_uploads`` did with one object."""

    REWRAPPED = "rewrapped"  #: written back wrapped to the target (in a dry run: would be)
    CURRENT = "current"  #: already wrapped to the target; untouched
    FAILED = "failed"  #: not an upload, or does not open; untouched


@dataclass(frozen=True, slots=True, kw_only=True)
class RewrapFailure:
    key: str  #: the object key (a tenant and job id, never key material)
    reason: str  #: ``INVALID_UPLOAD``, ``DECRYPTION_FAILED``, ``UNKNOWN_KEY_ID`` or ``NoSuchKey``


@dataclass(frozen=True, slots=True, kw_only=True)
class RewrapSummary:
    target_key_id: str
    scanned: int
    rewrapped: int
    current: int
    failures: tuple[RewrapFailure, ...]
    dry_run: bool

    @property
    def failed(self) -> int:
        return len(self.failures)


def rewrap_uploads(
    blobs: BlobStore,
    bucket: str,
    *,
    key_ring: KeyRing,
    public_key: bytes,
    prefix: str = UPLOAD_PREFIX,
    dry_run: bool = False,
) -> RewrapSummary:
    """Re-wrap every upload under ``prefix`` of ``bucket`` to the raw worker ``public_key``
    (either suite); with ``dry_run``, open and re-wrap in memory but write nothing. Raises
    ``NoSuchBucket``, or ``InvalidParameterValue`` for a malformed public key or prefix."""
    kem_of_public_key(public_key)
    validate_prefix(prefix)
    counts: Counter[Outcome] = Counter()
    failures: list[RewrapFailure] = []
    for key in _object_keys(blobs, bucket, prefix):
        try:
            outcome = _rewrap_object(blobs, bucket, key, key_ring, public_key, dry_run=dry_run)
        except _FAILURES as exc:
            reason = str(getattr(exc, "failure_reason", exc.code))
            log.warning("object %s is not re-wrapped: %s", key, reason)
            failures.append(RewrapFailure(key=key, reason=reason))
            outcome = Outcome.FAILED
        counts[outcome] += 1
    return RewrapSummary(
        target_key_id=key_id_for(public_key),
        scanned=counts.total(),
        rewrapped=counts[Outcome.REWRAPPED],
        current=counts[Outcome.CURRENT],
        failures=tuple(failures),
        dry_run=dry_run,
    )


def rewrapped_from(content_type: str) -> str | None:
    """The ETag of the client's write a re-wrapped upload's content type names; None when
    the object was not re-wrapped."""
    etag = _parameter(content_type, REWRAPPED_PARAMETER)
    return None if etag is None else _normal_etag(etag)


def uploaded_at_ms(info: ObjectInfo) -> int:
    """When the client wrote the upload. A re-wrap's write moves ``last_modified_ms``, so it
    keeps the client's time in the content type: ordered by this, the latest upload of a
    message stays the latest."""
    kept = _parameter(info.content_type, UPLOADED_PARAMETER)
    return int(kept) if kept is not None and kept.isdigit() else info.last_modified_ms


def is_rewrap_write(info: ObjectInfo, *, event_etag: str | None) -> bool:
    """Whether an ``ObjectCreated`` event whose object now is ``info`` was fired by a
    re-wrap's write (nothing new to embed) rather than by the client's own write. An event
    without an ETag is taken as the client's: embedding again costs time, skipping loses."""
    origin = rewrapped_from(info.content_type)
    return origin is not None and event_etag is not None and _normal_etag(event_etag) != origin


def _rewrap_object(
    blobs: BlobStore,
    bucket: str,
    key: str,
    key_ring: KeyRing,
    public_key: bytes,
    *,
    dry_run: bool,
) -> Outcome:
    data, info = blobs.get(bucket, key)
    upload = SealedUpload.from_json(data)
    if key != upload.object_key:
        raise InvalidUpload("the upload object lies at another tenant's or job's key")
    rewrapped = _rewrapped(upload, key_ring, public_key)
    if rewrapped == upload:
        return Outcome.CURRENT
    if not dry_run:
        blobs.put(bucket, key, rewrapped.to_json(), content_type=_marked(info))
    return Outcome.REWRAPPED


def _rewrapped(upload: SealedUpload, key_ring: KeyRing, public_key: bytes) -> SealedUpload:
    """``upload`` with each wrapped key not yet for ``public_key`` re-wrapped to it."""
    target = key_id_for(public_key)
    tenant, job_id = upload.tenant, upload.job_id
    data_key, vector_key = upload.wrapped_key, upload.wrapped_vector_key
    if data_key.key_id != target:
        data_key = key_ring.rewrap(data_key, public_key=public_key, tenant=tenant, job_id=job_id)
    if vector_key is not None and vector_key.key_id != target:
        vector_key = key_ring.rewrap_vector_key(
            vector_key, public_key=public_key, tenant=tenant, job_id=job_id
        )
    return replace(upload, wrapped_key=data_key, wrapped_vector_key=vector_key)


def _marked(info: ObjectInfo) -> str:
    # The upload format's media type, not the client's: that one may be too long to take the
    # parameters within a content type's 256 characters.
    origin = rewrapped_from(info.content_type) or _normal_etag(info.etag)
    return (
        f"application/json; {REWRAPPED_PARAMETER}={origin}; "
        f"{UPLOADED_PARAMETER}={uploaded_at_ms(info)}"
    )


def _parameter(content_type: str, wanted: str) -> str | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == wanted:
            return value.strip()
    return None


def _normal_etag(etag: str) -> str:
    return etag.strip().strip('"').lower()


def _object_keys(blobs: BlobStore, bucket: str, prefix: str) -> Iterator[str]:
    # Writing a key back adds no key, so the listing neither skips nor repeats one.
    cursor: str | None = None
    while True:
        listing = blobs.list(bucket, prefix, cursor=cursor)
        yield from (info.key for info in listing.objects)
        cursor = listing.next_cursor
        if cursor is None:
            return
