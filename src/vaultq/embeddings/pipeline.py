"""The private-embeddings pipeline: one upload object in, one stored vector per message out.

``process_upload`` is a handler's whole work for one S3 ``ObjectCreated`` record: fetch the
upload object (``vaultq.client.SealedUpload``), check it lies at its own tenant and job's
key, unwrap the job's data key with the ``KeyRing``, and then, ``batch_size`` messages at a
time: open each text in memory, embed, seal each vector (``sealed`` collections) or keep it
plain (``indexed`` ones), upsert (idempotent per ``(tenant, message_id)``), save the job's
progress. The data key, the opened texts and the vectors are overwritten when a batch or the
job ends, also when it fails; the limits of that are ``vaultq.privacy.zeroise``'s.

Sealed vectors: each tenant has a vector key, 32 random bytes its client keeps
(``vaultq keys vector``); every job that needs it carries it wrapped to the worker fleet for
that tenant and job (or query) id only (``vaultq.privacy.keys.wrap_vector_key``). The
worker unwraps it into a buffer, derives HKDF-SHA256 with
``info = vaultq/v1|vectors|<tenant>``, 64 bytes: an AES-256-GCM key, then a nonce key, and
wipes every buffer when the job ends. A sealed vector is the envelope's version-1 format
(``0x01 | nonce | ciphertext | tag``, AAD ``vaultq/v1|tenant|message_id``) over the
float32 little-endian bytes, so ``vaultq.privacy.envelope.open_sealed`` opens it.
The nonce is HMAC-SHA256(nonce key, AAD and vector) cut to 12 bytes (a synthetic IV):
sealing the same vector for the same message again gives the same bytes, so reprocessing
an upload changes no row, and equal ciphertexts reveal only that a message's vector did not
change. The worker holds no vector key between jobs; a sealed collection's job without a
wrapped vector key is refused (``InvalidUpload``), and one whose key was wrapped for
another tenant or job fails to unwrap (``DecryptionFailed``). The first job's vector key
becomes the tenant's: a later job's key must open one of the tenant's stored vectors, else
the job is refused before it stores anything (``VectorKeyMismatch``, one decrypt per job),
and a search whose key does not open stored vectors names their messages.

``regenerate`` re-embeds a tenant's named messages from the upload objects under
``jobs/<tenant>/`` (the bucket is the index: no other copy of which upload holds which
message exists; a message is taken from its newest upload that opens, and ids that none
opens for are reported, not fatal) with the request's own wrapped vector key, and
``search_query`` answers a ``SealedQuery``: the query's data key and vector key are
unwrapped for that tenant and query only, the text opened and embedded in memory, the
tenant's vectors opened with its vector key and ranked, and every key and buffer wiped.

One collection holds vectors of one model, which it records (``collection_model``): a
provider of another model or dimension, or a collection of another mode than the app
expects (``EmbeddingServices.mode``), is refused (``InvalidSettings``) before anything is
embedded, and each vector's metadata names the provider that embedded it (the local model
for a batch a ``FallbackProvider`` handed to it, which is logged as a fallback).

Stored in clear: the tenant, message ids, the collection and ``{"model": <name>}`` metadata.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vaultq import errors
from vaultq.client import (
    UPLOAD_PREFIX,
    InvalidUpload,
    SealedMessage,
    SealedQuery,
    SealedUpload,
    WrappedVectorKey,
)
from vaultq.embeddings.fallback import FallbackProvider
from vaultq.privacy.envelope import (
    DATA_KEY_BYTES,
    FORMAT_VERSION,
    NONCE_BYTES,
    bound_context,
    open_sealed,
)
from vaultq.privacy.rewrap import is_rewrap_write, uploaded_at_ms
from vaultq.privacy.zeroise import wipe, wiping
from vaultq.vectors.protocol import MAX_BATCH, MAX_PAGE_SIZE, Mode, VectorItem, validate_id
from vaultq.vectors.similarity import top_k

try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - similarity raised first; kept for clarity
    raise errors.MissingDependency(
        "the embeddings pipeline needs NumPy: pip install 'vaultq[embeddings]'"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence, Set

    from numpy.typing import NDArray

    from vaultq.blobs.protocol import BlobStore, ObjectInfo
    from vaultq.embeddings.protocol import EmbeddingProvider
    from vaultq.observe.protocol import MetricsStore
    from vaultq.privacy.keys import KeyRing, WrappedKey
    from vaultq.runtime.jobs import JobHandle
    from vaultq.vectors.protocol import Collection, SealedItem, VectorStore

__all__ = [
    "EmbeddingServices",
    "MessageResult",
    "Regenerated",
    "VectorKey",
    "VectorKeyMismatch",
    "collection_model",
    "embed_upload",
    "ensure_collection",
    "load_upload",
    "open_vector",
    "process_upload",
    "regenerate",
    "seal_vector",
    "search_query",
    "search_sealed",
    "vector_key",
]

log = logging.getLogger(__name__)

_VECTOR_INFO_PREFIX = b"vaultq/v1|vectors|"
_FLOAT32 = np.dtype("<f4")
#: How many message ids an error message names before "and N more".
_NAMED_IDS = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddingServices:
    """What the pipeline needs; build it once per handler process."""

    blobs: BlobStore
    key_ring: KeyRing
    provider: EmbeddingProvider
    vectors: VectorStore
    #: An existing collection of ``provider``'s dimension and model (one with no model
    #: recorded records it on the first job).
    collection: str
    #: Messages opened and embedded together (the model's batch size is a good choice).
    batch_size: int = 64
    #: Where upload objects live, for ``regenerate``.
    bucket: str = "messages"
    #: Counts each embedded batch by model, and whether a fallback stood in.
    metrics: MetricsStore | None = None
    #: The storage mode the app's jobs expect (``sealed``: vectors encrypted under the
    #: tenant's key); each job refuses a collection of the other mode (``InvalidSettings``)
    #: before embedding. None follows whatever mode the collection has.
    mode: Mode | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not 1 <= self.batch_size <= MAX_BATCH:
            raise errors.InvalidSettings(f"batch_size must be 1..{MAX_BATCH}")
        if self.mode is not None:
            object.__setattr__(self, "mode", _expected_mode(self.mode))


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageResult:
    message_id: str
    embedding_stored: bool
    #: The message's share of its batch's time (open, embed, seal, upsert).
    processing_time_ms: int
    model: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "embedding_stored": self.embedding_stored,
            "processing_time_ms": self.processing_time_ms,
            "model": self.model,
        }


class VectorKeyMismatch(errors.DecryptionFailed):
    """A vector key that does not open the tenant's stored vectors: not the key that sealed
    them. A job is refused before it stores anything, a search names the messages whose
    vectors do not open; no retry changes either."""

    code = "VECTOR_KEY_MISMATCH"
    failure_reason = "VECTOR_KEY_MISMATCH"


@dataclass(frozen=True, slots=True)
class VectorKey:
    """A tenant's vector key in two buffers; ``wipe`` overwrites both."""

    tenant: str
    encryption_key: bytearray
    nonce_key: bytearray

    def wipe(self) -> None:
        wipe(self.encryption_key)
        wipe(self.nonce_key)


