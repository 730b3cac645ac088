"""The HTTP API of an app: jobs, queues, blobs, health and metrics, on FastAPI."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vaultq.api.auth import install_auth
from vaultq.api.problems import install_problem_handlers, problem
from vaultq.api.routers import blobs, health, jobs, queues

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from vaultq.api.services import ApiServices

_UPLOAD_PREFIX = "/blobs/"


def create_api(services: ApiServices) -> FastAPI:
    """A FastAPI application serving ``services``; the outbox pump runs while it is up."""

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        services.start_pump()
        try:
            yield
        finally:
            services.stop_pump()

    api = FastAPI(
        title=f"vaultq: {services.app.name}",
        version="1",
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    api.state.services = services
    install_problem_handlers(api)
    install_auth(api, services.verifier)
    for router in (jobs.router, queues.router, blobs.router, health.router):
        api.include_router(router)
    if services.settings.cors_origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=list(services.settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    api.add_middleware(BodyLimit, max_bytes=services.settings.max_request_bytes)
    return api


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` (uploads have their own, larger limit) before
    the application reads them: 413 with problem details."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_UPLOAD_PREFIX):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            413, "REQUEST_TOO_LARGE", f"request bodies are at most {self.max_bytes} bytes"
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass
