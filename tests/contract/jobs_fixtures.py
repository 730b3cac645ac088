"""Fixtures of the job-store contract suite: one ``jobs`` fixture per backend.

A test module imports the ``*_fixture`` functions; each registers under the name without the
suffix (``jobs``, ``open_jobs``), so that a test's ``jobs`` argument shadows no import.
``open_jobs()`` opens another store on the same storage, as a second process or a restart
would; ``open_jobs(clock=...)`` gives that store its own clock.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Protocol

import pytest

from vaultq.jobs import JobKey, JobStatus, JobStore
from vaultq.jobs.sqlite import SqliteJobs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from .conftest import Clock

JOB_BACKENDS = ["sqlite"]


class OpenJobs(Protocol):
    def __call__(self, *, clock: Callable[[], float] | None = None) -> JobStore: ...


@pytest.fixture(name="sqlite_open_jobs")
def sqlite_open_jobs_fixture(tmp_path: Path, clock: Clock) -> Iterator[OpenJobs]:
    test_clock = clock
    opened: list[JobStore] = []

    def open_jobs(*, clock: Callable[[], float] | None = None) -> JobStore:
        # The queues' sqlite fixture uses the same file: the two share one database.
        store = SqliteJobs(tmp_path / "vaultq.db", clock=clock or test_clock)
        opened.append(store)
        return store

    yield open_jobs
    for store in opened:
        store.close()


@pytest.fixture(name="open_jobs", params=JOB_BACKENDS)
def open_jobs_fixture(request: pytest.FixtureRequest) -> OpenJobs:
    factory: OpenJobs = request.getfixturevalue(f"{request.param}_open_jobs")
    return factory


@pytest.fixture(name="jobs")
def jobs_fixture(open_jobs: OpenJobs) -> JobStore:
    return open_jobs()


def new_key(tenant_id: str = "tenant-a", client_id: str = "client-1") -> JobKey:
    return JobKey(tenant_id=tenant_id, client_id=client_id, job_id=uuid.uuid4().hex)


def job_in(jobs: JobStore, status: JobStatus, *, key: JobKey | None = None) -> JobKey:
    """Create a job and walk it to ``status`` by allowed transitions."""
    key = key or new_key()
    jobs.create(key)
    if status is JobStatus.QUEUED:
        return key
    if status is JobStatus.CANCELLED:
        jobs.transition(key, to=JobStatus.CANCELLED)
        return key
    jobs.transition(key, to=JobStatus.PROCESSING)
    if status is not JobStatus.PROCESSING:
        jobs.transition(key, to=status)
    return key
