"""The DynamoDB job table beyond the shared contract: the table the seed system asks for
(key, three tenant-scoped GSIs, TTL), vaultq's own expiry, exact payloads, stale index
entries, and DynamoDB's errors as vaultq's. Runs against moto's HTTP server; every place
where moto differs from documented DynamoDB says so."""

from __future__ import annotations

import math
import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from vaultq import errors
from vaultq.jobs import JobKey, JobStatus, JobStore
from vaultq.jobs.dynamodb import DynamoJobs, table_spec

from ..aws_server import REGION, _free_port
from .jobs_fixtures import (  # noqa: F401 (fixtures register by name)
    dynamodb_client_fixture,
    dynamodb_open_jobs_fixture,
    dynamodb_table_fixture,
    job_in,
    new_key,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .conftest import Clock
    from .jobs_fixtures import OpenJobs

KB = 1024


@pytest.fixture(name="jobs")
def jobs_fixture(dynamodb_open_jobs: OpenJobs) -> JobStore:
    return dynamodb_open_jobs()


def raw_item(client: Any, table: str, key: JobKey) -> dict[str, Any] | None:
    item: dict[str, Any] | None = client.get_item(
        TableName=table, Key={"pk": {"S": str(key)}}, ConsistentRead=True
    ).get("Item")
    return item


# -- the table ---------------------------------------------------------------------------


def test_table_is_keyed_by_pk_with_three_tenant_scoped_indexes(
    dynamodb_client: Any, dynamodb_table: str
) -> None:
    table = dynamodb_client.describe_table(TableName=dynamodb_table)["Table"]

    indexes = {
        index["IndexName"]: (
            [(key["AttributeName"], key["KeyType"]) for key in index["KeySchema"]],
            index["Projection"],
        )
        for index in table["GlobalSecondaryIndexes"]
    }
    projection = {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["expires_at_ms"]}
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert indexes == {
        "by-status": ([("tenant_status", "HASH"), ("created_key", "RANGE")], projection),
        "by-client": ([("tenant_client", "HASH"), ("created_key", "RANGE")], projection),
        "by-day": ([("tenant_day", "HASH"), ("created_key", "RANGE")], projection),
    }
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TableStatus"] == "ACTIVE"


def test_ttl_is_enabled_on_expires_at(dynamodb_client: Any, dynamodb_table: str) -> None:
    """moto reports ENABLED at once; DynamoDB reports ENABLING for up to an hour first."""
    ttl = dynamodb_client.describe_time_to_live(TableName=dynamodb_table)["TimeToLiveDescription"]

    assert ttl["AttributeName"] == "expires_at"
    assert ttl["TimeToLiveStatus"] in {"ENABLING", "ENABLED"}


def test_create_table_again_is_harmless_and_keeps_the_jobs(
    jobs: JobStore, dynamodb_client: Any, dynamodb_table: str
) -> None:
    key = jobs.create(new_key()).key

    DynamoJobs(region=REGION, table=dynamodb_table, client=dynamodb_client).create_table()

    assert jobs.get(key) is not None


def test_create_table_refuses_an_existing_table_without_the_indexes(
    dynamodb_client: Any,
) -> None:
    name = f"vaultq-bare-{uuid.uuid4().hex[:12]}"
    dynamodb_client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )
    try:
        with pytest.raises(errors.InvalidSettings, match="by-client"):
            DynamoJobs(region=REGION, table=name, client=dynamodb_client).create_table()
    finally:
        dynamodb_client.delete_table(TableName=name)


def test_create_table_refuses_a_table_that_expires_items_by_another_attribute(
    dynamodb_client: Any,
) -> None:
    name = f"vaultq-ttl-{uuid.uuid4().hex[:12]}"
    dynamodb_client.create_table(**table_spec(name))
    dynamodb_client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
    )
    try:
        with pytest.raises(errors.InvalidSettings, match="ttl"):
            DynamoJobs(region=REGION, table=name, client=dynamodb_client).create_table()
    finally:
        dynamodb_client.delete_table(TableName=name)


@pytest.mark.parametrize("table", ["ab", "a/b", "x" * 256, ""], ids=repr)
def test_a_table_name_dynamodb_refuses_is_refused_on_open(table: str) -> None:
    with pytest.raises(errors.InvalidSettings):
        DynamoJobs(region=REGION, table=table, client=object())


def test_a_missing_table_is_reported_as_backend_unavailable(dynamodb_client: Any) -> None:
    store = DynamoJobs(region=REGION, table="vaultq-never-created", client=dynamodb_client)

    with pytest.raises(errors.BackendUnavailable, match="create_table"):
        store.get(new_key())


def test_an_unreachable_endpoint_is_reported_as_backend_unavailable() -> None:
    store = DynamoJobs(region=REGION, endpoint_url=f"http://127.0.0.1:{_free_port()}")
    try:
        with pytest.raises(errors.BackendUnavailable):
            store.create(new_key())
    finally:
        store.close()


# -- items and expiry --------------------------------------------------------------------


def test_item_holds_the_index_keys_and_a_ttl_never_before_the_jobs_expiry(
    jobs: JobStore, dynamodb_client: Any, dynamodb_table: str
) -> None:
    job = jobs.create(JobKey(tenant_id="acme", client_id="web", job_id="j1"), ttl_seconds=60)

    item = raw_item(dynamodb_client, dynamodb_table, job.key)

    assert item is not None
    assert item["pk"] == {"S": "acme#web#j1"}
    assert item["tenant_status"] == {"S": "acme#queued"}
    assert item["tenant_client"] == {"S": "acme#web"}
    assert item["tenant_day"] == {"S": f"acme#{job.day}"}
    assert item["created_key"] == {"S": f"{job.created_at_ms:020d}#acme#web#j1"}
    assert item["expires_at"] == {"N": str(math.ceil(job.expires_at_ms / 1000))}


def test_an_expired_job_still_in_the_table_is_gone_for_vaultq(
    jobs: JobStore, dynamodb_client: Any, dynamodb_table: str, clock: Clock
) -> None:
    """moto never deletes items by TTL, and DynamoDB does so only eventually (typically
    within days): vaultq's own expiry check is what makes the job gone."""
    key = jobs.create(new_key(), ttl_seconds=60).key
    clock.advance(61)

    assert raw_item(dynamodb_client, dynamodb_table, key) is not None
    assert jobs.get(key) is None
    assert jobs.list_by_status("tenant-a", JobStatus.QUEUED).jobs == ()
    assert jobs.sweep_expired() == 1
    assert raw_item(dynamodb_client, dynamodb_table, key) is None


def test_floats_and_big_integers_read_back_exactly(jobs: JobStore) -> None:
    """DynamoDB numbers hold 38 digits from 1e-130 up: payloads and progress are stored
    as text so that every JSON value and every float comes back as it was."""
    key = job_in(jobs, JobStatus.PROCESSING)
    result = {"tenth": 0.1, "tiny": 5e-324, "big": 2**80, "max": 1.7976931348623157e308}

    in_progress = jobs.save_progress(key, 5e-324)
    assert jobs.get(key) == in_progress
    assert in_progress.progress == 5e-324

    done = jobs.set_result(key, result)
    assert jobs.get(key) == done
    assert done.result == result


def test_a_job_over_dynamodbs_own_item_limit_is_too_large(jobs: JobStore) -> None:
    """vaultq measures a job as one JSON item (at most 409,600 bytes); DynamoDB counts
    attribute names and index keys too, so an item at the edge can pass vaultq's measure
    and still be over DynamoDB's limit. moto deviates: it refuses items over 405,000 bytes,
    below DynamoDB's documented 400 KB; this result is between the two."""
    key = job_in(jobs, JobStatus.PROCESSING)

    with pytest.raises(errors.JobTooLarge):
        jobs.set_result(key, {"blob": "x" * 406_000})

    job = jobs.get(key)
    assert job is not None
    assert job.status is JobStatus.PROCESSING