def vector_key(tenant_key: bytes | bytearray, *, tenant: str) -> VectorKey:
    """The two keys that seal ``tenant``'s vectors, derived from its 32-byte vector key."""
    if len(tenant_key) != DATA_KEY_BYTES:
        raise errors.InvalidParameterValue(f"a vector key is {DATA_KEY_BYTES} bytes")
    info = _VECTOR_INFO_PREFIX + validate_id("tenant", tenant).encode()
    # HKDF returns immutable bytes: the two copies below are the ones vaultq can wipe.
    derived = HKDF(algorithm=hashes.SHA256(), length=2 * DATA_KEY_BYTES, salt=None, info=info)
    material = derived.derive(bytes(tenant_key))
    return VectorKey(
        tenant,
        bytearray(material[:DATA_KEY_BYTES]),
        bytearray(material[DATA_KEY_BYTES:]),
    )


def seal_vector(key: VectorKey, *, message_id: str, vector: NDArray[np.float32]) -> bytes:
    """Seal one float32 vector for one message of the key's tenant, deterministically."""
    aad = bound_context(tenant=key.tenant, object_id=message_id)
    plain = np.ascontiguousarray(vector, dtype=_FLOAT32).data.cast("B")
    mac = hmac.new(key.nonce_key, len(aad).to_bytes(4, "big") + aad, hashlib.sha256)
    mac.update(plain)
    nonce = mac.digest()[:NONCE_BYTES]
    return bytes((FORMAT_VERSION,)) + nonce + AESGCM(key.encryption_key).encrypt(nonce, plain, aad)


