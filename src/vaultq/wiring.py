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
    from vaultq.queues.protocol import QueueBackend

_QUEUE_ADAPTERS = {"sqlite": "vaultq.queues.sqlite:SqliteQueues"}
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
    url = url or load_settings().url
    parts = urlsplit(url)
    factory = _load(_QUEUE_ADAPTERS, parts.scheme)
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
    backend: QueueBackend = factory(path, **options)
    return backend


def _load(adapters: dict[str, str], scheme: str) -> Any:
    target = adapters.get(scheme)
    if target is None:
        raise errors.InvalidSettings(f"no adapter for {scheme!r}; known: {', '.join(adapters)}")
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
