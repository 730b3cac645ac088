"""Private embeddings: an encrypted upload becomes one sealed vector per message; the API
re-embeds stored messages and searches a tenant's vectors without ever holding a text.

A client seals its messages and puts one upload object into the ``messages`` bucket
(``vaultq.client.upload_messages``; with ``jobs=`` the upload is also a job whose progress
``GET /jobs/{id}`` shows); the bucket's ``ObjectCreated`` event goes to the ``embed-jobs``
queue; ``embed_uploads`` opens the texts in memory, embeds them and upserts sealed vectors
into the vector store (``VAULTQ_VECTORS_URL``: pgvector, or by default
``<data dir>/vectors.db``). The local all-MiniLM-L6-v2 embeds by default; with
``VAULTQ_EMBEDDINGS_URL`` (and ``..._MODEL``, ``..._DIMENSION``, ``..._API_KEY_FILE``) an
OpenAI-compatible endpoint does, limited by one token bucket that every worker shares and
falling back to the local model per batch (``vaultq.embeddings.settings``).

Two job routes feed the request queues, whose handler processes of their own keep requests
from waiting behind a backlog of uploads: generate requests go to ``embed-requests``, and
with ``"priority": "high"`` to ``embed-requests-high``, whose provisioned handler takes them
ahead of any backlog of normal ones; so do searches, which are interactive:

- ``POST /api/v1/embeddings/generate {"message_ids": [...], "priority": "normal"|"high",
  "vector_key": {...}}`` re-embeds the caller tenant's stored messages from their upload
  objects;
- ``POST /api/v1/search {"query": "...", "vector_key": {...}, "k": 10}`` ranks the caller
  tenant's messages. The API seals the query for the workers (``VAULTQ_WORKER_PUBLIC_KEY``)
  under the vector key's ``request_id`` before the job is stored, so no queue, job or log
  holds its text; a client may send ``sealed_query`` (``vaultq.client.seal_query(...,
  vector_key=...).as_json()``, which carries the wrapped vector key) instead, and then the
  API never sees the text.
  The request waits up to 10 s and answers ``200`` with the results, else ``202``: poll
  ``GET /jobs/{job_id}``. A search that failed in that time is answered as a problem with
  its job id and reason code (``SEARCH_FAILURE_STATUSES``).

Run it with the worker keys in the environment::

    VAULTQ_WORKER_KEYS="$(cat worker.key)" \\
    VAULTQ_WORKER_PUBLIC_KEY=<base64 public key> vaultq up examples.private_embeddings.app:app

``vector_key`` is ``vaultq.client.wrap_vector_key_for(...).as_json()``: the tenant's vector
key (``vaultq keys vector``), which only the client keeps, wrapped to the workers for this
tenant and one request id. Uploads carry it too (``upload_messages(vector_key=...)``). The
API and the workers never store it in usable form; a worker unwraps it for one job only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import re
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, model_validator

from vaultq import errors, wiring
from vaultq.app import App, DeadLetterQueue, QueueChoice, RetryPolicy
from vaultq.blobs import BucketNotification
from vaultq.client import (
    MAX_QUERY_BYTES,
    UPLOAD_PREFIX,
    InvalidUpload,
    SealedQuery,
    WrappedVectorKey,
    seal_query,
)
from vaultq.embeddings.fallback import FallbackProvider
from vaultq.embeddings.pipeline import (
    EmbeddingServices,
    embed_upload,
    ensure_collection,
    load_upload,
    object_of,
    records_of,
    regenerate,
    search_query,
)
from vaultq.embeddings.settings import EmbeddingSettings, open_provider
from vaultq.jobs.protocol import MAX_PAGE_SIZE, JobStatus
from vaultq.privacy.keys import KeyRing, public_key_from_base64
from vaultq.runtime.failures import NonRetryableError
from vaultq.runtime.jobs import JobHandle, job_key_of_record, job_of

if TYPE_CHECKING:
    from collections.abc import Iterator

    from vaultq.client import SealedUpload
    from vaultq.embeddings import LocalSentenceModel
    from vaultq.jobs.protocol import Job, JobKey, JobStore

BUCKET = "messages"
QUEUE = "embed-jobs"
REQUESTS_QUEUE = "embed-requests"
HIGH_PRIORITY_QUEUE = "embed-requests-high"
PUBLIC_KEY_VARIABLE = "VAULTQ_WORKER_PUBLIC_KEY"
MAX_RECEIVES = 3
#: An upload that failed for a reason a wait may fix (UNKNOWN_KEY_ID while a key rotation
#: reaches every worker, EMBEDDING_API_ERROR/TIMEOUT during a provider outage) is retried
#: 30 s, 1, 2, 4 and 5 min after its failures: dead-lettered at its 6th failure, 12.5 min
#: after its first. Without jitter, so the window is sure: each worker embeds one upload at
#: a time and the shared token bucket paces the provider, so retries cannot stampede it.
UPLOAD_MAX_RECEIVES = 6
UPLOAD_RETRY = RetryPolicy(base_seconds=30, cap_seconds=300, jitter=False)
#: The dead-letter reason of a provider that does not fit the collection.
INVALID_SETTINGS = "INVALID_SETTINGS"
MAX_GENERATE_IDS = 1000
_ID = "[A-Za-z0-9_.:-]{1,128}"
#: ``client.upload_key``: ``jobs/<tenant>/<job_id>.json``.
_UPLOAD_KEY = re.compile(rf"{UPLOAD_PREFIX}({_ID})/({_ID})\.json")
#: How long before its upload's event a tracked upload's job may have been created.
_JOB_BEFORE_UPLOAD_MS = 3_600_000
#: A search that failed while its request waited is answered as a problem with this status
#: (the caller's input: 422; a rotation under way or the provider down: 503); others 500.
SEARCH_FAILURE_STATUSES = {
    "DECRYPTION_FAILED": 422,
    "INVALID_UPLOAD": 422,
    "VECTOR_KEY_MISMATCH": 422,
    "UNKNOWN_KEY_ID": 503,
    "EMBEDDING_API_ERROR": 503,
    "EMBEDDING_API_TIMEOUT": 503,
}
MAX_K = 100
#: Read at import, so that a misconfigured provider stops ``vaultq up`` at once.
EMBEDDINGS = EmbeddingSettings.from_env()
#: ``VAULTQ_EMBEDDINGS_COLLECTION``, default ``message_embeddings``; its mode is
#: ``VAULTQ_EMBEDDINGS_MODE``'s, default ``sealed``.
COLLECTION = EMBEDDINGS.collection

app = App("private-embeddings")
app.queue(
    QUEUE,
    visibility_timeout_seconds=360,
    dead_letter=DeadLetterQueue(max_receive_count=UPLOAD_MAX_RECEIVES),
)
for requests_queue in (REQUESTS_QUEUE, HIGH_PRIORITY_QUEUE):
    app.queue(
        requests_queue,
        visibility_timeout_seconds=180,
        dead_letter=DeadLetterQueue(max_receive_count=MAX_RECEIVES),
    )
app.bucket(BUCKET, notifications=[BucketNotification(QUEUE, prefix=UPLOAD_PREFIX, suffix=".json")])

MessageId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
# Base64 of a WrappedKey: ~130 characters classic, ~1,600 hybrid (mlkem768-x25519).
WrappedKeyText = Annotated[str, StringConstraints(max_length=2048)]


class VectorKeyBody(BaseModel):
    """``vaultq.client.WrappedVectorKey.as_json()``: the tenant's vector key, wrapped."""

    model_config = ConfigDict(extra="forbid")

    request_id: MessageId
    wrapped_key: WrappedKeyText


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message_ids: list[MessageId] = Field(min_length=1, max_length=MAX_GENERATE_IDS)
    vector_key: VectorKeyBody
    #: ``high`` goes to its own queue and handler, ahead of any backlog of ``normal`` ones
    #: (both are ahead of any upload backlog); kept in the job result.
    priority: Literal["normal", "high"] = "normal"

    @model_validator(mode="after")
    def _distinct(self) -> GenerateRequest:
        if len(set(self.message_ids)) != len(self.message_ids):
            raise ValueError("message_ids must be distinct")
        return self