# -- concurrency -------------------------------------------------------------------------


def test_two_writers_of_different_stages_lose_neither(dynamodb_open_jobs: OpenJobs) -> None:
    """Each write is a read and a put conditional on the version read; the loser of a race
    reads again and re-applies its change instead of overwriting the winner's."""
    stores = [dynamodb_open_jobs(), dynamodb_open_jobs()]
    key = job_in(stores[0], JobStatus.PROCESSING)
    barrier = threading.Barrier(2)

    def write(worker: int) -> None:
        barrier.wait()
        for step in range(5):
            stores[worker].complete_stage(key, f"w{worker}-{step}")

    threads = [threading.Thread(target=write, args=(worker,)) for worker in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    job = stores[1].get(key)
    assert job is not None
    assert sorted(job.stages_completed) == sorted(f"w{w}-{s}" for w in (0, 1) for s in range(5))
    assert job.version == 2 + 10


# -- listings over an index that lags ----------------------------------------------------


class LaggingIndex:
    """A client whose GSI queries answer as they did before ``lag()``: DynamoDB's GSIs are
    eventually consistent (moto's are not, so the lag is staged here)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._answers: dict[str, Any] = {}
        self.lagging = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def query(self, **params: Any) -> Any:
        question = repr(sorted(params.items()))
        if not self.lagging:
            self._answers[question] = self._client.query(**params)
        return self._answers[question]


@pytest.fixture(name="lagging")
def lagging_fixture(
    dynamodb_client: Any, dynamodb_table: str
) -> Iterator[tuple[JobStore, LaggingIndex]]:
    client = LaggingIndex(dynamodb_client)
    # A clock that stands still, so that a query asked again is the same question.
    store = DynamoJobs(
        region=REGION, table=dynamodb_table, client=client, clock=lambda: 1_800_000_000.0
    )
    yield store, client
    store.close()


def test_a_listing_skips_a_job_its_index_still_shows_in_an_old_status(
    lagging: tuple[JobStore, LaggingIndex],
) -> None:
    jobs, index = lagging
    moved, kept = job_in(jobs, JobStatus.QUEUED), job_in(jobs, JobStatus.QUEUED)
    assert len(jobs.list_by_status("tenant-a", JobStatus.QUEUED).jobs) == 2

    index.lagging = True
    jobs.transition(moved, to=JobStatus.PROCESSING)
    page = jobs.list_by_status("tenant-a", JobStatus.QUEUED)

    assert [job.key for job in page.jobs] == [kept]


def test_a_listing_shows_each_job_as_it_is_now_not_as_the_index_saw_it(
    lagging: tuple[JobStore, LaggingIndex],
) -> None:
    jobs, index = lagging
    key = job_in(jobs, JobStatus.PROCESSING)
    jobs.list_by_client("tenant-a", "client-1")

    index.lagging = True
    saved = jobs.save_progress(key, 0.7, stage="render")
    [listed] = jobs.list_by_client("tenant-a", "client-1").jobs

    assert listed == saved


def test_a_cursor_from_another_table_is_refused(
    jobs: JobStore, dynamodb_client: Any, clock: Clock
) -> None:
    for _ in range(2):
        jobs.create(new_key())
    cursor = jobs.list_by_status("tenant-a", JobStatus.QUEUED, limit=1).next_cursor
    other = DynamoJobs(
        region=REGION, table=f"vaultq-other-{uuid.uuid4().hex[:12]}", client=dynamodb_client
    )
    other.create_table()
    try:
        with pytest.raises(errors.InvalidParameterValue):
            other.list_by_status("tenant-a", JobStatus.QUEUED, limit=1, cursor=cursor)
    finally:
        dynamodb_client.delete_table(TableName=other.table)
