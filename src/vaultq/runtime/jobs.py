"""Jobs seen from the runtime: a message names its job; handlers and the worker update it.

A message belongs to a job when it carries the ``vaultq-job`` message attribute
(``tenant#client#job``). The worker then keeps the job's status true to what happens to the
message — ``processing`` while a handler runs, ``queued`` while a retry waits,
``succeeded`` when the handler returned, ``dead_lettered`` with the error when the message
reaches its dead-letter queue — and never runs a message whose job was cancelled or has
already finished. Handlers reach their job with ``job_of(record, context)``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from vaultq import errors
from vaultq.jobs.protocol import JobKey, JobStatus

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from vaultq.jobs.protocol import Checkpoint, Job, JobStore
    from vaultq.queues.protocol import Failure, ReceivedMessage

JOB_ATTRIBUTE = "vaultq-job"
#: The tenant vaultq's API stamps on every message it sends.
TENANT_ATTRIBUTE = "vaultq-tenant"
#: Message attribute names that only vaultq sets: its API refuses them from callers.
RESERVED_ATTRIBUTE_PREFIXES = ("vaultq-", "vaultq.")
log = logging.getLogger(__name__)
_FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class JobHandle:
    """One job, as its handler sees it."""

    def __init__(self, store: JobStore, key: JobKey) -> None:
        self.store = store
        self.key = key

    def get(self) -> Job | None:
        return self.store.get(self.key)

    def last_checkpoint(self) -> Checkpoint | None:
        """Where a retried job resumes: the checkpoint its last attempt saved."""
        return self.store.last_checkpoint(self.key)

    def complete_stage(
        self,
        stage: str,
        *,
        checkpoint: Mapping[str, Any] | None = None,
        progress: float | None = None,
    ) -> Job:
        return self.store.complete_stage(self.key, stage, checkpoint=checkpoint, progress=progress)

    def save_progress(
        self,
        progress: float,
        *,
        stage: str | None = None,
        checkpoint: Mapping[str, Any] | None = None,
    ) -> Job:
        return self.store.save_progress(self.key, progress, stage=stage, checkpoint=checkpoint)

    def succeed(self, result: Mapping[str, Any], *, output_files: Sequence[str] = ()) -> Job:
        return self.store.set_result(self.key, result, output_files=output_files)


def job_of(record: Mapping[str, Any], context: Any) -> JobHandle:
    """The job of a Lambda SQS record, for a handler run by a vaultq worker."""
    store = getattr(context, "jobs", None)
    if store is None:
        raise errors.InvalidParameterValue("this worker has no job table")
    key = job_key_of_record(record)
    if key is None:
        raise errors.InvalidParameterValue(f"message {record.get('messageId')} names no job")
    return JobHandle(store, key)


def job_key_of_record(record: Mapping[str, Any]) -> JobKey | None:
    attributes = record.get("messageAttributes", {})
    job = attributes.get(JOB_ATTRIBUTE)
    if job is None:
        return None
    tenant = attributes.get(TENANT_ATTRIBUTE)
    return _same_tenant(
        JobKey.parse(job.get("stringValue")), None if tenant is None else tenant.get("stringValue")
    )


def job_key_of_message(message: ReceivedMessage) -> JobKey | None:
    job = message.attributes.get(JOB_ATTRIBUTE)
    if job is None:
        return None
    tenant = message.attributes.get(TENANT_ATTRIBUTE)
    return _same_tenant(JobKey.parse(str(job.value)), None if tenant is None else str(tenant.value))


def _same_tenant(key: JobKey, tenant: str | None) -> JobKey:
    """A message stamped with one tenant never names another tenant's job (defence in depth:
    the API already refuses reserved attributes from callers)."""
    if tenant is not None and tenant != key.tenant_id:
        raise errors.InvalidParameterValue("the message names another tenant's job")
    return key


class JobTracker:
    """Keeps each job's status in step with its message, from the worker's side."""

    def __init__(self, store: JobStore | None) -> None:
        self._store = store

    def begin(
        self, batch: Iterable[ReceivedMessage]
    ) -> tuple[list[ReceivedMessage], list[ReceivedMessage]]:
        """Split a batch into messages to run and messages whose job is gone or finished
        (those are done: the caller deletes them). Runnable jobs become ``processing``."""
        run: list[ReceivedMessage] = []
        done: list[ReceivedMessage] = []
        for message in batch:
            key = self._key(message)
            if key is None:
                run.append(message)
                continue
            job = self._store.get(key) if self._store else None
            if job is None or job.status in _FINISHED:
                done.append(message)
                continue
            if job.status is JobStatus.DEAD_LETTERED:
                # Only a redrive brings a dead letter back: the job is queued again.
                self._move(key, JobStatus.QUEUED, expected=JobStatus.DEAD_LETTERED)
            if job.status in (JobStatus.QUEUED, JobStatus.DEAD_LETTERED):
                self._move(key, JobStatus.PROCESSING, expected=JobStatus.QUEUED)
            run.append(message)
        return run, done

    def succeeded(self, messages: Iterable[ReceivedMessage]) -> None:
        for key in self._keys(messages):
            self._move(key, JobStatus.SUCCEEDED, expected=JobStatus.PROCESSING)

    def retrying(self, messages: Iterable[ReceivedMessage]) -> None:
        for key in self._keys(messages):
            self._move(key, JobStatus.QUEUED, expected=JobStatus.PROCESSING)

    def dead_lettered(self, message: ReceivedMessage, failure: Failure) -> None:
        key = self._key(message)
        if key is None or self._store is None:
            return
        try:
            self._store.fail(key, _with_reason(failure), to=JobStatus.DEAD_LETTERED)
        except (errors.JobNotFound, errors.InvalidJobTransition) as exc:
            log.info("job not dead-lettered: %s", exc.code)

    def _move(self, key: JobKey, to: JobStatus, *, expected: JobStatus) -> None:
        if self._store is None:
            return
        try:
            self._store.transition(key, to=to, expected=expected)
        except (errors.ConditionalCheckFailed, errors.JobNotFound) as exc:
            # The handler (or a cancel) moved the job itself; its word stands.
            log.debug("job %s left as it is: %s", key.job_id, exc.code)

    def _keys(self, messages: Iterable[ReceivedMessage]) -> list[JobKey]:
        return [key for m in messages if (key := self._key(m)) is not None]

    def _key(self, message: ReceivedMessage) -> JobKey | None:
        if self._store is None:
            return None
        try:
            return job_key_of_message(message)
        except errors.InvalidParameterValue:
            return None  # not a job key vaultq wrote: the message runs as a plain one


def _with_reason(failure: Failure) -> str:
    """The job's error starts with its reason code once (clients read the code from it)."""
    if failure.error.startswith(f"{failure.reason}:"):
        return failure.error
    return f"{failure.reason}: {failure.error}"
