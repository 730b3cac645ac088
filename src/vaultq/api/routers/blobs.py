"""Blobs: upload into an app's bucket (which fires its notifications), and download through
signed, expiring URLs. A tenant's objects live under its own key prefix, so no key a caller
writes can reach another tenant's objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from vaultq import errors
from vaultq.api.auth import Permission, Principal, require
from vaultq.api.services import ApiServices, services
from vaultq.blobs.protocol import BlobStore, validate_key

router = APIRouter(tags=["blobs"])
#: Routes that need no token: the signature in the URL is the credential.
public_router = APIRouter(tags=["blobs"])
SIGNED_PREFIX = "/signed"
Services = Annotated[ApiServices, Depends(services)]


class StoredObject(BaseModel):
    bucket: str
    key: str
    size_bytes: int
    etag: str
    content_type: str


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=900)


class DownloadUrl(BaseModel):
    url: str
    expires_at: datetime


@router.put(
    "/blobs/{bucket}/{key:path}",
    response_model=StoredObject,
    # The body is read raw (streamed, size-checked), so FastAPI cannot describe it itself.
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the object's bytes; Content-Type is stored with it",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload(
    bucket: str,
    key: str,
    request: Request,
    principal: Annotated[Principal, Depends(require(Permission.UPLOAD))],
    api: Services,
) -> StoredObject:
    """Store the request body as ``key`` (at most the configured size)."""
    blobs = _bucket(api, bucket)
    validate_key(key)
    data = await _body(request, api.settings.max_blob_bytes)
    content_type = request.headers.get("content-type", "binary/octet-stream")
    # The put fsyncs: run it off the event loop.
    info = await run_in_threadpool(
        blobs.put, bucket, _scoped(principal, key), data, content_type=content_type[:255]
    )
    return StoredObject(
        bucket=bucket,
        key=key,
        size_bytes=info.size_bytes,
        etag=info.etag,
        content_type=info.content_type,
    )


@router.post("/blobs/{bucket}/download-url", response_model=DownloadUrl)
def download_url(
    bucket: str,
    wanted: DownloadRequest,
    principal: Annotated[Principal, Depends(require(Permission.DOWNLOAD))],
    api: Services,
) -> DownloadUrl:
    """A URL that downloads one of the tenant's objects without a token, until it expires."""
    blobs = _bucket(api, bucket)
    validate_key(wanted.key)
    scoped = _scoped(principal, wanted.key)
    blobs.head(bucket, scoped)  # 404 now rather than from the URL later
    seconds = api.settings.download_url_seconds
    url = blobs.signed_url(bucket, scoped, expires_in_seconds=seconds)
    expires_at = datetime.fromtimestamp(datetime.now(tz=UTC).timestamp() + seconds, tz=UTC)
    return DownloadUrl(url=url, expires_at=expires_at)


@public_router.get(SIGNED_PREFIX + "/{bucket}/{key:path}", include_in_schema=False)
def signed_download(request: Request, api: Services) -> Response:
    """Serve an object named by a signed URL; tampered or expired URLs answer 403."""
    if api.blobs is None:
        raise errors.NoSuchBucket("this server stores no blobs")
    target = request.url.path + ("?" + request.url.query if request.url.query else "")
    bucket, key = api.blobs.verify_signed_url(target)
    data, info = api.blobs.get(bucket, key)
    return Response(
        content=data,
        media_type=info.content_type,
        headers={"ETag": f'"{info.etag}"', "Cache-Control": "private, no-store"},
    )


def _bucket(api: ApiServices, bucket: str) -> BlobStore:
    if api.blobs is None or bucket not in api.app.buckets:
        raise errors.NoSuchBucket(f"no bucket named {bucket!r}")
    return api.blobs


def _scoped(principal: Principal, key: str) -> str:
    return f"tenants/{principal.tenant}/{key}"


async def _body(request: Request, limit_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise errors.EntityTooLarge(f"objects are at most {limit_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise errors.EntityTooLarge(f"objects are at most {limit_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