def open_vector(key: VectorKey, *, message_id: str, sealed: bytes) -> NDArray[np.float32]:
    """Open a sealed vector; ``DecryptionFailed`` when it does not authenticate."""
    plain = open_sealed(key.encryption_key, tenant=key.tenant, message_id=message_id, sealed=sealed)
    with wiping(plain):
        return np.frombuffer(plain, dtype=_FLOAT32).copy()


def search_sealed(
    vectors: VectorStore,
    collection: str,
    *,
    key: VectorKey,
    query_vector: Sequence[float] | NDArray[np.float32],
    k: int = 10,
) -> list[tuple[str, float]]:
    """Exact cosine top ``k`` of the key's tenant's sealed vectors, opened in memory:
    ``(message_id, score)``, best first. Reads the tenant's whole collection;
    ``VectorKeyMismatch`` naming the messages whose vectors the key does not open."""
    ids: list[str] = []
    rows: list[NDArray[np.float32]] = []
    unopened: list[str] = []
    try:
        for item in _sealed_items(vectors, collection, key.tenant):
            try:
                rows.append(open_vector(key, message_id=item.message_id, sealed=item.sealed_vector))
            except errors.DecryptionFailed:
                unopened.append(item.message_id)
            else:
                ids.append(item.message_id)
        if unopened:
            raise _search_mismatch(unopened, stored=len(ids) + len(unopened))
        if not rows:
            return []
        matrix = np.stack(rows)
        try:
            return [(ids[row], score) for row, score in top_k(matrix, np.asarray(query_vector), k)]
        finally:
            matrix.fill(0)
    finally:
        for row in rows:
            row.fill(0)


def _search_mismatch(unopened: list[str], *, stored: int) -> VectorKeyMismatch:
    cause = (
        "it is not the key that sealed them"
        if len(unopened) == stored
        else "those were sealed under another key: regenerate them with the tenant's key"
    )
    return VectorKeyMismatch(
        f"the vector key does not open {len(unopened)} of the tenant's {stored} stored "
        f"vectors (messages {_named(unopened)}): {cause}"
    )


def collection_model(provider: EmbeddingProvider) -> str:
    """The model a collection of ``provider``'s vectors records: its name, or a
    ``FallbackProvider``'s primary's, since the fallback stands in only for a primary
    checked to share its space (``verify_same_model``)."""
    if isinstance(provider, FallbackProvider):
        return collection_model(provider.primary)
    return provider.name


def ensure_collection(
    vectors: VectorStore, name: str, *, provider: EmbeddingProvider, mode: Mode | str
) -> Collection:
    """Create collection ``name`` for ``provider``'s vectors, or check the existing one holds
    vectors of its dimension and model (recording the model if it has none) in ``mode``;
    ``InvalidSettings`` naming both otherwise."""
    try:
        collection = vectors.collection(name)
    except errors.CollectionNotFound:
        try:
            collection = vectors.create_collection(
                name, dimension=provider.dimension, mode=mode, model=collection_model(provider)
            )
        except errors.CollectionAlreadyExists:
            collection = vectors.collection(name)  # another process created it first
    return _same_space(vectors, collection, provider, mode)


