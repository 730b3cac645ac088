"""The drawing handler called directly, over a real job table and blob store."""

from __future__ import annotations

import io
import json
import time
from typing import TYPE_CHECKING

import pytest
from examples.drawing_jobs import app as drawing
from openpyxl import load_workbook

from tests.examples.pdf import text_pdf
from vaultq import wiring
from vaultq.events import LambdaContext
from vaultq.jobs import JobKey, JobStatus
from vaultq.runtime import JOB_ATTRIBUTE, NonRetryableError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from vaultq.blobs.protocol import BlobStore
    from vaultq.jobs.protocol import JobStore

DRAWING = text_pdf(["D-101 Door 900x2100"])


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[JobStore, BlobStore]]:
    url = f"sqlite:///{tmp_path}/vaultq.db"
    monkeypatch.setenv("VAULTQ_URL", url)
    drawing.blobs.cache_clear()
    jobs, blobs = wiring.open_jobs(url), wiring.open_blobs(url)
    blobs.create_bucket(drawing.BUCKET)
    yield jobs, blobs
    drawing.blobs.cache_clear()
    jobs.close()
    blobs.close()


def run(jobs: JobStore, key: JobKey, files: dict[str, str]) -> None:
    """Invoke the handler as a worker would, for a job already in ``processing``."""
    body = {
        "job_id": key.job_id,
        "client_id": key.client_id,
        "payload": {},
        "files": {name: {"bucket": drawing.BUCKET, "key": k} for name, k in files.items()},
    }
    record = {
        "messageId": "m-1",
        "body": json.dumps(body),
        "messageAttributes": {JOB_ATTRIBUTE: {"stringValue": str(key), "dataType": "String"}},
    }
    context = LambdaContext(
        function_name="process_drawing",
        memory_limit_in_mb=128,
        deadline_monotonic=time.monotonic() + 900,
        jobs=jobs,
    )
    drawing.process_drawing({"Records": [record]}, context)


def new_job(jobs: JobStore, tenant: str, job_id: str) -> JobKey:
    key = JobKey(tenant_id=tenant, client_id="c", job_id=job_id)
    jobs.create(key)
    jobs.transition(key, to=JobStatus.PROCESSING)
    return key


def test_a_job_reads_only_its_own_uploads(stores) -> None:
    jobs, blobs = stores
    theirs = "jobs/other/c/their-job/drawing.pdf"
    blobs.put(drawing.BUCKET, theirs, DRAWING, content_type="application/pdf")
    mine = new_job(jobs, "acme", "my-job")

    with pytest.raises(NonRetryableError, match="not this job's"):
        run(jobs, mine, {"drawing": theirs})

    assert blobs.list(drawing.BUCKET, "jobs/acme/").objects == ()


def test_a_retry_reuses_the_outputs_of_the_stages_already_completed(stores) -> None:
    jobs, blobs = stores
    key = new_job(jobs, "acme", "job-2")
    upload = "jobs/acme/c/job-2/drawing.pdf"
    blobs.put(drawing.BUCKET, upload, DRAWING, content_type="application/pdf")
    # A previous attempt completed "context"; its output object holds a note of its own.
    context_key = "jobs/acme/c/job-2/work/context.json"
    saved = {"source": "none", "characters": 0, "notes": {"D-101": "from the checkpoint"}}
    blobs.put(drawing.BUCKET, context_key, json.dumps(saved).encode())
    jobs.complete_stage(key, "context", checkpoint={"object": f"drawings/{context_key}"})

    run(jobs, key, {"drawing": upload})

    job = jobs.get(key)
    assert job is not None
    assert job.status is JobStatus.SUCCEEDED
    assert job.result is not None
    assert job.result["stages_run"] == ["components", "excel_generation", "judge"]
    schedule, _ = blobs.get(drawing.BUCKET, "jobs/acme/c/job-2/schedule_v1.xlsx")
    [row] = load_workbook(io.BytesIO(schedule))["Schedule"].iter_rows(
        min_row=2, max_row=2, values_only=True
    )
    assert row[7] == "from the checkpoint"  # the context stage's output was reused, not redone
