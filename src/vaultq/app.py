"""The App: one object that declares everything a deployment needs.

Declaring does nothing else: no queue is created and nothing runs at import. The same App is
provisioned on a backend, served by workers, or drawn as a deployment template.

    app = App("orders")
    app.queue("orders", visibility_timeout_seconds=120, dead_letter=DeadLetterQueue())

    @app.handler(queue="orders", batch_size=10, report_batch_item_failures=True)
    def process(event, context):
        ...
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from vaultq import errors
from vaultq.blobs.notifications import BucketNotification, QueueNotifier, check_configurations
from vaultq.blobs.protocol import validate_bucket_name
from vaultq.observe.alarms import (
    Alarm,
    AlarmMetric,
    Comparison,
    MetricKind,
    MissingData,
    Webhook,
    member_of,
)
from vaultq.queues.protocol import (
    MAX_RETENTION_SECONDS,
    QueueAttributes,
    RedrivePolicy,
    validate_queue_name,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic import JsonValue

    from vaultq.blobs.protocol import BlobStore
    from vaultq.queues.protocol import QueueBackend

Handler = Callable[[dict[str, Any], Any], Any]
_Check = TypeVar("_Check", bound=Callable[[], object])

MAX_BATCH_SIZE = 10_000
MAX_BATCHING_WINDOW_SECONDS = 300
MAX_TIMEOUT_SECONDS = 900
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ROUTE_PATH = re.compile(r"^(/[a-z0-9][a-z0-9_-]{0,63}){1,4}$")
#: First path segments the API's own routes use.
_RESERVED_SEGMENTS = frozenset(
    {"jobs", "status", "queues", "blobs", "signed", "healthz", "readyz", "metrics", "docs"}
    | {"redoc", "openapi.json", "alarms"}
)
_FILE_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
_GROUP = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
#: The multipart part holding a job route's JSON body.
BODY_FIELD = "body"
#: How long an equal submission counts as a duplicate: SQS's deduplication interval.
DEDUPLICATION_SECONDS = 300
#: The longest a job route may hold a request open for its job (SQS long polling's cap).
MAX_WAIT_SECONDS = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterQueue:
    """A queue's dead-letter queue, named ``<queue>-dlq`` (``<queue>-dlq.fifo``)."""

    max_receive_count: int = 3
    retention_seconds: int = MAX_RETENTION_SECONDS


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Back-off before a failed message is visible again: exponential, capped, jittered."""

    base_seconds: float = 1.0
    cap_seconds: float = 900.0
    #: Full jitter: a random delay between 0 and the exponential value, so retries of many
    #: messages that failed together spread out instead of returning in one burst.
    jitter: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.base_seconds <= self.cap_seconds <= 43_200:
            raise errors.InvalidParameterValue(
                "retry needs 0 <= base_seconds <= cap_seconds <= 43200"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class EventSourceMapping:
    """How a queue feeds a handler, with Lambda's options and limits."""

    queue: str
    batch_size: int = 10
    batching_window_seconds: float = 0.0
    max_concurrency: int = 2
    report_batch_item_failures: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise errors.InvalidParameterValue(f"batch_size must be 1..{MAX_BATCH_SIZE}")
        if not 0 <= self.batching_window_seconds <= MAX_BATCHING_WINDOW_SECONDS:
            raise errors.InvalidParameterValue("batching_window_seconds must be 0..300")
        if self.batch_size > 10 and self.batching_window_seconds == 0:
            raise errors.InvalidParameterValue(
                "a batch_size over 10 needs a batching window, as on Lambda"
            )
        if not 1 <= self.max_concurrency <= 1000:
            raise errors.InvalidParameterValue("max_concurrency must be 1..1000")


