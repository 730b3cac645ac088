"""Private embeddings: an encrypted upload becomes one sealed vector per message; the API
re-embeds stored messages and searches a tenant's vectors without ever holding a text.

A client seals its messages and puts one upload object into the ``messages`` bucket
(``vaultq.client.upload_messages``; with ``jobs=`` the upload is also a job whose progress
``GET /jobs/{id}`` shows); the bucket's ``ObjectCreated`` event goes to the ``embed-jobs``
queue; ``embed_uploads`` opens the texts in memory, embeds them and upserts sealed vectors
into ``<data dir>/vectors.db``. The local all-MiniLM-L6-v2 embeds by default; with
``VAULTQ_EMBEDDINGS_URL`` (and ``..._MODEL``, ``..._DIMENSION``, ``..._API_KEY_FILE``) an
OpenAI-compatible endpoint does, limited by one token bucket that every worker shares and
falling back to the local model per batch (``vaultq.embeddings.settings``).

Two job routes feed the ``embed-requests`` queue, whose own handler process keeps requests
from waiting behind a backlog of uploads; generate requests with ``"priority": "high"`` go
to ``embed-requests-high`` instead, whose handler process of its own takes them ahead of any
backlog of normal ones:

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
  ``GET /jobs/{job_id}``.

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
import functools
import json
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, model_validator

from vaultq import errors, wiring
from vaultq.app import App, DeadLetterQueue, QueueChoice
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
    records_of,
    regenerate,
    search_query,
)
from vaultq.embeddings.settings import EmbeddingSettings, open_provider
from vaultq.jobs.protocol import JobStatus
from vaultq.privacy.keys import KeyRing, public_key_from_base64
from vaultq.runtime.failures import NonRetryableError
from vaultq.runtime.jobs import JobHandle, job_key_of_record, job_of

if TYPE_CHECKING:
    from vaultq.embeddings import LocalSentenceModel
    from vaultq.jobs.protocol import JobKey, JobStore

BUCKET = "messages"
QUEUE = "embed-jobs"
REQUESTS_QUEUE = "embed-requests"
HIGH_PRIORITY_QUEUE = "embed-requests-high"
COLLECTION = "message_embeddings"
PUBLIC_KEY_VARIABLE = "VAULTQ_WORKER_PUBLIC_KEY"
MAX_RECEIVES = 3
#: The dead-letter reason of a provider that does not fit the collection.
INVALID_SETTINGS = "INVALID_SETTINGS"
MAX_GENERATE_IDS = 1000
MAX_K = 100
#: Read at import, so that a misconfigured provider stops ``vaultq up`` at once.
EMBEDDINGS = EmbeddingSettings.from_env()

app = App("private-embeddings")
app.queue(
    QUEUE,
    visibility_timeout_seconds=360,
    dead_letter=DeadLetterQueue(max_receive_count=MAX_RECEIVES),
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
app.accept_jobs(
    queue=REQUESTS_QUEUE,
    path="/api/v1/search",
    body=SearchRequest,
    estimated_time_seconds=2,
    ttl_seconds=86_400,
    prepare_payload=seal_search,
    wait_seconds=10,
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
    from vaultq.vectors.embedded import EmbeddedVectors  # noqa: PLC0415

    local = local_model()
    # One bucket in vaultq's database for every worker process: the provider's rate holds.
    limiter = wiring.open_rate_limiter(default=EMBEDDINGS.bucket) if EMBEDDINGS.remote else None
    provider = open_provider(EMBEDDINGS, local=local, limiter=limiter)
    vectors = EmbeddedVectors(wiring.data_dir() / "vectors.db")
    # A provider of another model or dimension is refused again by each job, which records
    # it on the upload's job; raised here, before any job is known, the job would stay queued.
    with contextlib.suppress(errors.InvalidSettings):
        ensure_collection(vectors, COLLECTION, provider=provider, mode="sealed")
    return EmbeddingServices(
        blobs=wiring.open_blobs(),
        key_ring=KeyRing.from_env(),
        provider=provider,
        vectors=vectors,
        collection=COLLECTION,
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
    init=warm_up,
    provisioned_concurrency=1,
)
def embed_uploads(event: dict[str, Any], context: Any) -> None:
    """Tampered or malformed uploads, and a provider that does not fit the collection, go to
    the dead-letter queue at once (no retry changes authenticated bytes or settings); an
    unknown key id is retried, since a key rotation may be under way, and dead-lettered with
    ``UNKNOWN_KEY_ID`` after the last receive, as a failing endpoint is with
    ``EMBEDDING_API_ERROR`` or ``EMBEDDING_API_TIMEOUT``. An upload that names its job
    (``client_id``) reports progress, result and failure there."""
    for sqs_record in event["Records"]:
        job = job_of(sqs_record, context) if job_key_of_record(sqs_record) else None
        for s3_record in records_of(sqs_record):
            tracked = job
            try:
                upload = load_upload(services(), s3_record)
                tracked = job or _upload_job(context, upload.job_key)
                results = embed_upload(services(), upload, job=tracked)
            except Exception as exc:
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


@app.handler(queue=REQUESTS_QUEUE, batch_size=1, timeout_seconds=120, max_concurrency=1)
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
# never delays a high one.
app.handler(
    queue=HIGH_PRIORITY_QUEUE,
    name="serve_high_priority",
    batch_size=1,
    timeout_seconds=120,
    max_concurrency=1,
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


def _give_back(job: JobHandle | None, record: dict[str, Any], exc: Exception) -> None:
    """An upload job's status after a failed attempt, which the worker cannot set itself
    (its message is S3's): dead-lettered after the last attempt or a final error, else
    queued for the retry. The error names the reason only, never message content."""
    if job is None or job_key_of_record(record) is not None:
        return  # untracked, or the worker keeps this message's job
    default = INVALID_SETTINGS if isinstance(exc, errors.InvalidSettings) else "HANDLER_ERROR"
    reason = str(getattr(exc, "failure_reason", default))
    final = isinstance(exc, errors.DecryptionFailed | InvalidUpload | errors.InvalidSettings) or (
        int(record["attributes"]["ApproximateReceiveCount"]) >= MAX_RECEIVES
    )
    if final:
        job.store.fail(job.key, reason, to=JobStatus.DEAD_LETTERED)
    else:
        job.store.transition(job.key, to=JobStatus.QUEUED, expected=JobStatus.PROCESSING)


def _worker_public_key() -> bytes:
    try:
        return public_key_from_base64(os.environ.get(PUBLIC_KEY_VARIABLE, ""))
    except errors.InvalidParameterValue:
        raise errors.InvalidSettings(
            f"{PUBLIC_KEY_VARIABLE} must be a base64 worker public key (x25519 or mlkem768-x25519)"
        ) from None
