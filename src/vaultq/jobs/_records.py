"""What every job backend shares: the changes a write makes, the item size, the cursors.

A write is built in two steps so that each backend runs the same rules: the builder
validates its arguments before the backend touches its store, and the ``Change`` it returns
is applied to the job as stored, inside the backend's transaction (or before its conditional
put). A change raises instead of returning when the job's state forbids it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vaultq import errors
from vaultq.jobs.protocol import (
    MAX_ITEM_BYTES,
    TRANSITIONS,
    Checkpoint,
    Job,
    JobKey,
    JobPage,
    JobStatus,
    encode_json,
    require_key,
    validate_error,
    validate_json_object,
    validate_object_keys,
    validate_progress,
    validate_stage,
    validate_status,
    validate_ttl,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    #: The job as stored and the time now (ms) -> the job to store.
    Change = Callable[[Job, int], Job]

_CURSOR_VERSION = 1
_CURSOR = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAC_BYTES = 16


class ChangeWrites(ABC):
    """The ``JobStore`` writes that are one shared change (below) applied by the store's own
    read-modify-write ``_update``: every backend changes a job the same way."""

    @abstractmethod
    def get(self, key: JobKey) -> Job | None: ...

    @abstractmethod
    def _update(self, key: JobKey, change: Change) -> Job: ...

    def transition(self, key: JobKey, *, to: JobStatus, expected: JobStatus | None = None) -> Job:
        return self._update(key, transition(to=to, expected=expected))

    def complete_stage(
        self,
        key: JobKey,
        stage: str,
        *,
        checkpoint: Mapping[str, Any] | None = None,
        progress: float | None = None,
    ) -> Job:
        return self._update(key, complete_stage(stage, checkpoint=checkpoint, progress=progress))

    def save_progress(
        self,
        key: JobKey,
        progress: float,
        *,
        stage: str | None = None,
        checkpoint: Mapping[str, Any] | None = None,
    ) -> Job:
        return self._update(key, save_progress(progress, stage=stage, checkpoint=checkpoint))

    def last_checkpoint(self, key: JobKey) -> Checkpoint | None:
        job = self.get(key)
        if job is None:
            raise errors.JobNotFound(f"no job {key}")
        return job.last_checkpoint

    def set_result(
        self, key: JobKey, result: Mapping[str, Any], *, output_files: Sequence[str] = ()
    ) -> Job:
        return self._update(key, succeed(result, output_files=output_files))

    def fail(self, key: JobKey, error: str, *, to: JobStatus = JobStatus.FAILED) -> Job:
        return self._update(key, fail(error, to=to))


def new_job(
    key: JobKey,
    *,
    input_files: Sequence[str],
    attributes: Mapping[str, Any] | None,
    ttl_seconds: int,
) -> Callable[[int], Job]:
    """Validate a create now; the returned function makes the job at a given time (ms)."""
    require_key(key)
    files = validate_object_keys("input_files", input_files)
    fields = validate_json_object("attributes", {} if attributes is None else attributes)
    ttl_ms = validate_ttl(ttl_seconds) * 1000

    def make(now_ms: int) -> Job:
        job = Job(
            key=key,
            status=JobStatus.QUEUED,
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
            expires_at_ms=now_ms + ttl_ms,
            input_files=files,
            attributes=fields,
        )
        check_item_size(job)
        return job

    return make


def transition(*, to: JobStatus, expected: JobStatus | None) -> Change:
    target = validate_status(to)
    condition = None if expected is None else validate_status(expected)
    if condition is not None:
        # A condition that no stored state can satisfy is the caller's mistake: say so now.
        _check_allowed(condition, target)

    def apply(job: Job, now_ms: int) -> Job:
        if condition is not None and job.status != condition:
            raise errors.ConditionalCheckFailed(f"job {job.key} is {job.status}, not {condition}")
        return _moved(job, target, now_ms)

    return apply


def complete_stage(
    stage: str, *, checkpoint: Mapping[str, Any] | None, progress: float | None
) -> Change:
    name = validate_stage(stage)
    data = None if checkpoint is None else validate_json_object("checkpoint", checkpoint)
    value = None if progress is None else validate_progress(progress)

    def apply(job: Job, now_ms: int) -> Job:
        _require_processing(job, "complete a stage")
        stages = job.stages_completed
        return _touched(
            job,
            now_ms,
            stages_completed=stages if name in stages else (*stages, name),
            current_stage=None,
            checkpoints=_with_checkpoint(job.checkpoints, name, data),
            progress=job.progress if value is None else value,
        )

    return apply


def save_progress(
    progress: float, *, stage: str | None, checkpoint: Mapping[str, Any] | None
) -> Change:
    value = validate_progress(progress)
    name = None if stage is None else validate_stage(stage)
    data = None if checkpoint is None else validate_json_object("checkpoint", checkpoint)

    def apply(job: Job, now_ms: int) -> Job:
        _require_processing(job, "save progress")
        current = name or job.current_stage
        if data is not None and current is None:
            raise errors.MissingParameter("a checkpoint belongs to a stage: pass stage=")
        return _touched(
            job,
            now_ms,
            progress=value,
            current_stage=current,
            checkpoints=job.checkpoints
            if current is None
            else _with_checkpoint(job.checkpoints, current, data),
        )

    return apply


def succeed(result: Mapping[str, Any], *, output_files: Sequence[str]) -> Change:
    data = validate_json_object("result", result)
    files = validate_object_keys("output_files", output_files)

    def apply(job: Job, now_ms: int) -> Job:
        return _moved(job, JobStatus.SUCCEEDED, now_ms, result=data, output_files=files)

    return apply


def fail(error: str, *, to: JobStatus) -> Change:
    text = validate_error(error)
    target = validate_status(to)
    if target not in (JobStatus.FAILED, JobStatus.DEAD_LETTERED):
        raise errors.InvalidParameterValue(f"a job fails into failed or dead_lettered, not {to}")

    def apply(job: Job, now_ms: int) -> Job:
        return _moved(job, target, now_ms, error=text)

    return apply


def item_size_bytes(job: Job) -> int:
    """The job's size as one JSON item: what the 400 KB limit applies to on every backend."""
    item = {
        "key": str(job.key),
        "status": job.status.value,
        "times": [job.created_at_ms, job.updated_at_ms, job.expires_at_ms],
        "counters": [job.version, job.attempts, job.progress],
        "stages_completed": job.stages_completed,
        "current_stage": job.current_stage,
        "checkpoints": list(job.checkpoints.items()),
        "input_files": job.input_files,
        "output_files": job.output_files,
        "result": job.result,
        "error": job.error,
        "attributes": job.attributes,
    }
    return len(encode_json(item).encode())


