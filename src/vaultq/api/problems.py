"""RFC 9457 problem details: every error the API answers has a stable ``code``.

The body never echoes what the caller sent (no input values, no tokens): ``detail`` is the
vaultq error's own message and validation errors list only where and why.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Route

from vaultq import errors

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from fastapi import FastAPI, Request
    from starlette.types import Scope

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"

# First match wins: subclasses before their bases.
_STATUS: list[tuple[type[errors.VaultqError], int]] = [
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.InvalidSignature, 403),
    (errors.QueueDoesNotExist, 404),
    (errors.JobNotFound, 404),
    (errors.AlarmNotFound, 404),
    (errors.NoSuchKey, 404),
    (errors.NoSuchBucket, 404),
    (errors.QueueNameExists, 409),
    (errors.JobAlreadyExists, 409),
    (errors.ConditionalCheckFailed, 409),
    (errors.InvalidJobTransition, 409),
    (errors.IdempotencyAlreadyInProgress, 409),
    (errors.MessageTooLong, 413),
    (errors.EntityTooLarge, 413),
    (errors.UnsupportedMediaType, 415),
    (errors.IdempotencyKeyMismatch, 422),
    (errors.OverLimit, 429),
    (errors.Throttled, 429),
    (errors.BackendUnavailable, 503),
    (errors.InvalidParameterValue, 400),
]


class FieldProblem(BaseModel):
    location: str
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every error response."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    #: Where and why, for validation errors (422) only.
    errors: list[FieldProblem] | None = None


def document_problems(api: FastAPI) -> None:
    """Document every error as it is answered: problem details, under a ``default`` response.

    FastAPI documents a 422 of its own shape (``HTTPValidationError``, ``application/json``),
    which the handlers above never send; it is replaced.
    """
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        definition = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(definition.pop("$defs", {}))
        components["Problem"] = definition
        problem_content = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                responses["default"] = {
                    "description": "Problem details",
                    "content": problem_content,
                }
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


def status_of(exc: errors.VaultqError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 400 if exc.client_fault else 500


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": _title(status),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install_problem_handlers(api: FastAPI) -> None:
    api.add_exception_handler(errors.VaultqError, _vaultq_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(Exception, _unexpected)


async def _vaultq_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, errors.VaultqError):
        raise exc
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    retry_after = getattr(exc, "retry_after_seconds", None)
    if retry_after is not None:
        headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))}
    return problem(status, exc.code, exc.message, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):
        raise exc
    problems = [
        {"location": ".".join(str(part) for part in error["loc"]), "reason": error["msg"]}
        for error in exc.errors()
    ]
    return problem(422, "VALIDATION_ERROR", "the request is not valid", errors=problems)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return problem(exc.status_code, code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path: Starlette names only the first route's
    (``GET /jobs`` and ``POST /jobs`` are two routes). vaultq's routers have no prefix, so
    each route's own pattern matches the full path."""
    return ", ".join(sorted(_methods(request.app.router.routes, request.scope)))


def _methods(routes: Iterable[BaseRoute], scope: Scope) -> set[str]:
    methods: set[str] = set()
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        if included is not None:
            methods |= _methods(included.routes, scope)
        elif isinstance(route, Route) and route.matches(scope)[0] is Match.PARTIAL:
            methods |= route.methods or set()
    return methods


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(500, "INTERNAL_ERROR", "vaultq failed to answer; the error is logged")


def _title(status: int) -> str:
    from http import HTTPStatus  # noqa: PLC0415 - only on the error path

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
