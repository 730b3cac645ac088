"""The composition root: the only module that names adapters, each imported lazily so that
``import vaultq`` needs no driver beyond the standard library."""

from __future__ import annotations

import importlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import ValidationError

from vaultq import errors
from vaultq.settings import Settings

if TYPE_CHECKING:
    from vaultq.blobs.notifications import Notifier
    from vaultq.blobs.protocol import BlobStore
    from vaultq.jobs.protocol import JobStore
    from vaultq.observe.alarms import AlarmStore
    from vaultq.observe.protocol import MetricsStore
    from vaultq.outbox.protocol import Outbox
    from vaultq.queues.protocol import QueueBackend
    from vaultq.runtime.rate_limit import RateLimiter, TokenBucket
    from vaultq.vectors.protocol import VectorStore

_QUEUE_ADAPTERS = {
    "sqlite": "vaultq.queues.sqlite:SqliteQueues",
    "aws": "vaultq.queues.sqs:SqsQueues",
}
_JOB_ADAPTERS = {
    "sqlite": "vaultq.jobs.sqlite:SqliteJobs",
    "aws": "vaultq.jobs.dynamodb:DynamoJobs",
}
_OUTBOX_ADAPTERS = {
    "sqlite": "vaultq.outbox.sqlite:SqliteOutbox",
    "aws": "vaultq.outbox.dynamodb:DynamoOutbox",
}
_METRICS_ADAPTERS = {"sqlite": "vaultq.observe.sqlite_metrics:SqliteMetrics"}
_ALARM_ADAPTERS = {"sqlite": "vaultq.observe.sqlite_alarms:SqliteAlarms"}
_RATE_LIMIT_ADAPTERS = {
    "sqlite": "vaultq.ratelimits.sqlite:SqliteRateLimiter",
    "aws": "vaultq.ratelimits.dynamodb:DynamoRateLimiter",
}
#: The embedded database keeps its blobs in files beside it.
_BLOB_ADAPTERS = {"sqlite": "vaultq.blobs.local:LocalBlobs", "aws": "vaultq.blobs.s3:S3Blobs"}
_IDEMPOTENCY_ADAPTERS = {
    "sqlite": "vaultq.idempotency.sqlite:SqliteIdempotency",
    "aws": "vaultq.idempotency.dynamodb:DynamoIdempotency",
}
_VECTOR_ADAPTERS = {
    "sqlite": "vaultq.vectors.embedded:EmbeddedVectors",
    "postgresql": "vaultq.vectors.pgvector:PgVectors",
    "postgres": "vaultq.vectors.pgvector:PgVectors",
}
_SQLITE_OPTIONS = frozenset({"durability"})
_AWS_OPTIONS = frozenset({"region", "endpoint_url", "jobs_table", "state", "state_table"})
#: Where an AWS deployment keeps what has no AWS adapter (metrics, alarms, local secrets),
#: and everything else of its state when its URL names ``state=`` (a local opt-in).
DEFAULT_AWS_STATE_URL = "sqlite:///.vaultq/state.db"


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise errors.InvalidSettings(f"{where}: {first['msg']}") from None


def open_queues(
    url: str | None = None, *, durability: Literal["full", "process"] | None = None
) -> QueueBackend:
    """Open the queue backend that ``url`` (default: the settings' URL) names. On the
    embedded backend ``durability`` overrides the URL's ``durability=`` (see
    ``vaultq.queues.sqlite``); SQS is durable either way."""
    url = url or load_settings().url
    if _scheme(url) == "aws":
        sqs: QueueBackend = _load(_QUEUE_ADAPTERS, "aws")(**_aws_client_options(url))
        return sqs
    factory, path, options = _resolve(_QUEUE_ADAPTERS, url)
    if durability is not None:
        options["durability"] = durability
    backend: QueueBackend = factory(path, **options)
    return backend


