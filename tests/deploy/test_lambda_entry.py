"""AWS invokes a handler through ``vaultq.deploy.lambda_handler`` as a vaultq worker would:
the canonical Lambda events of tests/events go in, Lambda's response shapes come out."""

from __future__ import annotations

import copy
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.deploy import apps
from tests.runtime.apps import behaviours, jobs_app, powertools_app, uploads_app
from vaultq import errors
from vaultq.deploy import InvocationFailed, LambdaEntry, lambda_entry, lambda_handler
from vaultq.deploy.lambda_entry import configured_job_store
from vaultq.events import LambdaContext
from vaultq.jobs.dynamodb import DynamoJobs
from vaultq.jobs.protocol import JobKey, JobStatus
from vaultq.jobs.sqlite import SqliteJobs
from vaultq.runtime import JOB_ATTRIBUTE

if TYPE_CHECKING:
    from collections.abc import Iterator

EVENTS = Path(__file__).resolve().parents[1] / "events"
FIRST, SECOND = "059f36b4-87a3-44ab-83d2-661975830a7d", "2e1424d4-f796-459a-8184-9c92662be6da"


def canonical(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def aws_context(function_name: str = "fn") -> LambdaContext:
    """What AWS passes as the context: it knows nothing of vaultq's job table."""
    return LambdaContext(
        function_name=function_name,
        memory_limit_in_mb=128,
        deadline_monotonic=time.monotonic() + 30,
    )


def with_bodies(event: dict[str, Any], *bodies: dict[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(event)
    for record, body in zip(event["Records"], bodies, strict=True):
        record["body"] = json.dumps(body)
    return event


@pytest.fixture(autouse=True)
def _no_job_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("VAULTQ_URL", raising=False)
    apps.SEEN.clear()
    yield
    apps.SEEN.clear()


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.db"
    monkeypatch.setenv("VAULTQ_TEST_EFFECTS", str(path))
    with sqlite3.connect(path) as db:
        db.execute(behaviours.EFFECTS_SCHEMA)
    return path


def items(effects: Path, handler: str) -> list[str]:
    with sqlite3.connect(effects) as db:
        rows = db.execute("SELECT item FROM effects WHERE handler = ? ORDER BY rowid", (handler,))
        return [item for (item,) in rows]


# -- the entry point named by the template ----------------------------------------------------


def test_lambda_handler_runs_the_handler_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, effects: Path
) -> None:
    monkeypatch.setenv("VAULTQ_APP", "tests.runtime.apps.behaviours:app")
    monkeypatch.setenv("VAULTQ_HANDLER", "work")
    event = with_bodies(
        canonical("sqs_batch.json"),
        {"id": "first", "do": "ok"},
        {"id": "second", "do": "report-fail"},
    )

    response = lambda_handler(event, aws_context())

    assert response == {"batchItemFailures": [{"itemIdentifier": SECOND}]}
    assert items(effects, "work") == ["first"]


def test_lambda_handler_without_its_environment_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VAULTQ_APP", raising=False)
    monkeypatch.setenv("VAULTQ_HANDLER", "work")

    with pytest.raises(errors.InvalidSettings, match="VAULTQ_APP"):
        lambda_handler(canonical("sqs_batch.json"), aws_context())


@pytest.fixture
def fresh_environment() -> Iterator[None]:
    """Entries are built once per execution environment (process): start and end afresh."""
    lambda_entry._entry.cache_clear()
    yield
    lambda_entry._entry.cache_clear()


@pytest.mark.usefixtures("fresh_environment")
def test_a_handler_s_init_runs_once_per_environment_and_again_after_it_failed(
    monkeypatch: pytest.MonkeyPatch, effects: Path
) -> None:
    monkeypatch.setenv("VAULTQ_APP", "tests.runtime.apps.behaviours:app")
    event = with_bodies(canonical("sqs_batch.json"), {"id": "a"}, {"id": "b"})
    monkeypatch.setenv("VAULTQ_HANDLER", "warm")

    lambda_handler(event, aws_context())
    lambda_handler(event, aws_context())

    assert len(items(effects, "warm-init")) == 1
    assert len(items(effects, "warm-run")) == 2
    monkeypatch.setenv("VAULTQ_HANDLER", "cold")
    for _ in range(2):  # a failed init is not kept: the next event tries it again
        with pytest.raises(InvocationFailed, match="init failed: ValueError: the model") as failed:
            lambda_handler(event, aws_context())
        assert "abc123" not in str(failed.value)
    assert items(effects, "cold") == []


def test_on_lambda_the_init_runs_when_the_module_is_imported(effects: Path) -> None:
    # Lambda's init phase imports the handler's module before any event arrives.
    environment = {
        **os.environ,
        "AWS_LAMBDA_FUNCTION_NAME": "behaviours-warm",
        "VAULTQ_APP": "tests.runtime.apps.behaviours:app",
        "VAULTQ_HANDLER": "warm",
    }

    subprocess.run(
        [sys.executable, "-c", "import vaultq.deploy.lambda_entry"],
        env=environment,
        check=True,
        timeout=60,
    )

    assert len(items(effects, "warm-init")) == 1
    assert items(effects, "warm-run") == []


def test_an_unknown_handler_is_refused_when_the_environment_starts() -> None:
    with pytest.raises(errors.InvalidParameterValue, match="no handler 'nope'"):
        LambdaEntry(behaviours.app, "nope")


# -- responses, as the worker judges them ---------------------------------------------------


def test_a_successful_batch_reports_no_failures(effects: Path) -> None:
    entry = LambdaEntry(behaviours.app, "work")

    event = with_bodies(
        canonical("sqs_batch.json"), {"id": "first", "do": "ok"}, {"id": "second", "do": "ok"}
    )

    response = entry(event, aws_context())

    assert response == {"batchItemFailures": []}
    assert items(effects, "work") == ["first", "second"]


def test_a_raising_handler_fails_the_whole_batch_on_lambda_too(effects: Path) -> None:
    entry = LambdaEntry(behaviours.app, "work")

    with pytest.raises(InvocationFailed, match="ValueError: asked to fail") as raised:
        entry(canonical("sqs_batch.json"), aws_context())

    # What Lambda logs is redacted and carries no chained traceback of the handler's error.
    assert "abc123" not in str(raised.value)
    assert raised.value.__suppress_context__


def test_a_non_retryable_error_fails_only_the_records_it_names(effects: Path) -> None:
    entry = LambdaEntry(behaviours.app, "work")
    event = with_bodies(
        canonical("sqs_batch.json"), {"id": "first", "do": "give-up"}, {"id": "second", "do": "ok"}
    )

    response = entry(event, aws_context())

    # Lambda cannot dead-letter at once: the record fails and is retried up to maxReceiveCount.
    assert response == {"batchItemFailures": [{"itemIdentifier": FIRST}]}


def test_a_response_naming_a_record_outside_the_batch_raises(effects: Path) -> None:
    entry = LambdaEntry(behaviours.app, "work")
    event = with_bodies(
        canonical("sqs_batch.json"), {"id": "first", "do": "bad-id"}, {"id": "second", "do": "ok"}
    )

    with pytest.raises(errors.InvalidParameterValue, match="malformed response"):
        entry(event, aws_context())


def test_without_report_batch_item_failures_the_response_passes_through() -> None:
    entry = LambdaEntry(apps.app, "plain")

    response = entry(canonical("sqs_batch.json"), aws_context())

    assert 0 < response["remaining_ms"] <= 30_000  # AWS's context reached the handler
    assert apps.SEEN == [FIRST, SECOND]


def test_a_fifo_failure_also_fails_the_later_messages_of_its_group() -> None:
    entry = LambdaEntry(apps.app, "ordered")

    response = entry(canonical("sqs_fifo_batch.json"), aws_context())

    assert response == {
        "batchItemFailures": [
            {"itemIdentifier": "11111111-0000-4000-8000-000000000002"},
            {"itemIdentifier": "11111111-0000-4000-8000-000000000003"},
        ]
    }


@pytest.mark.parametrize(
    ("handler", "event"),
    [("lambda_handler", "sqs_batch.json"), ("fifo_handler", "sqs_fifo_batch.json")],
)
def test_a_powertools_handler_answers_as_when_lambda_calls_it_directly(
    handler: str, event: str, effects: Path
) -> None:
    direct = getattr(powertools_app, handler)(canonical(event), aws_context())

    through_vaultq = LambdaEntry(powertools_app.app, handler)(canonical(event), aws_context())

    assert through_vaultq == direct
    assert direct["batchItemFailures"]


def test_an_s3_put_reaches_its_handler_through_the_queue(effects: Path) -> None:
    sqs_record = canonical("sqs_batch.json")["Records"][0]
    event = {"Records": [sqs_record | {"body": (EVENTS / "s3_put.json").read_text()}]}

    response = LambdaEntry(uploads_app.app, "on_upload")(event, aws_context())

    assert response is None
    assert items(effects, "uploads") == ["ObjectCreated:Put tenant-1/inbox/hello world+1.bin"]


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"Records": []},
        {"Records": [{"eventSource": "aws:s3"}]},
        {"Records": [{"eventSource": "aws:sqs", "messageId": "m"}]},
    ],
)
def test_a_malformed_event_raises(event: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        LambdaEntry(apps.app, "plain")(event, aws_context())
    assert apps.SEEN == []


# -- the job table, from VAULTQ_URL ---------------------------------------------------------


@pytest.fixture
def job_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqliteJobs]:
    database = tmp_path / "vaultq.db"
    monkeypatch.setenv("VAULTQ_URL", f"sqlite:///{database}")
    store = SqliteJobs(database)
    yield store
    store.close()