class SealedQueryBody(BaseModel):
    """``vaultq.client.SealedQuery.as_json()``: sealed on the caller's machine."""

    model_config = ConfigDict(extra="forbid")

    query_id: MessageId
    wrapped_key: WrappedKeyText
    sealed: str = Field(max_length=4 * (MAX_QUERY_BYTES + 29) // 3 + 4)
    wrapped_vector_key: WrappedKeyText


class SearchRequest(BaseModel):
    """Exactly one of ``query`` (sealed by the API at once, with ``vector_key``) and
    ``sealed_query`` (which carries its own wrapped vector key)."""

    model_config = ConfigDict(extra="forbid")

    query: str | None = Field(default=None, min_length=1, max_length=MAX_QUERY_BYTES)
    sealed_query: SealedQueryBody | None = None
    vector_key: VectorKeyBody | None = None
    k: int = Field(default=10, ge=1, le=MAX_K)

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if (self.query is None) == (self.sealed_query is None):
            raise ValueError("give exactly one of query and sealed_query")
        if (self.query is None) != (self.vector_key is None):
            raise ValueError("a query needs vector_key; a sealed_query carries its own")
        return self


def seal_search(payload: JsonValue, tenant: str) -> JsonValue:
    """The search job's payload: the query sealed for the workers, for this tenant only."""
    assert isinstance(payload, dict)  # noqa: S101 - SearchRequest's dump
    if payload["query"] is None:
        return {"sealed_query": payload["sealed_query"], "k": payload["k"]}
    # Sealed under the vector key's request id: the one the client wrapped its key for.
    vector_key = WrappedVectorKey.from_json(payload["vector_key"])
    sealed = seal_query(
        str(payload["query"]),
        public_key=_worker_public_key(),
        tenant=tenant,
        new_query_id=lambda: vector_key.request_id,
    )
    sealed = replace(sealed, wrapped_vector_key=vector_key.wrapped_key)
    return {"sealed_query": dict(sealed.as_json()), "k": payload["k"]}


app.accept_jobs(
    queue=REQUESTS_QUEUE,
    path="/api/v1/embeddings/generate",
    body=GenerateRequest,
    estimated_time_seconds=10,
    queue_by=QueueChoice(field="priority", queues={"high": HIGH_PRIORITY_QUEUE}),
)
# Searches are interactive: they share the high-priority queue and its handler, so no
# backlog of normal generate requests delays them (nor a backlog of uploads), and no third
# copy of the model is loaded per worker for them.
app.accept_jobs(
    queue=HIGH_PRIORITY_QUEUE,
    path="/api/v1/search",
    body=SearchRequest,
    estimated_time_seconds=2,
    ttl_seconds=86_400,
    prepare_payload=seal_search,
    wait_seconds=10,
    failure_statuses=SEARCH_FAILURE_STATUSES,
)


@functools.cache
def local_model() -> LocalSentenceModel:
    from vaultq.embeddings import LocalSentenceModel  # noqa: PLC0415 - torch loads with it

    return LocalSentenceModel()


def warm_up() -> None:
    """The upload handler's init: torch, the model and its kernels load (~7 s) when a worker
    starts, so a backlog of uploads finds the model ready."""
    local_model().embed(["warm up"])


@functools.cache
def services() -> EmbeddingServices:
    """Built once per handler process, on its first event."""
    local = local_model()
    # One bucket in vaultq's database for every worker process: the provider's rate holds.
    limiter = wiring.open_rate_limiter(default=EMBEDDINGS.bucket) if EMBEDDINGS.remote else None
    provider = open_provider(EMBEDDINGS, local=local, limiter=limiter)
    # VAULTQ_VECTORS_URL's store, which an aws deployment must name (pgvector): a local
    # file per worker would split the vectors between them.
    vectors = wiring.open_vectors()
    # A provider of another model or dimension is refused again by each job, which records
    # it on the upload's job; raised here, before any job is known, the job would stay queued.
    with contextlib.suppress(errors.InvalidSettings):
        ensure_collection(vectors, COLLECTION, provider=provider, mode=EMBEDDINGS.mode)
    return EmbeddingServices(
        blobs=wiring.open_blobs(),
        key_ring=KeyRing.from_env(),
        provider=provider,
        vectors=vectors,
        collection=COLLECTION,
        mode=EMBEDDINGS.mode,
        batch_size=local.batch_size,
        bucket=BUCKET,
        metrics=wiring.open_metrics(),
    )


def _fallback_messages(results: list[dict[str, Any]]) -> int:
    provider = services().provider
    if not isinstance(provider, FallbackProvider):
        return 0
    return sum(result["model"] == provider.fallback.name for result in results)


# One handler process per worker, provisioned (warm before the first upload): each holds its
# own copy of the model (~600 MB).
@app.handler(
    queue=QUEUE,
    batch_size=1,
    timeout_seconds=300,
    max_concurrency=1,
    retry=UPLOAD_RETRY,
    init=warm_up,
    provisioned_concurrency=1,
)
def embed_uploads(event: dict[str, Any], context: Any) -> None:
    """Tampered or malformed uploads, and a provider that does not fit the collection, go to
    the dead-letter queue at once (no retry changes authenticated bytes or settings); an
    unknown key id is retried, since a key rotation may be under way, and dead-lettered with
    ``UNKNOWN_KEY_ID`` after the last receive, as a failing endpoint is with
    ``EMBEDDING_API_ERROR`` or ``EMBEDDING_API_TIMEOUT``. An upload that names its job
    (``client_id``) reports progress, result and failure there. The event of a re-wrap's
    write (``vaultq keys rewrap``) is acknowledged with nothing embedded."""
    for sqs_record in event["Records"]:
        job = job_of(sqs_record, context) if job_key_of_record(sqs_record) else None
        for s3_record in records_of(sqs_record):
            tracked = job
            upload: SealedUpload | None = None
            try:
                upload = load_upload(services(), s3_record)
                if upload is None:
                    continue  # a re-wrap's write: embedded already, its job left as it is
                tracked = job or _upload_job(context, upload.job_key)
                results = embed_upload(services(), upload, job=tracked)
            except Exception as exc:
                if tracked is None and upload is None:
                    tracked = _job_at_object(context, s3_record)  # it failed before naming it
                _give_back(tracked, sqs_record, exc)
                _raise_final(exc)
                raise
            if tracked is not None:
                tracked.succeed(
                    {
                        "messages_embedded": len(results),
                        "model": results[0]["model"],
                        "fallback_messages": _fallback_messages(results),
                    }
                )


# The model loads in init, before the first request (warm_up): its seconds are not counted
# in that request's processing_time_ms.
@app.handler(
    queue=REQUESTS_QUEUE, batch_size=1, timeout_seconds=120, max_concurrency=1, init=warm_up
)
def serve_requests(event: dict[str, Any], context: Any) -> None:
    """Generate and search jobs of the API; each result is stored on its job."""
    for record in event["Records"]:
        job = job_of(record, context)
        payload = json.loads(record["body"])["payload"]
        try:
            result = _search(job, payload) if "sealed_query" in payload else _generate(job, payload)
        except Exception as exc:
            _raise_final(exc)
            raise
        job.succeed(result)


def _raise_final(exc: Exception) -> None:
    """``NonRetryableError`` for the failures no retry fixes; nothing for the others."""
    if isinstance(exc, errors.DecryptionFailed | InvalidUpload):
        raise NonRetryableError(str(exc), reason=exc.failure_reason) from None
    if isinstance(exc, errors.InvalidSettings):
        raise NonRetryableError(str(exc), reason=INVALID_SETTINGS) from None


# The same work as serve_requests, with capacity of its own: a backlog of normal requests
# never delays a high one or a search. Provisioned, so that the interactive path is warm
# from the worker's start (one more model copy in memory from then on).
app.handler(
    queue=HIGH_PRIORITY_QUEUE,
    name="serve_high_priority",
    batch_size=1,
    timeout_seconds=120,
    max_concurrency=1,
    init=warm_up,
    provisioned_concurrency=1,
)(serve_requests)


def _generate(job: JobHandle, payload: dict[str, Any]) -> dict[str, Any]:
    done = regenerate(
        services(),
        tenant=job.key.tenant_id,
        message_ids=payload["message_ids"],
        vector_key=WrappedVectorKey.from_json(payload["vector_key"]),
        job=job,
    )
    return {
        "results": done.results,
        "unknown_message_ids": done.unknown_message_ids,
        "unopened_message_ids": done.unopened_message_ids,
        "priority": payload["priority"],
        "model": services().provider.name,
    }


def _search(job: JobHandle, payload: dict[str, Any]) -> dict[str, Any]:
    hits = search_query(
        services(),
        tenant=job.key.tenant_id,
        query=SealedQuery.from_json(payload["sealed_query"]),
        k=int(payload["k"]),
    )
    return {
        "results": [{"message_id": message_id, "score": score} for message_id, score in hits],
        "model": services().provider.name,
    }


def _upload_job(context: Any, key: JobKey | None) -> JobHandle | None:
    """The upload's own job, moved to ``processing``; None when the upload names none or
    its job is gone or finished (a reprocessed upload changes no finished job)."""
    store: JobStore | None = getattr(context, "jobs", None)
    if key is None or store is None:
        return None
    found = store.get(key)
    if found is None or found.status.is_terminal:
        return None
    if found.status is JobStatus.QUEUED:
        store.transition(key, to=JobStatus.PROCESSING, expected=JobStatus.QUEUED)
    return JobHandle(store, key)


def _job_at_object(context: Any, s3_record: dict[str, Any]) -> JobHandle | None:
    """The live job of the upload object an event names, found from its key
    (``jobs/<tenant>/<job_id>.json``) among the tenant's jobs created in the hour before
    the event: for a failure before the upload named its job (no worker keys, an unreadable
    object, a document at another tenant's key). A listing, so only on that failure path."""
    store: JobStore | None = getattr(context, "jobs", None)
    with contextlib.suppress(errors.VaultqError):
        found = _UPLOAD_KEY.fullmatch(object_of(s3_record)[1])
        if store is None or found is None:
            return None
        tenant, job_id = found.groups()
        # S3's clock stamps the event, the client's the job: a minute's skew is allowed.
        until = _event_time_ms(s3_record) + 60_000
        since = until - _JOB_BEFORE_UPLOAD_MS
        for job in _live_jobs(store, tenant, since_ms=since, until_ms=until):
            if job.key.job_id == job_id:
                return _upload_job(context, job.key)
    return None


def _live_jobs(store: JobStore, tenant: str, *, since_ms: int, until_ms: int) -> Iterator[Job]:
    for status in (JobStatus.QUEUED, JobStatus.PROCESSING):
        cursor = None
        while True:
            page = store.list_by_status(
                tenant,
                status,
                since_ms=since_ms,
                until_ms=until_ms,
                limit=MAX_PAGE_SIZE,
                cursor=cursor,
            )
            yield from page.jobs
            if page.next_cursor is None:
                break
            cursor = page.next_cursor


def _event_time_ms(s3_record: dict[str, Any]) -> int:
    try:
        return int(dt.datetime.fromisoformat(s3_record["eventTime"]).timestamp() * 1000)
    except (KeyError, TypeError, ValueError):
        return int(time.time() * 1000)


def _give_back(job: JobHandle | None, record: dict[str, Any], exc: Exception) -> None:
    """An upload job's status after a failed attempt, which the worker cannot set itself
    (its message is S3's): dead-lettered after the last attempt or a final error, else
    queued for the retry. The error names the reason only, never message content."""
    if job is None or job_key_of_record(record) is not None:
        return  # untracked, or the worker keeps this message's job
    default = INVALID_SETTINGS if isinstance(exc, errors.InvalidSettings) else "HANDLER_ERROR"
    reason = str(getattr(exc, "failure_reason", default))
    # The queue's own limit, read when it is needed: tests shorten it.
    policy = app.queues[QUEUE].dead_letter
    last_receive = policy.max_receive_count if policy else 1
    final = isinstance(exc, errors.DecryptionFailed | InvalidUpload | errors.InvalidSettings) or (
        int(record["attributes"]["ApproximateReceiveCount"]) >= last_receive
    )
    if final:
        job.store.fail(job.key, reason, to=JobStatus.DEAD_LETTERED)
    else:
        job.store.transition(job.key, to=JobStatus.QUEUED, expected=JobStatus.PROCESSING)


class WorkerPublicKeyMissing(errors.VaultqError):
    """The API has no worker public key to seal a query to: the server's fault (500), and
    ``/readyz`` answers 503 until it has one."""

    code = "WORKER_PUBLIC_KEY_MISSING"
    client_fault = False


@app.ready_when
def _worker_public_key() -> bytes:
    try:
        return public_key_from_base64(os.environ.get(PUBLIC_KEY_VARIABLE, ""))
    except errors.InvalidParameterValue:
        raise WorkerPublicKeyMissing(
            f"{PUBLIC_KEY_VARIABLE} must be a base64 worker public key (x25519 or mlkem768-x25519)"
        ) from None