def open_jobs(url: str | None = None, *, durable_updates: bool = True) -> JobStore:
    """Open the job table that ``url`` (default: the settings' URL) names; on the embedded
    backend it lives in the queues' database. Queue-only options are ignored. Workers pass
    ``durable_updates=False``: on the embedded backend their updates then skip the fsync
    (see ``vaultq.jobs.sqlite``); DynamoDB writes are durable either way."""
    url = url or load_settings().url
    if _scheme(url) == "aws":
        options = _aws_client_options(url)
        table = _aws_options(url).get("jobs_table")
        if table:
            options["table"] = table
        dynamodb: JobStore = _load(_JOB_ADAPTERS, "aws")(**options)
        return dynamodb
    factory, path, _options = _resolve(_JOB_ADAPTERS, url)
    store: JobStore = factory(path, durable_updates=durable_updates)
    return store


def open_outbox(url: str | None = None, *, durable_adds: bool = True) -> Outbox:
    """On AWS, the state table (``state_table=``, default ``vaultq-state``) unless the URL
    names a local ``state=`` database. ``durable_adds=False``: see ``vaultq.outbox.sqlite``
    (the state table's writes are durable either way)."""
    url = url or load_settings().url
    if _uses_state_table(url):
        dynamodb: Outbox = _load(_OUTBOX_ADAPTERS, "aws")(**_state_table_options(url))
        return dynamodb
    factory, path, _options = _resolve(_OUTBOX_ADAPTERS, url)
    outbox: Outbox = factory(path, durable_adds=durable_adds)
    return outbox


def open_metrics(url: str | None = None) -> MetricsStore:
    factory, path, _options = _resolve(_METRICS_ADAPTERS, url)
    store: MetricsStore = factory(path)
    return store


def open_alarms(url: str | None = None) -> AlarmStore:
    """Open the store of alarm states and history that ``url`` names."""
    factory, path, _options = _resolve(_ALARM_ADAPTERS, url)
    store: AlarmStore = factory(path)
    return store


def open_rate_limiter(url: str | None = None, *, default: TokenBucket) -> RateLimiter:
    """A limiter shared by every process using this database (on AWS: the state table, as
    ``open_outbox``); ``default`` for every key."""
    url = url or load_settings().url
    if _uses_state_table(url):
        dynamodb: RateLimiter = _load(_RATE_LIMIT_ADAPTERS, "aws")(
            **_state_table_options(url), default=default
        )
        return dynamodb
    factory, path, _options = _resolve(_RATE_LIMIT_ADAPTERS, url)
    limiter: RateLimiter = factory(path, default=default)
    return limiter


def data_dir(url: str | None = None) -> Path:
    """The folder of the embedded database: blobs and local secrets live beside it."""
    _factory, path, _options = _resolve(_QUEUE_ADAPTERS, url)
    return Path(path).parent


def open_blobs(url: str | None = None, *, notifier: Notifier | None = None) -> BlobStore:
    """S3 on AWS; else the embedded blob store beside the database, signing URLs with a
    secret kept there."""
    url = url or load_settings().url
    if _scheme(url) == "aws":
        s3: BlobStore = _load(_BLOB_ADAPTERS, "aws")(**_aws_client_options(url), notifier=notifier)
        return s3
    root = data_dir(url)
    factory = _load(_BLOB_ADAPTERS, "sqlite")
    store: BlobStore = factory(
        root / "blobs",
        signing_secret=local_secret(root, "blob-signing"),
        notifier=notifier,
        url_prefix="/signed",
    )
    return store


def local_secret(root: Path, name: str) -> bytes:
    """A random 32-byte secret kept in ``root/secrets/name`` (mode 0600), made on first use."""
    folder = root / "secrets"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def open_vectors(url: str | None = None) -> VectorStore:
    """Open the vector store that ``url`` (default: the settings' ``vectors_url``) names:
    ``sqlite:///path.db`` the embedded store, ``postgresql://...`` pgvector. Without either,
    ``vectors.db`` beside the embedded database; an aws deployment must name one, since a
    file per worker would split its vectors between them."""
    target = _vectors_target(url)
    scheme = "sqlite" if isinstance(target, Path) else _scheme(target)
    store: VectorStore = _load(_VECTOR_ADAPTERS, scheme)(target)
    return store