def job_event(key: JobKey, *, receive_count: int = 1, **body: Any) -> dict[str, Any]:
    event = canonical("sqs_batch.json")
    [record, _] = event["Records"]
    record["body"] = json.dumps({"id": key.job_id, **body})
    record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    record["messageAttributes"][JOB_ATTRIBUTE] = {
        "stringValue": str(key),
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    return {"Records": [record]}


def pipeline_entry() -> LambdaEntry:
    return LambdaEntry(jobs_app.app, "pipeline", job_store_factory=configured_job_store)


def test_a_handler_reaches_its_job_through_the_deployment_url(
    job_table: SqliteJobs, effects: Path
) -> None:
    key = JobKey(tenant_id="acme", client_id="c1", job_id="j1")
    job_table.create(key)

    pipeline_entry()(job_event(key), aws_context())

    job = job_table.get(key)
    assert job is not None
    assert job.status is JobStatus.SUCCEEDED
    assert job.stages_completed == tuple(jobs_app.STAGES)


def test_a_failed_last_receive_dead_letters_the_job(job_table: SqliteJobs, effects: Path) -> None:
    key = JobKey(tenant_id="acme", client_id="c1", job_id="j2")
    job_table.create(key)
    last = jobs_app.app.queues["pipeline"].dead_letter.max_receive_count  # type: ignore[union-attr]

    with pytest.raises(InvocationFailed, match="stage fetch broke"):
        pipeline_entry()(job_event(key, receive_count=last, fail_after="fetch"), aws_context())

    job = job_table.get(key)
    assert job is not None
    assert job.status is JobStatus.DEAD_LETTERED
    assert "stage fetch broke" in (job.error or "")


def test_a_failed_earlier_receive_puts_the_job_back_in_the_queue(
    job_table: SqliteJobs, effects: Path
) -> None:
    key = JobKey(tenant_id="acme", client_id="c1", job_id="j3")
    job_table.create(key)

    with pytest.raises(InvocationFailed):
        pipeline_entry()(job_event(key, fail_after="fetch"), aws_context())

    job = job_table.get(key)
    assert job is not None
    assert (job.status, job.stages_completed) == (JobStatus.QUEUED, ("fetch",))


def test_a_cancelled_job_is_acknowledged_without_running(
    job_table: SqliteJobs, effects: Path
) -> None:
    key = JobKey(tenant_id="acme", client_id="c1", job_id="j4")
    job_table.create(key)
    job_table.transition(key, to=JobStatus.CANCELLED, expected=JobStatus.QUEUED)

    response = pipeline_entry()(job_event(key), aws_context())

    assert response is None
    assert items(effects, "fetch") == []


def test_without_a_deployment_url_job_of_says_there_is_no_job_table(effects: Path) -> None:
    key = JobKey(tenant_id="acme", client_id="c1", job_id="j5")

    with pytest.raises(InvocationFailed, match="no job table"):
        pipeline_entry()(job_event(key), aws_context())


@pytest.fixture
def dynamodb_jobs(aws_endpoint: str) -> Iterator[DynamoJobs]:
    store = DynamoJobs(region="us-east-1", endpoint_url=aws_endpoint, table=f"jobs-{uuid.uuid4()}")
    store.create_table()
    yield store
    store.close()


def test_on_dynamodb_the_job_follows_its_message(dynamodb_jobs: DynamoJobs, effects: Path) -> None:
    key = JobKey(tenant_id="acme", client_id="c1", job_id="j6")
    dynamodb_jobs.create(key)
    entry = LambdaEntry(jobs_app.app, "pipeline", job_store_factory=lambda: dynamodb_jobs)

    entry(job_event(key), aws_context())

    job = dynamodb_jobs.get(key)
    assert job is not None
    assert (job.status, job.stages_completed) == (JobStatus.SUCCEEDED, tuple(jobs_app.STAGES))