def check_item_size(job: Job) -> None:
    size_bytes = item_size_bytes(job)
    if size_bytes > MAX_ITEM_BYTES:
        raise errors.JobTooLarge(
            f"job {job.key} would be {size_bytes} bytes; a job item holds at most "
            f"{MAX_ITEM_BYTES} (keep large data in the blob store, not in checkpoints)"
        )


# -- cursors ----------------------------------------------------------------------------


def cursor_scope(query: str, params: Mapping[str, object]) -> str:
    """What a cursor is bound to: the query and its filters, not the page size."""
    return encode_json([query, sorted(params.items())])


def encode_cursor(secret: bytes, scope: str, job: Job) -> str:
    """An opaque, signed position after ``job`` in the listing ``scope`` names."""
    payload = encode_json(
        [_CURSOR_VERSION, _digest(scope), job.created_at_ms, str(job.key)]
    ).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def decode_cursor(secret: bytes, scope: str, cursor: object) -> tuple[int, str]:
    """``(created_at_ms, key)`` of the last job of the previous page. A cursor this store
    did not sign, or signed for another query, raises ``InvalidParameterValue``."""
    if not isinstance(cursor, str) or not _CURSOR.fullmatch(cursor):
        raise _bad_cursor()
    payload_text, mac_text = cursor.split(".")
    payload, mac = _unb64(payload_text), _unb64(mac_text)
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise _bad_cursor()
    version, digest, created_at_ms, key = json.loads(payload)
    if version != _CURSOR_VERSION or digest != _digest(scope):
        raise errors.InvalidParameterValue("this cursor belongs to another listing")
    return int(created_at_ms), str(key)


def page(jobs: Sequence[Job], *, limit: int, secret: bytes, scope: str) -> JobPage:
    """A page from up to ``limit + 1`` jobs: the extra one only says that more follow."""
    shown = tuple(jobs[:limit])
    more = len(jobs) > limit
    return JobPage(
        jobs=shown, next_cursor=encode_cursor(secret, scope, shown[-1]) if more else None
    )


# -- helpers ----------------------------------------------------------------------------


def _moved(job: Job, to: JobStatus, now_ms: int, **changes: Any) -> Job:
    _check_allowed(job.status, to)
    if to is JobStatus.SUCCEEDED:
        changes.update(progress=1.0, current_stage=None)
    if to is JobStatus.PROCESSING:
        changes.update(attempts=job.attempts + 1)
    return _touched(job, now_ms, status=to, **changes)


def _touched(job: Job, now_ms: int, **changes: Any) -> Job:
    updated = replace(job, version=job.version + 1, updated_at_ms=now_ms, **changes)
    check_item_size(updated)
    return updated


def _check_allowed(current: JobStatus, to: JobStatus) -> None:
    if to in TRANSITIONS[current]:
        return
    why = f"{current} is final" if current.is_terminal else "that is not an allowed transition"
    raise errors.InvalidJobTransition(f"a job cannot go from {current} to {to}: {why}")


def _require_processing(job: Job, action: str) -> None:
    if job.status is not JobStatus.PROCESSING:
        raise errors.ConditionalCheckFailed(
            f"job {job.key} is {job.status}; only a processing job can {action}"
        )


def _with_checkpoint(
    checkpoints: Mapping[str, Mapping[str, Any]], stage: str, data: dict[str, Any] | None
) -> dict[str, Mapping[str, Any]]:
    """``checkpoints`` with ``stage``'s moved to the end (the newest), when there is one."""
    updated = dict(checkpoints)
    if data is not None:
        updated.pop(stage, None)
        updated[stage] = data
    return updated


def _digest(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:32]


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        raise _bad_cursor() from None
    if _b64(raw) != text:  # one position, one spelling: no alternative encodings
        raise _bad_cursor()
    return raw


def _bad_cursor() -> errors.InvalidParameterValue:
    return errors.InvalidParameterValue("not a cursor this job store issued")
