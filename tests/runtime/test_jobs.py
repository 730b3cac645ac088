"""A message's job follows it: status, stages, checkpoints, resume, cancel, dead letters."""

from __future__ import annotations

import functools
import json
import threading
from typing import TYPE_CHECKING

import pytest

from tests.runtime.apps.jobs_app import app
from tests.runtime.conftest import Effects, wait_for
from vaultq.jobs import JobKey, JobStatus
from vaultq.jobs.sqlite import SqliteJobs
from vaultq.queues import MessageAttribute, OutgoingMessage
from vaultq.queues.sqlite import SqliteQueues
from vaultq.runtime import JOB_ATTRIBUTE
from vaultq.runtime.worker import Worker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

KEY = JobKey(tenant_id="acme", client_id="web", job_id="job-1")


@pytest.fixture
def env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[SqliteQueues, SqliteJobs, Effects, Callable[[], None]]]:
    monkeypatch.setenv("VAULTQ_TEST_EFFECTS", str(tmp_path / "effects.db"))
    db = tmp_path / "vaultq.db"
    queues = SqliteQueues(db)
    jobs = SqliteJobs(db)
    app.provision(queues)
    workers: list[tuple[Worker, threading.Thread]] = []

    def start() -> None:
        worker = Worker(
            app,
            app_path="tests.runtime.apps.jobs_app:app",
            queues=queues,
            job_store_factory=functools.partial(SqliteJobs, db),
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        workers.append((worker, thread))

    yield queues, jobs, Effects(tmp_path / "effects.db"), start
    for worker, thread in workers:
        worker.stop()
        thread.join(timeout=30)
    queues.close()
    jobs.close()


def submit(queues: SqliteQueues, jobs: SqliteJobs, **body: str) -> None:
    jobs.create(KEY)
    queues.send(
        "pipeline",
        OutgoingMessage(
            body=json.dumps({"id": KEY.job_id, **body}),
            attributes={JOB_ATTRIBUTE: MessageAttribute(data_type="String", value=str(KEY))},
        ),
    )


def status(jobs: SqliteJobs) -> JobStatus | None:
    job = jobs.get(KEY)
    return None if job is None else job.status


def test_job_runs_its_stages_and_succeeds(env) -> None:
    queues, jobs, _effects, start = env
    submit(queues, jobs)
    start()

    wait_for(lambda: status(jobs) is JobStatus.SUCCEEDED)

    job = jobs.get(KEY)
    assert job is not None
    assert job.stages_completed == ("fetch", "transform", "store")
    assert job.progress == 1.0
    assert job.result == {"stages": ["fetch", "transform", "store"]}
    assert job.output_files == ("out/job-1.txt",)
    assert job.attempts == 1


def test_retried_job_resumes_from_its_last_checkpoint(env) -> None:
    queues, jobs, effects, start = env
    submit(queues, jobs, hang_after="transform")
    start()

    wait_for(lambda: status(jobs) is JobStatus.SUCCEEDED)

    assert effects.items("fetch") == ["job-1"], "fetch ran once: the retry resumed after it"
    assert effects.items("transform") == ["job-1"]
    assert effects.items("store") == ["job-1"]
    job = jobs.get(KEY)
    assert job is not None
    assert job.attempts == 2


def test_dead_lettered_message_marks_its_job_with_the_error(env) -> None:
    queues, jobs, _effects, start = env
    submit(queues, jobs, fail_after="fetch")
    start()

    wait_for(lambda: status(jobs) is JobStatus.DEAD_LETTERED)

    job = jobs.get(KEY)
    assert job is not None
    assert job.error is not None
    assert "HANDLER_ERROR" in job.error
    assert "stage fetch broke" in job.error


def test_a_redriven_dead_letter_runs_its_job_again_from_its_checkpoint(env, tmp_path) -> None:
    queues, jobs, effects, start = env
    fixed = tmp_path / "fixed"
    submit(queues, jobs, fail_after="transform", fixed_when=str(fixed))
    start()
    wait_for(lambda: status(jobs) is JobStatus.DEAD_LETTERED)

    fixed.touch()
    assert queues.redrive("pipeline-dlq") == 1

    wait_for(lambda: status(jobs) is JobStatus.SUCCEEDED)
    job = jobs.get(KEY)
    assert job is not None
    assert job.attempts == 3, "two receives before the dead letter, one after the redrive"
    assert job.stages_completed == ("fetch", "transform", "store")
    assert effects.items("fetch") == ["job-1"], "the redriven job resumed after its checkpoint"
    assert effects.items("store") == ["job-1"]


def test_cancelled_job_never_runs_and_its_message_is_removed(env) -> None:
    queues, jobs, effects, start = env
    submit(queues, jobs)
    jobs.transition(KEY, to=JobStatus.CANCELLED, expected=JobStatus.QUEUED)
    start()

    wait_for(
        lambda: queues.stats("pipeline").visible == 0 and queues.stats("pipeline").in_flight == 0
    )

    assert status(jobs) is JobStatus.CANCELLED
    assert effects.items("fetch") == []