def _vectors_target(url: str | None) -> str | Path:
    """The embedded store's file, or the URL as libpq reads it."""
    if url is None:
        settings = load_settings()
        if settings.vectors_url is None:
            return _default_vectors_path(settings.url)
        url = settings.vectors_url.get_secret_value()
    if _scheme(url) != "sqlite":
        return url
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.query or not path:
        raise errors.InvalidSettings("a sqlite vectors URL is sqlite:///path.db, with no options")
    return Path(path)


def _default_vectors_path(url: str) -> Path:
    if _scheme(url) == "aws":
        raise errors.InvalidSettings(
            "an aws VAULTQ_URL needs VAULTQ_VECTORS_URL (postgresql://...): a local vector "
            "file per worker would split the vectors, and each search would see only some"
        )
    return data_dir(url) / "vectors.db"


def open_idempotency_store(url: str | None = None) -> Any:
    """Open the ``IdempotencyStore`` that ``url`` (default: the settings' URL) names.

    Typed ``Any``: ``vaultq.idempotency`` sits above this module, so naming its Protocol here
    would break the layers. Queue-only options (``durability``) are accepted and ignored:
    one URL names the database for both, and idempotency writes are always durable. On AWS,
    the state table, as ``open_outbox``."""
    url = url or load_settings().url
    if _uses_state_table(url):
        return _load(_IDEMPOTENCY_ADAPTERS, "aws")(**_state_table_options(url))
    factory, path, _options = _resolve(_IDEMPOTENCY_ADAPTERS, url)
    return factory(path)


def _resolve(adapters: dict[str, str], url: str | None) -> tuple[Any, str, dict[str, Any]]:
    """The adapter factory, database path and options that ``url`` names; an AWS URL names
    its ``state`` database for the stores that have no AWS adapter."""
    url = url or load_settings().url
    if _scheme(url) == "aws":
        url = _aws_options(url).get("state") or DEFAULT_AWS_STATE_URL
        if _scheme(url) != "sqlite":
            raise errors.InvalidSettings("the state= of an aws URL is a sqlite:// URL")
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


def _scheme(url: str) -> str:
    return urlsplit(url).scheme


def _aws_options(url: str) -> dict[str, str]:
    options = dict(parse_qsl(urlsplit(url).query))
    unknown = set(options) - _AWS_OPTIONS
    if unknown:
        raise errors.InvalidSettings(
            f"unknown option(s) in an aws URL: {', '.join(sorted(unknown))}"
        )
    return options


def _uses_state_table(url: str) -> bool:
    """An aws URL keeps its state in DynamoDB unless it opts into a local ``state=``."""
    return _scheme(url) == "aws" and not _aws_options(url).get("state")


def _state_table_options(url: str) -> dict[str, Any]:
    options = _aws_client_options(url)
    table = _aws_options(url).get("state_table")
    if table:
        options["table"] = table
    return options


def _aws_client_options(url: str) -> dict[str, Any]:
    """``region`` (the URL's, else the AWS environment's) and ``endpoint_url`` for boto3."""
    options = _aws_options(url)
    region = (
        options.get("region")
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
    )
    if not region:
        raise errors.InvalidSettings("an aws URL needs ?region= (or AWS_REGION)")
    return {"region": region, "endpoint_url": options.get("endpoint_url") or None}


def _load(adapters: dict[str, str], scheme: str) -> Any:
    target = adapters.get(scheme)
    if target is None:
        raise errors.InvalidSettings(f"no adapter for {scheme!r}; known: {', '.join(adapters)}")
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