@dataclass(frozen=True, slots=True, kw_only=True)
class HandlerSpec:
    name: str
    function: Handler
    mapping: EventSourceMapping
    timeout_seconds: int = 30
    memory_limit_in_mb: int = 128
    #: Runs once in each handler process before its first invocation: Lambda's init phase
    #: (loading a model, opening stores). The app module cannot do it at import, since the
    #: API imports it too.
    init: Callable[[], object] | None = None
    #: Handler processes started, and initialised, when a worker starts rather than on their
    #: first event: Lambda's provisioned concurrency. At most ``max_concurrency``.
    provisioned_concurrency: int = 0

    def __post_init__(self) -> None:
        if not _FUNCTION_NAME.fullmatch(self.name):
            raise errors.InvalidParameterValue(f"invalid function name {self.name!r}")
        if not 0 <= self.provisioned_concurrency <= self.mapping.max_concurrency:
            raise errors.InvalidParameterValue("provisioned_concurrency must be 0..max_concurrency")
        if not 1 <= self.timeout_seconds <= MAX_TIMEOUT_SECONDS:
            raise errors.InvalidParameterValue(f"timeout_seconds must be 1..{MAX_TIMEOUT_SECONDS}")
        if not 128 <= self.memory_limit_in_mb <= 10_240:
            raise errors.InvalidParameterValue("memory_limit_in_mb must be 128..10240")


@dataclass(frozen=True, slots=True, kw_only=True)
class FileField:
    """A file a job route takes as one part of a ``multipart/form-data`` request."""

    name: str
    required: bool = True
    #: The part's declared media types that are accepted; empty accepts any.
    content_types: tuple[str, ...] = ()
    #: At most this many bytes; None: the server's blob limit.
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if not _FILE_FIELD.fullmatch(self.name) or self.name == BODY_FIELD:
            raise errors.InvalidParameterValue(f"invalid file field name {self.name!r}")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise errors.InvalidParameterValue("a file's max_bytes must be at least 1")
        for media_type in self.content_types:
            if not _MEDIA_TYPE.fullmatch(media_type):
                raise errors.InvalidParameterValue(
                    f"{media_type!r} is not a lower-case type/subtype media type"
                )


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueChoice:
    """Send a job route's jobs to the queue its payload's ``field`` names, e.g. one queue per
    priority: ``QueueChoice(field="priority", queues={"high": "requests-high"})``. Other
    values (and a payload without the field) go to the route's own queue."""

    field: str
    queues: Mapping[str, str]

    def __post_init__(self) -> None:
        if not self.queues:
            raise errors.InvalidParameterValue("a queue choice needs at least one queue")


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRoute:
    """``POST <path>``: what a job submission carries, where its message goes, and what the
    route promises about it."""

    path: str
    queue: str
    #: The JSON body's model; None takes ``{"payload": <any JSON>, "client_id"?}``.
    body: type[BaseModel] | None = None
    #: With files the request is multipart: the files, and the body as JSON in field ``body``.
    files: tuple[FileField, ...] = ()
    #: Where the files are stored, under ``jobs/<tenant>/<client>/<job_id>/``.
    bucket: str | None = None
    #: A FIFO queue's one message group; None: one group per tenant and client.
    message_group: str | None = None
    #: A submission equal to one accepted within ``DEDUPLICATION_SECONDS`` answers with the
    #: job that one created instead of making another.
    deduplicate: bool = False
    estimated_time_seconds: int = 60
    ttl_seconds: int = 30 * 24 * 60 * 60
    #: Turns the validated payload (and the caller's tenant) into the job's payload before
    #: anything is stored or fingerprinted, e.g. to seal a private field for the workers.
    prepare_payload: Callable[[JsonValue, str], JsonValue] | None = None
    #: How long ``POST`` waits for the job to finish and answer with its result (JSON
    #: routes; 0: answer at once). For short jobs, e.g. a search.
    wait_seconds: float = 0
    #: Another queue for some jobs, chosen by a field of the (prepared) payload.
    queue_by: QueueChoice | None = None
    #: How a route that waits answers a job that failed in time: a problem whose status is
    #: the one of the job's reason code (the error's first word), 500 for any other.
    failure_statuses: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _ROUTE_PATH.fullmatch(self.path) or (
            self.path != "/jobs" and self.path.split("/")[1] in _RESERVED_SEGMENTS
        ):
            raise errors.InvalidParameterValue(f"{self.path!r} cannot be a job route")
        if self.body is not None:
            _check_body_model(self.body)
        if self.files and self.bucket is None:
            raise errors.InvalidParameterValue("a job route with files needs a bucket")
        if len({file.name for file in self.files}) != len(self.files):
            raise errors.InvalidParameterValue("a job route's file fields need distinct names")
        if self.message_group is not None and not _GROUP.fullmatch(self.message_group):
            raise errors.InvalidParameterValue(f"invalid message group {self.message_group!r}")
        if not 0 <= self.estimated_time_seconds <= 86_400:
            raise errors.InvalidParameterValue("estimated_time_seconds must be 0..86400")
        if not 60 <= self.ttl_seconds <= 366 * 86_400:
            raise errors.InvalidParameterValue("ttl_seconds must be 60 s..366 days")
        if not 0 <= self.wait_seconds <= MAX_WAIT_SECONDS or (self.wait_seconds and self.files):
            raise errors.InvalidParameterValue(
                f"wait_seconds must be 0..{MAX_WAIT_SECONDS}, and 0 for a route with files"
            )
        if not all(400 <= status <= 599 for status in self.failure_statuses.values()):
            raise errors.InvalidParameterValue("failure_statuses are HTTP error statuses")

    @property
    def multipart(self) -> bool:
        return bool(self.files)

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue this route may send to, its own first."""
        chosen = () if self.queue_by is None else tuple(self.queue_by.queues.values())
        return tuple(dict.fromkeys((self.queue, *chosen)))

    def queue_for(self, payload: JsonValue) -> str:
        """The queue a job with this (prepared) payload goes to."""
        if self.queue_by is None or not isinstance(payload, dict):
            return self.queue
        value = payload.get(self.queue_by.field)
        return self.queue_by.queues.get(value, self.queue) if isinstance(value, str) else self.queue


def _check_body_model(model: type[BaseModel]) -> None:
    """Unknown fields are refused: a typo must fail the request, not vanish from the job."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise errors.InvalidParameterValue("a job route's body is a pydantic model class")
    if model.model_config.get("extra") != "forbid":
        raise errors.InvalidParameterValue(
            f"{model.__name__} must refuse unknown fields: model_config = "
            "ConfigDict(extra='forbid')"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSpec:
    name: str
    attributes: QueueAttributes
    dead_letter: DeadLetterQueue | None = None

    @property
    def dead_letter_queue(self) -> str | None:
        if self.dead_letter is None:
            return None
        base = self.name.removesuffix(".fifo")
        return f"{base}-dlq.fifo" if self.attributes.fifo else f"{base}-dlq"


class App:
    """Declares queues, handlers and their event source mappings."""

    def __init__(self, name: str) -> None:
        if not _FUNCTION_NAME.fullmatch(name):
            raise errors.InvalidParameterValue(f"invalid app name {name!r}")
        self.name = name
        self.queues: dict[str, QueueSpec] = {}
        self.handlers: dict[str, HandlerSpec] = {}
        self.buckets: dict[str, tuple[BucketNotification, ...]] = {}
        self.alarms: dict[str, Alarm] = {}
        #: ``POST`` routes that create jobs, by path.
        self.job_routes: dict[str, JobRoute] = {}
        #: What ``/readyz`` runs besides its store checks: each raises a ``VaultqError``
        #: when the app cannot serve its routes, e.g. for lack of a setting.
        self.readiness_checks: list[Callable[[], object]] = []

    def queue(
        self,
        name: str,
        *,
        dead_letter: DeadLetterQueue | None = None,
        **attributes: Any,
    ) -> str:
        """Declare a queue; ``attributes`` are ``QueueAttributes`` fields. Returns its name."""
        if name in self.queues:
            raise errors.InvalidParameterValue(f"queue {name!r} is declared twice")
        if "redrive_policy" in attributes:
            raise errors.InvalidParameterValue("declare dead letters with dead_letter=")
        try:
            queue_attributes = QueueAttributes(**attributes)
        except TypeError as exc:
            raise errors.InvalidParameterValue(f"unknown queue option: {exc}") from None
        validate_queue_name(name, fifo=queue_attributes.fifo)
        self.queues[name] = QueueSpec(
            name=name, attributes=queue_attributes, dead_letter=dead_letter
        )
        return name

    def bucket(self, name: str, *, notifications: Sequence[BucketNotification] = ()) -> str:
        """Declare a bucket whose writes send S3 events to declared queues."""
        validate_bucket_name(name)
        if name in self.buckets:
            raise errors.InvalidParameterValue(f"bucket {name!r} is declared twice")
        for notification in notifications:
            if notification.queue not in self.queues:
                raise errors.InvalidParameterValue(
                    f"bucket {name!r} notifies undeclared queue {notification.queue!r}"
                )
        check_configurations(name, notifications)
        self.buckets[name] = tuple(notifications)
        return name

    def accept_jobs(
        self,
        *,
        queue: str,
        path: str = "/jobs",
        body: type[BaseModel] | None = None,
        files: Sequence[FileField | str] = (),
        bucket: str | None = None,
        message_group: str | None = None,
        deduplicate: bool | None = None,
        estimated_time_seconds: int = 60,
        ttl_seconds: int = 30 * 86_400,
        prepare_payload: Callable[[JsonValue, str], JsonValue] | None = None,
        wait_seconds: float = 0,
        queue_by: QueueChoice | None = None,
        failure_statuses: Mapping[str, int] | None = None,
    ) -> JobRoute:
        """Let ``POST <path>`` create jobs whose messages go to ``queue``.

        ``body`` (a pydantic model refusing unknown fields) validates the request, and its
        JSON dump is the job's payload; ``files`` (names or ``FileField``) make the request
        multipart and are stored in ``bucket``. ``deduplicate`` defaults to the queue's
        content-based deduplication. ``prepare_payload(payload, tenant)`` returns the payload
        to store and send instead (its result is what duplicates are compared on). With
        ``wait_seconds`` the request holds on until the job finishes (``200`` with its
        ``result``) or the time is up (``202``, as without it). ``queue_by`` sends the jobs
        whose payload field has one of its values to that value's queue (declared, and FIFO
        if and only if ``queue`` is), e.g. a queue per priority with a handler of its own.
        A job that fails while the route waits is answered as a problem with its reason code
        and job id: ``failure_statuses`` maps reasons to statuses (4xx for the caller's
        input), and any other reason is a 500."""
        spec = self.queues.get(queue)
        if spec is None:
            raise errors.InvalidParameterValue(f"jobs go to undeclared queue {queue!r}")
        for other in () if queue_by is None else queue_by.queues.values():
            other_spec = self.queues.get(other)
            if other_spec is None or other_spec.attributes.fifo != spec.attributes.fifo:
                raise errors.InvalidParameterValue(
                    f"queue_by names {other!r}: not a declared queue of {queue!r}'s type"
                )
        if path in self.job_routes:
            raise errors.InvalidParameterValue(f"job route {path!r} is declared twice")
        if bucket is not None and bucket not in self.buckets:
            raise errors.InvalidParameterValue(f"jobs store files in undeclared bucket {bucket!r}")
        if message_group is not None and not spec.attributes.fifo:
            raise errors.InvalidParameterValue("a message group needs a FIFO queue")
        route = JobRoute(
            path=path,
            queue=queue,
            body=body,
            files=tuple(FileField(name=f) if isinstance(f, str) else f for f in files),
            bucket=bucket,
            message_group=message_group,
            deduplicate=(
                spec.attributes.content_based_deduplication if deduplicate is None else deduplicate
            ),
            estimated_time_seconds=estimated_time_seconds,
            ttl_seconds=ttl_seconds,
            prepare_payload=prepare_payload,
            wait_seconds=wait_seconds,
            queue_by=queue_by,
            failure_statuses=dict(failure_statuses or {}),
        )
        self.job_routes[path] = route
        return route

    def ready_when(self, check: _Check) -> _Check:
        """Have ``/readyz`` also run ``check``, which raises a ``VaultqError`` while the app
        cannot serve its routes (the API then answers 503); usable as a decorator."""
        self.readiness_checks.append(check)
        return check

    def notifier(self, queues: QueueBackend) -> QueueNotifier:
        """The notifier a blob store needs to deliver this app's upload events."""
        return QueueNotifier(queues, self.buckets)

    def handler(
        self,
        *,
        queue: str,
        name: str | None = None,
        timeout_seconds: int = 30,
        memory_limit_in_mb: int = 128,
        batch_size: int = 10,
        batching_window_seconds: float = 0.0,
        max_concurrency: int = 2,
        report_batch_item_failures: bool = False,
        retry: RetryPolicy | None = None,
        init: Callable[[], object] | None = None,
        provisioned_concurrency: int = 0,
    ) -> Callable[[Handler], Handler]:
        """Register a Lambda-style ``handler(event, context)`` fed by ``queue``. ``init``
        runs once per handler process before its first invocation; ``provisioned_concurrency``
        processes start and run it when a worker starts, so a backlog finds them warm."""
        mapping = EventSourceMapping(
            queue=queue,
            batch_size=batch_size,
            batching_window_seconds=batching_window_seconds,
            max_concurrency=max_concurrency,
            report_batch_item_failures=report_batch_item_failures,
            retry=retry or RetryPolicy(),
        )

        def register(function: Handler) -> Handler:
            spec = HandlerSpec(
                name=name or function.__name__,
                function=function,
                mapping=mapping,
                timeout_seconds=timeout_seconds,
                memory_limit_in_mb=memory_limit_in_mb,
                init=init,
                provisioned_concurrency=provisioned_concurrency,
            )
            self._check_handler(spec)
            self.handlers[spec.name] = spec
            return function

        return register

    def _check_handler(self, spec: HandlerSpec) -> None:
        if spec.name in self.handlers:
            raise errors.InvalidParameterValue(f"handler {spec.name!r} is declared twice")
        queue = self.queues.get(spec.mapping.queue)
        if queue is None:
            raise errors.InvalidParameterValue(
                f"handler {spec.name!r} reads undeclared queue {spec.mapping.queue!r}"
            )

    def alarm(
        self,
        name: str,
        *,
        metric: AlarmMetric,
        threshold: float,
        comparison: Comparison | str = Comparison.GREATER_OR_EQUAL,
        period_seconds: int = 60,
        missing_data: MissingData | str = MissingData.MISSING,
        description: str = "",
        webhooks: Sequence[Webhook] = (),
    ) -> str:
        """Declare an alarm on a metric of ``vaultq.observe.alarms`` (``dlq_depth``,
        ``oldest_message_age_seconds``, ``handler_errors``, ``api_errors``) over this app's
        declared queues and handlers; ``vaultq up`` evaluates it. Returns its name::

            app.alarm("orders-dead-letters", metric=dlq_depth("orders"), threshold=1)
        """
        if name in self.alarms:
            raise errors.InvalidParameterValue(f"alarm {name!r} is declared twice")
        self._check_alarm_metric(name, metric)
        self.alarms[name] = Alarm(
            name=name,
            metric=metric,
            threshold=threshold,
            comparison=member_of(Comparison, comparison),
            period_seconds=period_seconds,
            missing_data=member_of(MissingData, missing_data),
            description=description,
            webhooks=tuple(webhooks),
        )
        return name

    def _check_alarm_metric(self, name: str, metric: AlarmMetric) -> None:
        dead_letter_queues = {s.dead_letter_queue for s in self.queues.values()}
        if metric.kind is MetricKind.DLQ_DEPTH and (
            metric.queue not in self.queues or self.queues[metric.queue].dead_letter is None
        ):
            raise errors.InvalidParameterValue(
                f"alarm {name!r} watches {metric.queue!r}, not a declared queue with a DLQ"
            )
        if metric.queue is not None and metric.queue not in {*self.queues, *dead_letter_queues}:
            raise errors.InvalidParameterValue(f"alarm {name!r} watches undeclared queue")
        if metric.handler is not None and metric.handler not in self.handlers:
            raise errors.InvalidParameterValue(
                f"alarm {name!r} watches undeclared handler {metric.handler!r}"
            )

    def provision(self, queues: QueueBackend, blobs: BlobStore | None = None) -> None:
        """Create every declared queue (dead-letter queues first), then every bucket (S3
        refuses a notification to a queue that does not exist yet); idempotent."""
        for spec in self.queues.values():
            dlq = spec.dead_letter_queue
            attributes = spec.attributes
            if dlq is not None and spec.dead_letter is not None:
                queues.create_queue(
                    dlq,
                    replace(
                        QueueAttributes(fifo=attributes.fifo),
                        message_retention_seconds=spec.dead_letter.retention_seconds,
                    ),
                )
                attributes = replace(
                    attributes,
                    redrive_policy=RedrivePolicy(
                        dead_letter_queue=dlq,
                        max_receive_count=spec.dead_letter.max_receive_count,
                    ),
                )
            queues.create_queue(spec.name, attributes)
        if blobs is not None:
            for bucket in self.buckets:
                blobs.create_bucket(bucket)


def load_app(path: str) -> App:
    """Import ``module:attribute`` and return the App it names."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise errors.InvalidParameterValue(f"an app is named module:attribute, not {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise errors.InvalidParameterValue(f"cannot import {module_name!r}: {exc}") from None
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise errors.InvalidParameterValue(f"{path!r} is not a vaultq App")
    return app
