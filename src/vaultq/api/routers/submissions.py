"""Job routes: the ``POST`` routes an App declares with ``accept_jobs``, each with its own
request schema, all creating jobs the same way.

A job is stored ``queued``, its message kept in the outbox, then sent: a queue outage loses
nothing. A submission that repeats one accepted within the route's window (same tenant,
client, route and payload), or that reuses an ``Idempotency-Key``, creates no job: it is
answered ``200`` with the job the first one created.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import mimetypes
import re
import time
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from vaultq import errors
from vaultq.api.auth import Permission, Principal, require
from vaultq.api.problems import problem
from vaultq.api.routers.jobs import own_client
from vaultq.api.services import ApiServices, ApiSettings, dumps, services
from vaultq.app import BODY_FIELD, DEDUPLICATION_SECONDS
from vaultq.jobs.protocol import JobKey, JobStatus
from vaultq.outbox.protocol import PendingSend
from vaultq.runtime.jobs import JOB_ATTRIBUTE, TENANT_ATTRIBUTE

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from fastapi import FastAPI

    from vaultq.app import App, FileField, JobRoute
    from vaultq.idempotency.protocol import IdempotencyStore

#: How long a reused ``Idempotency-Key`` answers with its first job (Stripe keeps 24 h).
IDEMPOTENCY_KEY_SECONDS = 86_400
#: Long enough for the request to send its message itself; after that the pump may.
_OUTBOX_CLAIM_SECONDS = 5.0
#: A submission's claim on its duplicates lapses after this, should the request die.
_CLAIM_MS = 30_000
#: How often a waiting route reads its job.
_WAIT_POLL_SECONDS = 0.05
#: A failed job's error starts with its reason code (``DECRYPTION_FAILED: ...``).
_REASON = re.compile(r"([A-Za-z][A-Za-z0-9_]*):")

Services = Annotated[ApiServices, Depends(services)]
Submitter = Annotated[Principal, Depends(require(Permission.SUBMIT_JOB))]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[!-~]+$")
]


class JobSubmission(BaseModel):
    """The body of a route declared without a model."""

    model_config = ConfigDict(extra="forbid")

    payload: JsonValue
    #: Which of the tenant's clients the job is for; the caller's own id by default.
    client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")


class JobAccepted(BaseModel):
    job_id: str
    #: ``queued`` for a new job; a duplicate answers with its original job's status.
    status: JobStatus = JobStatus.QUEUED
    estimated_time_seconds: int
    #: Only from a route that waits (``wait_seconds``) and only when the job finished in time.
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Upload:
    field: str
    data: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class _Submission:
    client: str
    payload: JsonValue
    uploads: tuple[_Upload, ...] = ()


def job_router(app: App) -> APIRouter:
    """One ``POST`` route per job route the app declares."""
    router = APIRouter(tags=["jobs"])
    for route in app.job_routes.values():
        router.add_api_route(
            route.path,
            _multipart_endpoint(route) if route.multipart else _json_endpoint(route),
            methods=["POST"],
            status_code=202,
            response_model=JobAccepted,
            response_model_exclude_none=True,
            responses={
                200: {
                    "model": JobAccepted,
                    "description": "A duplicate's original job, or a job that finished while "
                    "the route waited",
                }
            },
            openapi_extra=_multipart_schema(route) if route.multipart else None,
            name="submit_job",  # operation ids submit_job<path>_post: unique per path
            summary=f"Submit a job to {route.queue}",
        )
    return router


def body_limits(app: App, settings: ApiSettings) -> dict[str, int]:
    """The most a multipart route's request may hold: its files at their limits, plus a JSON
    body at the request limit (which also covers the multipart framing)."""
    return {
        route.path: settings.max_request_bytes
        + sum(_max_bytes(file, settings) for file in route.files)
        for route in app.job_routes.values()
        if route.multipart
    }


def document_bodies(api: FastAPI, app: App) -> None:
    """Multipart routes name their body model by reference; put it in the components."""
    models = {route.body for route in app.job_routes.values() if route.multipart and route.body}
    if not models:
        return
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, nested in definition.pop("$defs", {}).items():
                components.setdefault(name, nested)
            components.setdefault(model.__name__, definition)
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


def _json_endpoint(route: JobRoute) -> Callable[..., JobAccepted | JSONResponse]:
    def submit_job(
        submission: BaseModel,
        response: Response,
        principal: Submitter,
        api: Services,
        idempotency_key: IdempotencyKey = None,
    ) -> JobAccepted | JSONResponse:
        """Accept a job: it is stored ``queued`` and its message sent (or kept until the queue
        is back). Answers at once; poll ``GET /jobs/{job_id}``."""
        if isinstance(submission, JobSubmission):
            client = submission.client_id or own_client(principal)
            accepted = _Submission(client, submission.payload)
        else:
            accepted = _Submission(own_client(principal), submission.model_dump(mode="json"))
        answer = _accept(
            api,
            principal,
            route,
            submission=accepted,
            idempotency_key=idempotency_key,
            response=response,
        )
        if route.wait_seconds == 0:
            return answer
        key = JobKey(tenant_id=principal.tenant, client_id=accepted.client, job_id=answer.job_id)
        return _awaited(api, key, answer, response, route=route)

    # FastAPI reads the body's model from the signature: this route's own.
    signature = inspect.signature(submit_job)
    model = route.body or JobSubmission
    parameters = [
        p.replace(annotation=Annotated[model, Body()]) if p.name == "submission" else p
        for p in signature.parameters.values()
    ]
    submit_job.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return submit_job


def _multipart_endpoint(route: JobRoute) -> Callable[..., Any]:
    async def submit_job(
        request: Request,
        response: Response,
        principal: Submitter,
        api: Services,
        idempotency_key: IdempotencyKey = None,
    ) -> JobAccepted:
        """Accept a job with files (``multipart/form-data``; the JSON body in the part named
        ``body``): the files are stored, then the job is accepted as any other."""
        payload, uploads = await _read_form(request, route, api.settings)
        submission = _Submission(own_client(principal), payload, uploads)
        return await run_in_threadpool(
            _accept,
            api,
            principal,
            route,
            submission=submission,
            idempotency_key=idempotency_key,
            response=response,
        )

    return submit_job


async def _read_form(
    request: Request, route: JobRoute, settings: ApiSettings
) -> tuple[JsonValue, tuple[_Upload, ...]]:
    if _media_type(request.headers.get("content-type", "")) != "multipart/form-data":
        raise errors.UnsupportedMediaType(f"POST {route.path} takes multipart/form-data")
    try:
        async with request.form(
            max_files=len(route.files),
            max_fields=1 if route.body else 0,
            max_part_size=settings.max_request_bytes,
        ) as form:
            expected = {file.name for file in route.files} | ({BODY_FIELD} if route.body else set())
            unknown = [name for name in form if name not in expected]
            if unknown:
                raise _invalid(unknown[0], "unknown field", "extra_forbidden")
            payload = _read_body(form.getlist(BODY_FIELD), route)
            uploads = [
                await _read_file(form.getlist(file.name), file, settings) for file in route.files
            ]
    except HTTPException as exc:
        # Starlette's multipart parser refuses malformed or over-limit bodies this way.
        raise errors.InvalidParameterValue(
            f"the multipart body is not valid: {exc.detail}"
        ) from None
    return payload, tuple(upload for upload in uploads if upload is not None)


def _read_body(values: list[UploadFile | str], route: JobRoute) -> JsonValue:
    if route.body is None:
        return None
    if len(values) != 1 or not isinstance(values[0], str):
        raise _invalid(BODY_FIELD, "one JSON form field is required", "missing")
    try:
        model = route.body.model_validate_json(values[0])
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", BODY_FIELD, *error["loc"])} for error in exc.errors()]
        ) from None
    dumped: JsonValue = model.model_dump(mode="json")
    return dumped


async def _read_file(
    values: list[UploadFile | str], file: FileField, settings: ApiSettings
) -> _Upload | None:
    if not values:
        if file.required:
            raise _invalid(file.name, "a file is required", "missing")
        return None
    value = values[0]
    if len(values) != 1 or not isinstance(value, UploadFile):
        raise _invalid(file.name, "one file is expected", "file_type")
    content_type = _media_type(value.content_type or "application/octet-stream")
    if file.content_types and content_type not in file.content_types:
        raise errors.UnsupportedMediaType(
            f"{file.name} must be one of {', '.join(file.content_types)}"
        )
    limit = _max_bytes(file, settings)
    if value.size is not None and value.size > limit:
        raise errors.EntityTooLarge(f"{file.name} is at most {limit} bytes")
    return _Upload(file.name, await value.read(), content_type)


def _accept(
    api: ApiServices,
    principal: Principal,
    route: JobRoute,
    *,
    submission: _Submission,
    idempotency_key: str | None,
    response: Response,
) -> JobAccepted:
    tenant, client = principal.tenant, submission.client
    if route.prepare_payload is not None:
        submission = replace(submission, payload=route.prepare_payload(submission.payload, tenant))
    fingerprint = _digest(
        [
            tenant,
            client,
            route.path,
            submission.payload,
            {u.field: hashlib.sha256(u.data).hexdigest() for u in submission.uploads},
        ]
    )
    windows: list[tuple[str, int]] = []
    if idempotency_key is not None:
        key = _digest([tenant, client, route.path, idempotency_key])
        windows.append((f"vaultq.jobs:key:{key}", IDEMPOTENCY_KEY_SECONDS))
    if route.deduplicate:
        windows.append((f"vaultq.jobs:content:{fingerprint}", DEDUPLICATION_SECONDS))
    with _Duplicates(api.idempotency, windows, fingerprint, route.ttl_seconds) as duplicates:
        original = duplicates.original
        if original is None:
            job_id = _create(api, tenant, route, submission, fingerprint)
            duplicates.record({"job_id": job_id, "client_id": client, "fingerprint": fingerprint})
            accepted = JobAccepted(
                job_id=job_id, estimated_time_seconds=route.estimated_time_seconds
            )
        else:
            duplicates.record(original)
            accepted = _replay(api, tenant, route, original)
            response.status_code = 200
            response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/jobs/{accepted.job_id}"
    return accepted


def _create(
    api: ApiServices, tenant: str, route: JobRoute, submission: _Submission, fingerprint: str
) -> str:
    key = JobKey(tenant_id=tenant, client_id=submission.client, job_id=uuid.uuid4().hex)
    files = {upload.field: _store(api, route, key, upload) for upload in submission.uploads}
    body: dict[str, Any] = {"job_id": key.job_id, "client_id": key.client_id}
    body["payload"] = submission.payload
    if files:
        body["files"] = {
            name: {"bucket": route.bucket, "key": path} for name, path in files.items()
        }
    queue = route.queue_for(submission.payload)
    fifo = api.app.queues[queue].attributes.fifo
    send = PendingSend(
        id=key.job_id,
        queue=queue,
        body=dumps(body),
        attributes={JOB_ATTRIBUTE: str(key), TENANT_ATTRIBUTE: tenant},
        group_id=(route.message_group or f"{tenant}.{key.client_id}") if fifo else None,
        # A deduplicating route's duplicates share an id, so the queue drops any that slips
        # past the window check (its deduplication interval is the same five minutes).
        deduplication_id=(fingerprint if route.deduplicate else key.job_id) if fifo else None,
    )
    # The send is stored first: a crash before the job exists leaves a message whose job
    # is missing, which the worker drops; never a queued job that nothing will run.
    api.outbox.add(send, claim_seconds=_OUTBOX_CLAIM_SECONDS)
    api.jobs.create(
        key,
        input_files=[f"{route.bucket}/{path}" for path in files.values()],
        attributes={"estimated_time_seconds": route.estimated_time_seconds},
        ttl_seconds=route.ttl_seconds,
    )
    api.send_or_keep(send)
    return key.job_id


def _awaited(
    api: ApiServices, key: JobKey, answer: JobAccepted, response: Response, *, route: JobRoute
) -> JobAccepted | JSONResponse:
    """The answer once the job finished, if it does within the route's wait: its result, or
    a problem naming the job and its reason when it failed; else the answer as it was."""
    deadline = time.monotonic() + route.wait_seconds
    while True:
        # Checked first: a replayed submission's job may have finished long ago.
        job = api.jobs.get(key)
        if job is not None and job.status.is_terminal:
            break
        if time.monotonic() >= deadline:
            return answer
        time.sleep(_WAIT_POLL_SECONDS)
    if job.status in (JobStatus.FAILED, JobStatus.DEAD_LETTERED):
        code = _REASON.match(job.error or "")
        reason = code.group(1) if code else "JOB_FAILED"
        detail = job.error or f"the job is {job.status.value}"
        status = route.failure_statuses.get(reason, 500)
        return problem(status, reason, detail, job_id=key.job_id, job_status=job.status)
    response.status_code = 200
    return answer.model_copy(
        update={"status": job.status, "result": job.result, "error": job.error}
    )


def _store(api: ApiServices, route: JobRoute, key: JobKey, upload: _Upload) -> str:
    if api.blobs is None or route.bucket is None:
        raise errors.NoSuchBucket("this server stores no files")
    extension = mimetypes.guess_extension(upload.content_type) or ""
    path = f"jobs/{key.tenant_id}/{key.client_id}/{key.job_id}/{upload.field}{extension}"
    api.blobs.put(route.bucket, path, upload.data, content_type=upload.content_type)
    return path


def _replay(
    api: ApiServices, tenant: str, route: JobRoute, original: Mapping[str, Any]
) -> JobAccepted:
    key = JobKey(tenant_id=tenant, client_id=original["client_id"], job_id=original["job_id"])
    job = api.jobs.get(key)
    if job is None:
        raise errors.JobNotFound("the job this submission repeats is gone")
    return JobAccepted(
        job_id=key.job_id, status=job.status, estimated_time_seconds=route.estimated_time_seconds
    )


class _Duplicates:
    """Claims a submission's windows (its idempotency key's, its content's) in the
    idempotency store: the first claim another submission holds names the original job.

    Won claims are completed with the job the submission ends with (new or original), so a
    key first used for a duplicate answers with the original too; on an error they are
    released, so a retry may create the job."""

    def __init__(
        self,
        store: IdempotencyStore | None,
        windows: list[tuple[str, int]],
        fingerprint: str,
        ttl_seconds: int,
    ) -> None:
        if windows and store is None:
            raise errors.BackendUnavailable("this server keeps no idempotency records")
        self.store = store
        # A window never outlives the job it answers with.
        self.windows = [(key, min(seconds, ttl_seconds)) for key, seconds in windows]
        self.fingerprint = fingerprint
        self.won: list[tuple[str, str, int]] = []
        self.original: dict[str, Any] | None = None

    def __enter__(self) -> _Duplicates:
        try:
            for key, seconds in self.windows:
                if not self._claim(key, seconds):
                    break
        except BaseException:
            self._release()
            raise
        return self

    def _claim(self, key: str, seconds: int) -> bool:
        assert self.store is not None  # noqa: S101 - checked in __init__ when windows exist
        claim_id = uuid.uuid4().hex
        record = self.store.claim(key, claim_id=claim_id, in_progress_ms=_CLAIM_MS)
        if record.claim_id == claim_id:
            self.won.append((key, claim_id, seconds))
            return True
        if record.result_json is None:
            raise errors.IdempotencyAlreadyInProgress(
                "an equal submission is being accepted; retry in a moment"
            )
        original: dict[str, Any] = json.loads(record.result_json)
        if original["fingerprint"] != self.fingerprint:
            raise errors.IdempotencyKeyMismatch(
                "this Idempotency-Key was used for a different request"
            )
        self.original = original
        return False

    def record(self, result: Mapping[str, Any]) -> None:
        if self.store is None:
            return
        for key, claim_id, seconds in self.won:
            self.store.complete(
                key, claim_id=claim_id, result_json=dumps(result), expires_after_seconds=seconds
            )
        self.won = []

    def __exit__(self, kind: object, exc: object, traceback: object) -> None:
        self._release()

    def _release(self) -> None:
        if self.store is not None:
            for key, claim_id, _seconds in self.won:
                self.store.release(key, claim_id=claim_id)
        self.won = []


def _digest(value: object) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _multipart_schema(route: JobRoute) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    encoding: dict[str, Any] = {}
    required = [file.name for file in route.files if file.required]
    if route.body is not None:
        properties[BODY_FIELD] = {"$ref": f"#/components/schemas/{route.body.__name__}"}
        encoding[BODY_FIELD] = {"contentType": "application/json"}
        required.insert(0, BODY_FIELD)
    for file in route.files:
        properties[file.name] = {"type": "string", "format": "binary"}
        if file.content_types:
            encoding[file.name] = {"contentType": ", ".join(file.content_types)}
    schema = {"type": "object", "properties": properties, "required": required}
    content = {"schema": {**schema, "additionalProperties": False}, "encoding": encoding}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": content}}}


def _max_bytes(file: FileField, settings: ApiSettings) -> int:
    return min(file.max_bytes or settings.max_blob_bytes, settings.max_blob_bytes)


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _invalid(field: str, message: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": kind}])