def _collection(services: EmbeddingServices, *, stores: bool = True) -> Collection:
    """The services' collection, checked to fit them; a job that ``stores`` vectors records
    its model on a collection that has none (a search does not)."""
    collection = services.vectors.collection(services.collection)
    return _same_space(
        services.vectors, collection, services.provider, services.mode, record=stores
    )


def _expected_mode(mode: Mode | str) -> Mode:
    try:
        return Mode(mode)
    except ValueError:
        raise errors.InvalidSettings(f"mode is sealed or indexed, not {mode!r}") from None


def _same_space(
    vectors: VectorStore,
    collection: Collection,
    provider: EmbeddingProvider,
    mode: Mode | str | None,
    *,
    record: bool = True,
) -> Collection:
    expected = collection.mode if mode is None else _expected_mode(mode)
    if collection.mode is not expected:
        # A sealed app writing into an indexed collection would store its tenants' vectors
        # in clear although every client sent a vector key; the reverse cannot search.
        raise errors.InvalidSettings(
            f"collection {collection.name} is {collection.mode.value} but this worker "
            f"expects a {expected.value} collection: configure mode {collection.mode.value}, "
            f"or embed into another, {expected.value} collection (and regenerate)"
        )
    if collection.dimension != provider.dimension:
        raise errors.InvalidSettings(
            f"collection {collection.name} holds {collection.dimension}-dimension vectors but "
            f"{provider.name} gives {provider.dimension}: a collection holds one model's "
            "vectors; embed into another collection (and regenerate) to change models"
        )
    model = collection_model(provider)
    if collection.model is None and record:
        collection = _record_model(vectors, collection, model)
    if collection.model is not None and collection.model != model:
        raise errors.InvalidSettings(
            f"collection {collection.name} holds vectors of {collection.model} but this "
            f"worker embeds with {model}: a collection holds one model's vectors, or its "
            f"searches compare unrelated spaces; configure {collection.model} again, or "
            "embed into another collection (and regenerate) to change models"
        )
    return collection


def _record_model(vectors: VectorStore, collection: Collection, model: str) -> Collection:
    """Upgrade path: a collection made before collections recorded their model takes the
    first job's, so that every later job is checked against it."""
    try:
        return vectors.create_collection(
            collection.name,
            dimension=collection.dimension,
            mode=collection.mode,
            metric=collection.metric,
            model=model,
        )
    except errors.CollectionAlreadyExists:
        return vectors.collection(collection.name)  # another process recorded its model first


