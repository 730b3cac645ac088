"""Jobs: read, list and cancel (``submissions`` creates them). Every job belongs to the
caller's tenant; a job of another tenant is answered exactly like a job that does not exist."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, BeforeValidator

from vaultq import errors
from vaultq.api.auth import Permission, Principal, require
from vaultq.api.services import ApiServices, services
from vaultq.jobs.protocol import Job, JobKey, JobStatus

router = APIRouter(tags=["jobs"])
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_JOB_ID = r"^[0-9a-f]{32}$"

Services = Annotated[ApiServices, Depends(services)]


class OutputFile(BaseModel):
    key: str
    url: str | None = None
    expires_at: datetime | None = None


class JobView(BaseModel):
    job_id: str
    client_id: str
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    stages_completed: list[str]
    current_stage: str | None
    progress: float
    output_files: list[OutputFile]
    result: dict[str, Any] | None
    error: str | None


def _iso8601(value: object) -> object:
    """Times are ISO 8601: pydantic would also read ``0.5`` as seconds since the epoch."""
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("expected an ISO 8601 date or date-time, e.g. 2026-11-23T19:00:00Z")
    return value


IsoDatetime = Annotated[datetime, BeforeValidator(_iso8601)]


class JobPageView(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None


def client_of(principal: Principal, requested: str | None = None) -> str:
    """The caller's client id: its subject when that is a valid id, else a digest of it."""
    if requested is not None:
        if requested != own_client(principal) and not principal.can(Permission.READ_ANY_JOB):
            raise errors.Forbidden("only the tenant's consumers and admins read other clients")
        return requested
    return own_client(principal)


def own_client(principal: Principal) -> str:
    if _CLIENT_ID.fullmatch(principal.subject):
        return principal.subject
    return "s-" + hashlib.sha256(principal.subject.encode()).hexdigest()[:24]


@router.get("/jobs/{job_id}", response_model=JobView)
@router.get("/status/{job_id}", response_model=JobView, include_in_schema=False)
def read_job(
    job_id: Annotated[str, Depends(_job_id)],
    principal: Annotated[Principal, Depends(require(Permission.READ_JOB))],
    api: Services,
    client: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")] = None,
) -> JobView:
    """A job's status, stages, progress, output files (with expiring download URLs),
    result and error."""
    job = _find(api, principal, job_id, client)
    return _view(job, api)


@router.delete("/jobs/{job_id}", status_code=204)
def cancel_job(
    job_id: Annotated[str, Depends(_job_id)],
    principal: Annotated[Principal, Depends(require(Permission.CANCEL_JOB))],
    api: Services,
    client: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")] = None,
) -> Response:
    """Cancel a job that has not started; one that has answers 409."""
    job = _find(api, principal, job_id, client)
    if job.status is not JobStatus.QUEUED:
        raise errors.InvalidJobTransition(f"a {job.status.value} job cannot be cancelled")
    api.jobs.transition(job.key, to=JobStatus.CANCELLED, expected=JobStatus.QUEUED)
    return Response(status_code=204)


@router.get("/jobs", response_model=JobPageView)
def list_jobs(
    *,
    principal: Annotated[Principal, Depends(require(Permission.READ_JOB))],
    api: Services,
    status: JobStatus | None = None,
    client: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")] = None,
    since: Annotated[IsoDatetime | None, Query(alias="from")] = None,
    until: Annotated[IsoDatetime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> JobPageView:
    """The tenant's jobs, newest first: by status, or by client (the caller's own by
    default), within ``[from, to)``, one page at a time."""
    since_ms, until_ms = _ms(since), _ms(until)
    if status is not None and (client is None and principal.can(Permission.READ_ANY_JOB)):
        page = api.jobs.list_by_status(
            principal.tenant,
            status,
            since_ms=since_ms,
            until_ms=until_ms,
            limit=limit,
            cursor=cursor,
        )
        jobs = list(page.jobs)
    else:
        owner = client_of(principal, client)
        page = api.jobs.list_by_client(
            principal.tenant,
            owner,
            since_ms=since_ms,
            until_ms=until_ms,
            limit=limit,
            cursor=cursor,
        )
        jobs = [job for job in page.jobs if status is None or job.status is status]
    return JobPageView(jobs=[_view(job, api) for job in jobs], next_cursor=page.next_cursor)


def _job_id(job_id: str) -> str:
    if not re.fullmatch(_JOB_ID, job_id):
        raise errors.JobNotFound("no such job")
    return job_id


def _find(api: ApiServices, principal: Principal, job_id: str, client: str | None) -> Job:
    key = JobKey(tenant_id=principal.tenant, client_id=client_of(principal, client), job_id=job_id)
    job = api.jobs.get(key)
    if job is None:
        raise errors.JobNotFound("no such job")
    return job


def _view(job: Job, api: ApiServices) -> JobView:
    return JobView(
        job_id=job.key.job_id,
        client_id=job.key.client_id,
        status=job.status,
        created_at=_time(job.created_at_ms),
        updated_at=_time(job.updated_at_ms),
        expires_at=_time(job.expires_at_ms),
        stages_completed=list(job.stages_completed),
        current_stage=job.current_stage,
        progress=job.progress,
        output_files=[_output_file(key, api) for key in job.output_files],
        result=dict(job.result) if job.result is not None else None,
        error=job.error,
    )


def _output_file(path: str, api: ApiServices) -> OutputFile:
    """Output files are ``bucket/key``; with a blob store they come with a signed URL."""
    bucket, _, key = path.partition("/")
    if api.blobs is None or not key:
        return OutputFile(key=path)
    seconds = api.settings.download_url_seconds
    try:
        url = api.blobs.signed_url(bucket, key, expires_in_seconds=seconds)
    except errors.InvalidParameterValue:
        return OutputFile(key=path)
    expires = datetime.now(tz=UTC).timestamp() + seconds
    return OutputFile(key=path, url=url, expires_at=datetime.fromtimestamp(expires, tz=UTC))


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
