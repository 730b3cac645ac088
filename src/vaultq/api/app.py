"""The HTTP API of an app: jobs, queues, blobs, health and metrics, on FastAPI."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vaultq.api.auth import Principal, current_principal, install_auth
from vaultq.api.problems import document_problems, install_problem_handlers, problem
from vaultq.api.routers import alarms, blobs, health, jobs, queues, submissions
from vaultq.api.services import ApiServices
from vaultq.api.services import services as services_of
from vaultq.errors import VaultqError
from vaultq.observe.protocol import UNMATCHED_ROUTE, MetricsStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

log = logging.getLogger(__name__)

_UPLOAD_PREFIX = "/blobs/"


def create_api(services: ApiServices) -> FastAPI:
    """A FastAPI application serving ``services``; the outbox pump runs while it is up."""

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        services.start_pump()
        if services.alarm_evaluator is not None:
            services.alarm_evaluator.start()
        try:
            yield
        finally:
            services.stop_pump()
            if services.alarm_evaluator is not None:
                services.alarm_evaluator.stop()

    api = FastAPI(
        title=f"vaultq: {services.app.name}",
        version="1",
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    api.state.services = services
    install_problem_handlers(api)
    document_problems(api)
    submissions.document_bodies(api, services.app)
    install_auth(api, services.verifier)
    limited = [Depends(_rate_limited)]
    job_routes = submissions.job_router(services.app)
    for router in (job_routes, jobs.router, queues.router, blobs.router):
        api.include_router(router, dependencies=limited)
    api.include_router(blobs.public_router)
    api.include_router(health.router)
    api.include_router(alarms.router, dependencies=limited)
    if services.settings.cors_origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=list(services.settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    api.add_middleware(
        BodyLimit,
        max_bytes=services.settings.max_request_bytes,
        route_limits=submissions.body_limits(services.app, services.settings),
    )
    if services.metrics_store is not None:
        api.add_middleware(RequestMetrics, store=services.metrics_store)
    return api


def _rate_limited(
    principal: Annotated[Principal, Depends(current_principal)],
    api: Annotated[ApiServices, Depends(services_of)],
) -> None:
    """Every authenticated request spends one token of its tenant's shared bucket."""
    api.check_rate(principal.tenant)


class RequestMetrics:
    """Count every request by route template and status."""

    def __init__(self, app: ASGIApp, *, store: MetricsStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500

        async def recorded(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recorded)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            try:
                # In memory (the store writes once a second): no thread hop, no write here.
                self.store.record_api_request(
                    route, status_code=status, duration_seconds=time.monotonic() - started
                )
            except VaultqError as exc:
                log.warning("recording a request failed: %s", exc.code)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` before the application reads them: 413 with
    problem details. Uploads check their own, larger limit; ``route_limits`` gives routes
    that take files (by exact path) theirs."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, route_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.route_limits = dict(route_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_UPLOAD_PREFIX):
            await self.app(scope, receive, send)
            return
        limit = self.route_limits.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > limit:
            await self._refuse(limit, scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(limit, scope, receive, send)

    async def _refuse(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, "REQUEST_TOO_LARGE", f"request bodies are at most {limit} bytes")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass
