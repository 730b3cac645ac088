"""The job table: a DynamoDB-style job-status item that reads the same on every backend.

A job is keyed ``tenant#client#job``. Its status follows an explicit state machine
(``TRANSITIONS``) in which terminal states are final. Times are milliseconds since the epoch
(``*_ms``). Payloads (result, checkpoints, attributes) are JSON objects, and a whole job item
holds at most 400 KB (DynamoDB's item limit), so a job that fits one backend fits them all.
An expired job (``expires_at_ms`` passed) is gone for every read and write, before any sweep.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from vaultq import errors

if TYPE_CHECKING:
    from collections.abc import Sequence

#: A JSON object: str keys; values are JSON's (dict, list, str, int, float, bool, None).
JsonObject: TypeAlias = Mapping[str, Any]

MAX_ID_LENGTH = 128
MAX_ITEM_BYTES = 400 * 1024
MAX_JSON_DEPTH = 32
MAX_ERROR_BYTES = 8 * 1024
MAX_FILES = 1000
MAX_OBJECT_KEY_BYTES = 1024
DEFAULT_TTL_SECONDS = 30 * 24 * 60 * 60
MAX_TTL_SECONDS = 10 * 366 * 24 * 60 * 60
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# Control characters, backslashes and lone surrogates have no place in an object key.
_UNSAFE_KEY_CHARS = re.compile("[\x00-\x1f\x7f\\\\\ud800-\udfff]")


class JobStatus(StrEnum):
    """Where a job is in its life; ``TRANSITIONS`` says where it may go next."""

    #: Accepted and waiting for a worker (also after a retry gave it back).
    QUEUED = "queued"
    #: A worker holds the job and runs its stages.
    PROCESSING = "processing"
    #: Final: finished; ``result`` and ``output_files`` hold what it made.
    SUCCEEDED = "succeeded"
    #: Final: stopped by an error that no retry fixes; ``error`` says which.
    FAILED = "failed"
    #: Stopped: its message used up its receives and went to the dead-letter queue. Final
    #: unless an operator redrives the message: the job then goes back to ``queued``.
    DEAD_LETTERED = "dead_lettered"
    #: Final: withdrawn by its client before a worker took it.
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """The job has stopped: nothing runs it unless a dead letter is redriven."""
        return self in _TERMINAL


_TERMINAL = frozenset({"succeeded", "failed", "dead_lettered", "cancelled"})

#: Every allowed status change. A retry is processing -> queued; a redriven dead letter is
#: dead_lettered -> queued; the other terminal states allow none.
TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = MappingProxyType(
    {
        JobStatus.QUEUED: frozenset(
            {
                JobStatus.PROCESSING,
                JobStatus.CANCELLED,
                JobStatus.FAILED,
                JobStatus.DEAD_LETTERED,
            }
        ),
        JobStatus.PROCESSING: frozenset(
            {
                JobStatus.QUEUED,
                JobStatus.SUCCEEDED,
                JobStatus.FAILED,
                JobStatus.DEAD_LETTERED,
            }
        ),
        JobStatus.SUCCEEDED: frozenset(),
        JobStatus.FAILED: frozenset(),
        JobStatus.DEAD_LETTERED: frozenset({JobStatus.QUEUED}),
        JobStatus.CANCELLED: frozenset(),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class JobKey:
    """``tenant#client#job``; each part is 1-128 of ``[A-Za-z0-9_.:-]``."""

    tenant_id: str
    client_id: str
    job_id: str

    def __post_init__(self) -> None:
        validate_id("tenant_id", self.tenant_id)
        validate_id("client_id", self.client_id)
        validate_id("job_id", self.job_id)

    def __str__(self) -> str:
        return f"{self.tenant_id}#{self.client_id}#{self.job_id}"

    @classmethod
    def parse(cls, text: str) -> JobKey:
        """The key that ``str(key)`` printed; anything else raises ``InvalidParameterValue``."""
        parts = text.split("#") if isinstance(text, str) else []
        if len(parts) != 3:
            raise errors.InvalidParameterValue(
                f"a job key is tenant#client#job, not {_shown(text)}"
            )
        tenant_id, client_id, job_id = parts
        return cls(tenant_id=tenant_id, client_id=client_id, job_id=job_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """What a stage saved to resume from."""

    stage: str
    data: JsonObject


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    key: JobKey
    status: JobStatus
    created_at_ms: int
    updated_at_ms: int
    #: The TTL: from then on every read and write treats the job as gone; a sweep deletes it.
    expires_at_ms: int
    #: Bumped by every write: the token a backend's optimistic concurrency checks.
    version: int = 1
    #: How many times the job entered ``processing``.
    attempts: int = 0
    #: Completed stages, in the order they completed.
    stages_completed: tuple[str, ...] = ()
    current_stage: str | None = None
    #: 0.0-1.0; 1.0 once the job succeeded.
    progress: float = 0.0
    #: Stage -> checkpoint, in the order they were saved (the last is the one to resume from).
    checkpoints: Mapping[str, JsonObject] = field(default_factory=dict)
    #: Object keys of the job's inputs and outputs (in the blob store).
    input_files: tuple[str, ...] = ()
    output_files: tuple[str, ...] = ()
    result: JsonObject | None = None
    error: str | None = None
    #: The application's own fields, e.g. ``estimated_time_seconds``.
    attributes: JsonObject = field(default_factory=dict)

    @property
    def day(self) -> str:
        """The job's date bucket: its UTC creation day, ``YYYY-MM-DD``."""
        created = dt.datetime.fromtimestamp(self.created_at_ms / 1000, tz=dt.UTC)
        return created.date().isoformat()

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        if not self.checkpoints:
            return None
        stage = list(self.checkpoints)[-1]
        return Checkpoint(stage=stage, data=self.checkpoints[stage])


@dataclass(frozen=True, slots=True, kw_only=True)
class JobPage:
    """One page of a listing, newest first; pass ``next_cursor`` back for the next page."""

    jobs: tuple[Job, ...]
    #: Opaque and bound to the query that issued it; None on the last page.
    next_cursor: str | None = None


class JobStore(Protocol):
    """A job table: conditional writes on one item, three tenant-scoped listings, a TTL.

    Every write is atomic on its job: it sees the job as the last write left it, or fails.
    Missing and expired jobs read as ``None`` from ``get`` and raise ``JobNotFound`` from
    every write. Listings are newest first by ``created_at_ms`` and never cross tenants.
    """

    def create(
        self,
        key: JobKey,
        *,
        input_files: Sequence[str] = (),
        attributes: JsonObject | None = None,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> Job:
        """Store a new ``queued`` job expiring ``ttl_seconds`` after now. A live job with
        the same key raises ``JobAlreadyExists``; an expired one is replaced."""
        ...

    def get(self, key: JobKey) -> Job | None:
        """The job, or None when it does not exist or has expired."""
        ...

    def transition(self, key: JobKey, *, to: JobStatus, expected: JobStatus | None = None) -> Job:
        """Move the job to ``to``. With ``expected``, only if it is in that status now,
        else ``ConditionalCheckFailed``; a change outside ``TRANSITIONS`` raises
        ``InvalidJobTransition``. Entering ``processing`` counts an attempt."""
        ...

    def complete_stage(
        self,
        key: JobKey,
        stage: str,
        *,
        checkpoint: JsonObject | None = None,
        progress: float | None = None,
    ) -> Job:
        """Record ``stage`` as completed (once: completing it again replaces its checkpoint
        and keeps its place) and clear ``current_stage``. The job must be processing."""
        ...

    def save_progress(
        self,
        key: JobKey,
        progress: float,
        *,
        stage: str | None = None,
        checkpoint: JsonObject | None = None,
    ) -> Job:
        """Set progress and, with ``stage``, the current stage; ``checkpoint`` is saved for
        the current stage (a mid-stage checkpoint). The job must be processing."""
        ...

    def last_checkpoint(self, key: JobKey) -> Checkpoint | None:
        """The most recently saved checkpoint, None before any; ``JobNotFound`` if no job."""
        ...

    def set_result(
        self, key: JobKey, result: JsonObject, *, output_files: Sequence[str] = ()
    ) -> Job:
        """processing -> succeeded with ``result`` and ``output_files``; progress is 1.0."""
        ...

    def fail(self, key: JobKey, error: str, *, to: JobStatus = JobStatus.FAILED) -> Job:
        """queued or processing -> ``failed`` (or ``dead_lettered``) with ``error``, which the
        caller has already scrubbed of private data."""
        ...

    def list_by_status(
        self,
        tenant_id: str,
        status: JobStatus,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> JobPage:
        """The tenant's jobs in ``status`` created in ``[since_ms, until_ms)``."""
        ...

    def list_by_client(
        self,
        tenant_id: str,
        client_id: str,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> JobPage:
        """The jobs of one of the tenant's clients created in ``[since_ms, until_ms)``."""
        ...

    def list_by_day(
        self,
        tenant_id: str,
        day: str,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> JobPage:
        """The tenant's jobs created on the UTC day ``day`` (``YYYY-MM-DD``)."""
        ...

    def count_by_status(self) -> dict[JobStatus, int]:
        """Live jobs of every tenant per status, for metrics (statuses with none omitted)."""
        ...

    def sweep_expired(self) -> int:
        """Delete every expired job; returns how many were deleted."""
        ...

    def close(self) -> None: ...


def validate_id(label: str, value: object) -> None:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise errors.InvalidParameterValue(
            f"{label} must be 1-{MAX_ID_LENGTH} of A-Z a-z 0-9 _ . : - (no '#'), "
            f"not {_shown(value)}"
        )


def validate_stage(stage: object) -> str:
    validate_id("stage", stage)
    return str(stage)


def validate_status(status: object) -> JobStatus:
    try:
        if not isinstance(status, str):
            raise ValueError(status)
        return JobStatus(status)
    except ValueError:
        raise errors.InvalidParameterValue(f"unknown job status {_shown(status)}") from None


def validate_progress(progress: object) -> float:
    if (
        isinstance(progress, bool)
        or not isinstance(progress, int | float)
        or not 0.0 <= progress <= 1.0
    ):
        raise errors.InvalidParameterValue(f"progress must be 0.0..1.0, not {_shown(progress)}")
    return float(progress)


def validate_ttl(ttl_seconds: object) -> int:
    if (
        isinstance(ttl_seconds, bool)
        or not isinstance(ttl_seconds, int)
        or not 1 <= ttl_seconds <= MAX_TTL_SECONDS
    ):
        raise errors.InvalidParameterValue(
            f"ttl_seconds must be an integer 1..{MAX_TTL_SECONDS}, not {_shown(ttl_seconds)}"
        )
    return ttl_seconds


def validate_error(error: object) -> str:
    if not isinstance(error, str) or not error:
        raise errors.MissingParameter("a failure needs a non-empty error text")
    if len(_utf8(error, "error")) > MAX_ERROR_BYTES:
        raise errors.InvalidParameterValue(f"an error text holds at most {MAX_ERROR_BYTES} bytes")
    return error


def validate_json_object(label: str, value: object) -> dict[str, Any]:
    """A private copy of ``value`` if it is a JSON object that JSON keeps exactly (no
    tuples, sets, bytes, non-str keys, NaN or infinities), nests at most 32 levels (as
    DynamoDB) and encodes to at most 400 KB; else a ``vaultq`` error."""
    if not isinstance(value, Mapping):
        raise errors.InvalidParameterValue(f"{label} must be a JSON object (a dict)")
    try:
        text = encode_json(dict(value))
        size_bytes = len(_utf8(text, label))
        copy = json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise errors.InvalidParameterValue(f"{label} is not JSON: {exc}") from None
    if copy != dict(value):
        raise errors.InvalidParameterValue(
            f"{label} holds values JSON does not keep as they are (tuples, non-str keys)"
        )
    if size_bytes > MAX_ITEM_BYTES:
        raise errors.JobTooLarge(f"{label} is {size_bytes} bytes; at most {MAX_ITEM_BYTES}")
    if _depth(copy) > MAX_JSON_DEPTH:
        raise errors.InvalidParameterValue(f"{label} nests deeper than {MAX_JSON_DEPTH} levels")
    return dict(copy)


def validate_object_keys(label: str, keys: object) -> tuple[str, ...]:
    """Object keys: 1-1024 UTF-8 bytes, relative, no empty, ``.`` or ``..`` segment, no
    backslash or control character; at most 1000 of them."""
    if not isinstance(keys, list | tuple):
        raise errors.InvalidParameterValue(f"{label} must be a list of object keys")
    if len(keys) > MAX_FILES:
        raise errors.InvalidParameterValue(f"{label} holds at most {MAX_FILES} object keys")
    for key in keys:
        if not isinstance(key, str) or not _is_safe_object_key(key):
            raise errors.InvalidParameterValue(f"{label}: not a safe object key: {_shown(key)}")
    return tuple(keys)


def validate_day(day: object) -> str:
    try:
        if not isinstance(day, str) or not _DAY.fullmatch(day):
            raise ValueError(day)
        dt.date.fromisoformat(day)
    except ValueError:
        raise errors.InvalidParameterValue(f"a day is YYYY-MM-DD, not {_shown(day)}") from None
    return day


def validate_range(since_ms: object, until_ms: object) -> tuple[int, int]:
    """``[since_ms, until_ms)`` with open ends filled in."""
    since = _optional_ms("since_ms", since_ms, default=0)
    until = _optional_ms("until_ms", until_ms, default=2**63 - 1)
    if since >= until:
        raise errors.InvalidParameterValue("since_ms must be before until_ms")
    return since, until


def validate_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise errors.InvalidParameterValue(
            f"limit must be an integer 1..{MAX_PAGE_SIZE}, not {_shown(limit)}"
        )
    return limit


def require_key(key: object) -> JobKey:
    if not isinstance(key, JobKey):
        raise errors.InvalidParameterValue(
            f"a job is addressed by a JobKey, not {type(key).__name__}"
        )
    return key


def encode_json(value: object) -> str:
    """Compact UTF-8 JSON: the form payloads are stored and measured in."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _optional_ms(label: str, value: object, *, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.InvalidParameterValue(f"{label} must be milliseconds >= 0")
    return value


def _is_safe_object_key(key: str) -> bool:
    if not key or key.startswith("/") or _UNSAFE_KEY_CHARS.search(key):
        return False
    segments = key.split("/")
    if {"", ".", ".."} & set(segments):
        return False
    return len(key.encode()) <= MAX_OBJECT_KEY_BYTES


def _depth(value: object) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


def _utf8(text: str, label: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise errors.InvalidParameterValue(f"{label} is not valid Unicode text") from None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