def process_upload(
    services: EmbeddingServices,
    record: Mapping[str, Any],
    *,
    job: JobHandle | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[dict[str, Any]]:
    """Embed every message of the upload an S3 ``ObjectCreated`` ``record`` names
    (``load_upload`` then ``embed_upload``); none for a re-wrap's write."""
    upload = load_upload(services, record)
    return [] if upload is None else embed_upload(services, upload, job=job, clock=clock)


def load_upload(services: EmbeddingServices, record: Mapping[str, Any]) -> SealedUpload | None:
    """The upload object an S3 ``ObjectCreated`` ``record`` names, checked to lie at its own
    tenant and job's key; ``InvalidUpload`` otherwise. None when the record is the event of
    a re-wrap's write (``vaultq.privacy.rewrap``): only its wrapped keys changed, and it
    was embedded for its client's own write."""
    bucket, key = object_of(record)
    data, info = services.blobs.get(bucket, key)
    if is_rewrap_write(info, event_etag=record["s3"]["object"].get("eTag")):
        log.info("upload %s was re-wrapped: its event is skipped", key)
        return None
    upload = SealedUpload.from_json(data)
    if key != upload.object_key:
        raise InvalidUpload("the upload object lies at another tenant's or job's key")
    return upload


def embed_upload(
    services: EmbeddingServices,
    upload: SealedUpload,
    *,
    job: JobHandle | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[dict[str, Any]]:
    """Embed every message of ``upload``; one result per message, in upload order. Raises
    ``InvalidUpload``, ``DecryptionFailed`` or ``UnknownKeyId`` (each with a
    ``failure_reason``) without having stored anything for the failing batch; earlier
    batches stay stored (upserts are idempotent, so a retry simply does them again)."""
    progress = _Progress(job, total=len(upload.messages))
    collection = _collection(services)
    wrapped = upload.wrapped_vector_key
    writes = frozenset(message.message_id for message in upload.messages)
    with (
        _vector_key_for(
            services, collection, upload.tenant, wrapped, upload.job_id, writes=writes
        ) as vkey,
        wiping(_data_key(services, upload)) as data_key,
    ):
        results = _embed_messages(
            services,
            upload,
            upload.messages,
            data_key=data_key,
            vkey=vkey,
            progress=progress,
            clock=clock,
        )
    return [result.as_dict() for result in results]


@dataclass(frozen=True, slots=True, kw_only=True)
class Regenerated:
    """What ``regenerate`` did: one result per re-embedded message, the ids it could not
    find among the tenant's stored messages, and the ids found only in uploads that do not
    open, each with the reason of its newest upload (``UNKNOWN_KEY_ID``: no loaded worker
    key; ``DECRYPTION_FAILED``: changed bytes). Ids in request order."""

    results: list[dict[str, Any]]
    unknown_message_ids: list[str]
    unopened_message_ids: dict[str, str] = field(default_factory=dict)


def regenerate(
    services: EmbeddingServices,
    *,
    tenant: str,
    message_ids: Sequence[str],
    vector_key: WrappedVectorKey | None,
    job: JobHandle | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Regenerated:
    """Embed ``tenant``'s already uploaded ``message_ids`` again, from the tenant's upload
    objects (``jobs/<tenant>/``, newest first: a message uploaded twice is taken from its
    latest upload that opens, but never from behind one wrapped to a worker key this worker
    does not hold, which may hold a newer text), sealing with the request's ``vector_key`` (sealed
    collections). Only that prefix is read, so another tenant's ids are simply unknown; an
    object there that is not a valid upload of the tenant is skipped. The ids no upload
    opens for are reported, and the others embedded; only when nothing was embedded and a
    worker key was missing (a rotation may be under way) is ``UnknownKeyId`` raised."""
    wanted = set(message_ids)
    unopened: dict[str, str] = {}
    held: set[str] = set()
    progress = _Progress(job, total=len(wanted))
    results: list[MessageResult] = []
    wrapped = None if vector_key is None else vector_key.wrapped_key
    bound_to = "" if vector_key is None else vector_key.request_id
    collection = _collection(services)
    writes = frozenset(message_ids)
    with _vector_key_for(services, collection, tenant, wrapped, bound_to, writes=writes) as vkey:
        for upload in _tenant_uploads(services, tenant):
            chosen = tuple(m for m in upload.messages if m.message_id in wanted - held)
            if not chosen:
                continue
            try:
                data_key = _data_key(services, upload)
            except errors.UnknownKeyId as exc:
                # Perhaps the newest texts, sealed to a key this worker does not hold yet (a
                # rotation): an older upload's text must not overwrite their vectors.
                failed = dict.fromkeys((m.message_id for m in chosen), exc.failure_reason)
                held |= failed.keys()
            except errors.DecryptionFailed as exc:  # changed bytes: never opens, try older
                failed = dict.fromkeys((m.message_id for m in chosen), exc.failure_reason)
            else:
                with wiping(data_key):
                    failed = _unopened_texts(data_key, upload, chosen)
                    opened = tuple(m for m in chosen if m.message_id not in failed)
                    results += _embed_messages(
                        services,
                        upload,
                        opened,
                        data_key=data_key,
                        vkey=vkey,
                        progress=progress,
                        clock=clock,
                    )
                wanted -= {message.message_id for message in opened}
            for message_id, reason in failed.items():
                unopened.setdefault(message_id, reason)  # the newest upload's reason
            if not wanted - held:
                break
    return _regenerated(message_ids, results, wanted=wanted, unopened=unopened)


def _regenerated(
    message_ids: Sequence[str],
    results: list[MessageResult],
    *,
    wanted: Set[str],
    unopened: dict[str, str],
) -> Regenerated:
    unopened = {i: unopened[i] for i in message_ids if i in wanted and i in unopened}
    if not results and errors.UnknownKeyId.failure_reason in unopened.values():
        raise errors.UnknownKeyId(
            f"no upload of messages {_named(list(unopened))} opens, and a worker key is "
            "not loaded (retried: a key rotation may be under way)"
        )
    return Regenerated(
        results=[result.as_dict() for result in results],
        unknown_message_ids=[i for i in message_ids if i in wanted and i not in unopened],
        unopened_message_ids=unopened,
    )


def search_query(
    services: EmbeddingServices, *, tenant: str, query: SealedQuery, k: int
) -> list[tuple[str, float]]:
    """The ``k`` of ``tenant``'s messages nearest a sealed query: the query is opened and
    embedded in memory, the tenant's vectors opened (sealed collections) and ranked; every
    key and buffer is overwritten before returning. ``(message_id, score)``, best first."""
    collection = _collection(services, stores=False)
    unwrapped = services.key_ring.unwrap(query.wrapped_key, tenant=tenant, job_id=query.query_id)
    with wiping(unwrapped) as data_key:
        opened = open_sealed(
            data_key, tenant=tenant, message_id=query.query_id, sealed=query.sealed
        )
    with wiping(opened):
        vector = services.provider.embed([_text(opened)])[0]
    try:
        with _vector_key_for(
            services, collection, tenant, query.wrapped_vector_key, query.query_id
        ) as vkey:
            if vkey is None:
                hits = services.vectors.search(
                    collection.name, tenant=tenant, query_vector=vector.tolist(), k=k
                )
                return [(hit.message_id, hit.score) for hit in hits]
            return search_sealed(
                services.vectors, collection.name, key=vkey, query_vector=vector, k=k
            )
    finally:
        vector.fill(0)


class _Progress:
    """A job's progress over several uploads' batches: messages done of ``total``."""

    def __init__(self, job: JobHandle | None, *, total: int) -> None:
        self.job = job
        self.total = total
        self.done = 0

    def add(self, count: int) -> None:
        self.done += count
        if self.job is not None and self.total:
            self.job.save_progress(
                self.done / self.total,
                stage="embedding",
                checkpoint={"messages_done": self.done, "messages_total": self.total},
            )


def _embed_messages(
    services: EmbeddingServices,
    upload: SealedUpload,
    messages: Sequence[SealedMessage],
    *,
    data_key: bytearray,
    vkey: VectorKey | None,
    progress: _Progress,
    clock: Callable[[], float],
) -> list[MessageResult]:
    collection = _collection(services)
    results: list[MessageResult] = []
    for start in range(0, len(messages), services.batch_size):
        batch = messages[start : start + services.batch_size]
        results += _process_batch(
            services,
            collection=collection,
            upload=upload,
            batch=batch,
            data_key=data_key,
            vkey=vkey,
            clock=clock,
        )
        progress.add(len(batch))
        log.info("job %s: %d of %d messages embedded", upload.job_id, len(results), len(messages))
    return results


def _data_key(services: EmbeddingServices, upload: SealedUpload) -> bytearray:
    return services.key_ring.unwrap(upload.wrapped_key, tenant=upload.tenant, job_id=upload.job_id)


def _unopened_texts(
    data_key: bytearray, upload: SealedUpload, messages: Sequence[SealedMessage]
) -> dict[str, str]:
    """The messages whose sealed text does not open (changed bytes), with their reason. Each
    text that opens is wiped at once: embedding opens it again (microseconds per text)."""
    failed: dict[str, str] = {}
    for message in messages:
        try:
            opened = open_sealed(
                data_key, tenant=upload.tenant, message_id=message.message_id, sealed=message.sealed
            )
            wipe(opened)
        except errors.DecryptionFailed as exc:
            failed[message.message_id] = exc.failure_reason
    return failed


def _named(message_ids: Sequence[str]) -> str:
    """Ids for an error message (ids are not secret): the first few, and how many more."""
    shown = ", ".join(message_ids[:_NAMED_IDS])
    more = len(message_ids) - _NAMED_IDS
    return shown if more <= 0 else f"{shown} and {more} more"


def _tenant_uploads(services: EmbeddingServices, tenant: str) -> Iterator[SealedUpload]:
    prefix = f"{UPLOAD_PREFIX}{validate_id('tenant', tenant)}/"
    found: list[ObjectInfo] = []
    cursor: str | None = None
    while True:
        listing = services.blobs.list(services.bucket, prefix, cursor=cursor)
        found += [info for info in listing.objects if info.key.endswith(".json")]
        cursor = listing.next_cursor
        if cursor is None:
            break
    for info in sorted(found, key=uploaded_at_ms, reverse=True):
        try:
            upload = SealedUpload.from_json(services.blobs.get(services.bucket, info.key)[0])
        except (errors.NoSuchKey, InvalidUpload, errors.DecryptionFailed) as exc:
            log.info("an object under the tenant's uploads is skipped: %s", exc.code)
            continue
        if upload.object_key == info.key:
            yield upload


def object_of(record: Mapping[str, Any]) -> tuple[str, str]:
    """``(bucket, key)`` of an S3 ``ObjectCreated`` event record; ``InvalidUpload`` for any
    other record."""
    try:
        if record["eventSource"] != "aws:s3" or not str(record["eventName"]).startswith(
            "ObjectCreated:"
        ):
            raise InvalidUpload("the record is not an S3 ObjectCreated event")
        return str(record["s3"]["bucket"]["name"]), unquote_plus(record["s3"]["object"]["key"])
    except (KeyError, TypeError):
        raise InvalidUpload("the record is not an S3 event record") from None


def records_of(sqs_record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The S3 event records an SQS record's body carries (none for S3's test event)."""
    try:
        body = json.loads(sqs_record["body"])
        found: list[dict[str, Any]] = body.get("Records", [])
    except (KeyError, TypeError, AttributeError, ValueError):
        raise InvalidUpload("the SQS record does not carry an S3 event") from None
    return found


@contextmanager
def _vector_key_for(
    services: EmbeddingServices,
    collection: Collection,
    tenant: str,
    wrapped: WrappedKey | None,
    bound_to: str,
    *,
    writes: Set[str] | None = None,
) -> Iterator[VectorKey | None]:
    """The tenant's vector key, unwrapped for ``bound_to`` (a job or query id), derived and
    wiped on exit; None for an indexed collection, which stores vectors in clear. For a job
    that stores the vectors of ``writes`` (message ids), checked to open the tenant's
    stored ones first (``_check_opens``)."""
    if collection.mode is not Mode.SEALED:
        yield None
        return
    if wrapped is None:
        raise InvalidUpload(f"sealed collection {collection.name} needs a wrapped vector key")
    unwrapped = services.key_ring.unwrap_vector_key(wrapped, tenant=tenant, job_id=bound_to)
    with wiping(unwrapped) as tenant_key:
        key = vector_key(tenant_key, tenant=tenant)
    try:
        if writes is not None:
            _check_opens(services.vectors, collection.name, key, writes=writes)
        yield key
    finally:
        key.wipe()


def _check_opens(
    vectors: VectorStore, collection: str, key: VectorKey, *, writes: Set[str]
) -> None:
    """``VectorKeyMismatch`` unless ``key`` opens the tenant's stored vectors: a vector
    sealed under another key would break every later search of the tenant. One decrypt
    tests the first stored vector; when that one does not open and the job rewrites it
    (one sealed under a wrong key, being repaired), the first the job does not rewrite is
    tested instead. With nothing to test, any key is taken: the first job's becomes the
    tenant's."""
    page = vectors.sealed_items(collection, tenant=key.tenant, limit=1)
    tested = page.items[0] if page.items else None
    if tested is None or _opens(key, tested):
        return
    if tested.message_id in writes:
        stored = _sealed_items(vectors, collection, key.tenant)
        tested = next((item for item in stored if item.message_id not in writes), None)
        if tested is None or _opens(key, tested):
            return
    raise VectorKeyMismatch(
        f"the vector key does not open the stored vector of message {tested.message_id}: it "
        f"is not the key that sealed tenant {key.tenant}'s vectors; nothing was stored"
    )


def _opens(key: VectorKey, item: SealedItem) -> bool:
    try:
        open_vector(key, message_id=item.message_id, sealed=item.sealed_vector).fill(0)
    except errors.DecryptionFailed:
        return False
    return True


def _sealed_items(vectors: VectorStore, collection: str, tenant: str) -> Iterator[SealedItem]:
    cursor: str | None = None
    while True:
        page = vectors.sealed_items(collection, tenant=tenant, limit=MAX_PAGE_SIZE, cursor=cursor)
        yield from page.items
        cursor = page.next_cursor
        if cursor is None:
            return


def _process_batch(
    services: EmbeddingServices,
    *,
    collection: Collection,
    upload: SealedUpload,
    batch: Sequence[SealedMessage],
    data_key: bytearray,
    vkey: VectorKey | None,
    clock: Callable[[], float],
) -> list[MessageResult]:
    started = clock()
    tenant = upload.tenant
    vectors, model, fell_back = _embed_batch(services.provider, tenant, batch, data_key)
    if services.metrics is not None:
        services.metrics.record_embedding_batch(model, fallback=fell_back, messages=len(batch))
    metadata = {"model": model}
    try:
        items = [
            _item(tenant, message.message_id, row, vkey, metadata)
            for message, row in zip(batch, vectors, strict=True)
        ]
        services.vectors.upsert(collection.name, items)
    finally:
        vectors.fill(0)
    share_ms = int((clock() - started) * 1000 / len(batch))
    return [
        MessageResult(
            message_id=message.message_id,
            embedding_stored=True,
            processing_time_ms=share_ms,
            model=model,
        )
        for message in batch
    ]


def _embed_batch(
    provider: EmbeddingProvider, tenant: str, batch: Sequence[Any], data_key: bytearray
) -> tuple[NDArray[np.float32], str, bool]:
    """The batch's vectors, the name of the model that embedded them, and whether that was
    a fallback standing in for a failing provider."""
    opened: list[bytearray] = []
    try:
        for message in batch:
            opened.append(
                open_sealed(
                    data_key, tenant=tenant, message_id=message.message_id, sealed=message.sealed
                )
            )
        # The provider takes str, which Python cannot wipe: these copies live until collected.
        texts = [_text(buffer) for buffer in opened]
        if not isinstance(provider, FallbackProvider):
            return provider.embed(texts), provider.name, False
        vectors, used = provider.embed_reporting(texts)
        fell_back = used is provider.fallback
        if fell_back:
            log.warning("%d messages embedded by the fallback %s", len(texts), used.name)
        return vectors, used.name, fell_back
    finally:
        for buffer in opened:
            wipe(buffer)


def _text(buffer: bytearray) -> str:
    try:
        return buffer.decode("utf-8")
    except UnicodeDecodeError:
        # The decode error quotes a byte of the text: raise one that does not.
        raise InvalidUpload("a sealed text is not UTF-8") from None


def _item(
    tenant: str,
    message_id: str,
    row: NDArray[np.float32],
    vkey: VectorKey | None,
    metadata: dict[str, str],
) -> VectorItem:
    if vkey is None:
        return VectorItem(
            tenant=tenant, message_id=message_id, vector=row.tolist(), metadata=metadata
        )
    sealed = seal_vector(vkey, message_id=message_id, vector=row)
    return VectorItem(tenant=tenant, message_id=message_id, sealed_vector=sealed, metadata=metadata)
