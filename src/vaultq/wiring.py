"""The composition root: the only module that names adapters, each imported lazily so that
``import vaultq`` needs no driver beyond the standard library."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import ValidationError

from vaultq import errors
from vaultq.settings import Settings

if TYPE_CHECKING:
    from vaultq.jobs.protocol import JobStore
    from vaultq.queues.protocol import QueueBackend

_QUEUE_ADAPTERS = {"sqlite": "vaultq.queues.sqlite:SqliteQueues"}
_JOB_ADAPTERS = {"sqlite": "vaultq.jobs.sqlite:SqliteJobs"}
_IDEMPOTENCY_ADAPTERS = {"sqlite": "vaultq.idempotency.sqlite:SqliteIdempotency"}
_SQLITE_OPTIONS = frozenset({"durability"})


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise errors.InvalidSettings(f"{where}: {first['msg']}") from None


def open_queues(url: str | None = None) -> QueueBackend:
    """Open the queue backend that ``url`` (default: the settings' URL) names."""
    factory, path, options = _resolve(_QUEUE_ADAPTERS, url)
    backend: QueueBackend = factory(path, **options)
    return backend


def open_jobs(url: str | None = None) -> JobStore:
    """Open the job table that ``url`` (default: the settings' URL) names; on the embedded
    backend it lives in the queues' database. Queue-only options are ignored."""
    factory, path, _options = _resolve(_JOB_ADAPTERS, url)
    store: JobStore = factory(path)
    return store


def open_idempotency_store(url: str | None = None) -> Any:
    """Open the ``IdempotencyStore`` that ``url`` (default: the settings' URL) names.

    Typed ``Any``: ``vaultq.idempotency`` sits above this module, so naming its Protocol here
    would break the layers. Queue-only options (``durability``) are accepted and ignored:
    one URL names the database for both, and idempotency writes are always durable."""
    factory, path, _options = _resolve(_IDEMPOTENCY_ADAPTERS, url)
    return factory(path)


def _resolve(adapters: dict[str, str], url: str | None) -> tuple[Any, str, dict[str, Any]]:
    """The adapter factory, database path and options that ``url`` names."""
    url = url or load_settings().url
    parts = urlsplit(url)
    factory = _load(adapters, parts.scheme)
    options: dict[str, Any] = dict(parse_qsl(parts.query))
    unknown = set(options) - _SQLITE_OPTIONS
    if unknown:
        raise errors.InvalidSettings(
            f"unknown option(s) in VAULTQ_URL: {', '.join(sorted(unknown))}"
        )
    # sqlite:///rel.db has path "/rel.db"; sqlite:////abs.db has "//abs.db".
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise errors.InvalidSettings("a sqlite URL needs a database path")
    return factory, path, options


def _load(adapters: dict[str, str], scheme: str) -> Any:
    target = adapters.get(scheme)
    if target is None:
        raise errors.InvalidSettings(f"no adapter for {scheme!r}; known: {', '.join(adapters)}")
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
