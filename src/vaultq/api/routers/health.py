"""Liveness, readiness and metrics: unauthenticated, answer nothing about any tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from vaultq import errors
from vaultq.api.services import ApiServices, services

router = APIRouter(tags=["health"])
Services = Annotated[ApiServices, Depends(services)]


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(api: Services) -> dict[str, str]:
    """The stores answer and the app's readiness checks pass; 503 (problem details) when
    one does not."""
    api.queues.list_queues(prefix="vaultq-readiness-")
    if api.settings.queue_enabled:
        for queue in {queue for route in api.app.job_routes.values() for queue in route.queues}:
            api.queues.get_queue(queue)
    api.outbox.count()
    for check in api.app.readiness_checks:
        try:
            check()
        except errors.VaultqError as exc:
            raise errors.BackendUnavailable(f"the app is not ready: {exc}") from None
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
def metrics(api: Services) -> Response:
    """Prometheus text format."""
    if api.metrics is None:
        raise errors.BackendUnavailable("metrics are not configured")
    body, content_type = api.metrics()
    return Response(content=body, media_type=content_type)
