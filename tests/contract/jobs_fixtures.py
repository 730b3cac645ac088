"""Fixtures of the job-store contract suite: one ``jobs`` fixture per backend.

A test module imports the ``*_fixture`` functions; each registers under the name without the
suffix (``jobs``, ``open_jobs``), so that a test's ``jobs`` argument shadows no import.
``open_jobs()`` opens another store on the same storage, as a second process or a restart
would; ``open_jobs(clock=...)`` gives that store its own clock.
"""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Protocol

import boto3
import pytest

from vaultq.jobs import JobKey, JobStatus, JobStore
from vaultq.jobs.dynamodb import DynamoJobs
from vaultq.jobs.sqlite import SqliteJobs

from ..aws_server import REGION

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from typing import Any

    from .conftest import Clock

JOB_BACKENDS = ["sqlite", "dynamodb"]


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


class OneRequestAtATime:
    """A boto3 client that sends one request at a time (per test process).

    moto deviates from DynamoDB here: its server checks a ConditionExpression and then
    writes without a lock, so two conditional puts arriving at the same instant can both
    pass (measured: 1 race in ~300 let both claims win), whereas DynamoDB documents
    conditional writes as atomic. Serialising requests removes only moto's race: the two
    stores of a race still interleave read, condition and write request by request, so a
    store that wrote without its condition would still let both claims win.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**params: Any) -> Any:
            with self._lock:
                return method(**params)

        return call


@pytest.fixture(name="dynamodb_client", scope="session")
def dynamodb_client_fixture(aws_endpoint: str) -> Iterator[Any]:
    """One boto3 client per test process: clients are thread-safe, and making one takes
    ~0.3 s here against ~30 ms for a test's table."""
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=aws_endpoint)
    yield OneRequestAtATime(client)
    client.close()


@pytest.fixture(name="dynamodb_table")
def dynamodb_table_fixture(dynamodb_client: Any) -> Iterator[str]:
    """A fresh table per test: ``count_by_status`` and ``sweep_expired`` see a whole table."""
    name = f"vaultq-jobs-{uuid.uuid4().hex[:12]}"
    DynamoJobs(region=REGION, table=name, client=dynamodb_client).create_table()
    yield name
    dynamodb_client.delete_table(TableName=name)


@pytest.fixture(name="dynamodb_open_jobs")
def dynamodb_open_jobs_fixture(
    dynamodb_client: Any, dynamodb_table: str, clock: Clock
) -> Iterator[OpenJobs]:
    test_clock = clock
    opened: list[JobStore] = []

    def open_jobs(*, clock: Callable[[], float] | None = None) -> JobStore:
        store = DynamoJobs(
            region=REGION, table=dynamodb_table, client=dynamodb_client, clock=clock or test_clock
        )
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
