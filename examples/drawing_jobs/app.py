"""Drawing jobs: a PDF drawing becomes a component schedule, one checkpointed stage at a time.

``POST /process-drawing`` (multipart: the ``drawing`` PDF, an optional ``context``
specification as PDF or text, and a JSON ``body``) stores the files and queues a job; a
worker runs ``context -> components -> excel_generation -> judge``, saving a checkpoint
after each, and leaves ``schedule_v1.xlsx`` and ``evaluation.json`` as the job's output
files, which ``GET /status/{job_id}`` lists with signed download URLs. Serve it with::

    vaultq up examples.drawing_jobs.app:app

A retried job resumes after its last completed stage: each stage's output is an object in
the bucket and its checkpoint names that object (a job item holds at most 400 KB; a big
drawing's components may not fit in it). The optional LLM review is configured by
``DRAWING_LLM_URL`` and ``DRAWING_LLM_MODEL`` (see ``llm.py``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from examples.drawing_jobs import llm, pipeline
from vaultq import wiring
from vaultq.app import App, DeadLetterQueue, FileField
from vaultq.observe.alarms import dlq_depth
from vaultq.runtime import NonRetryableError, job_of

if TYPE_CHECKING:
    from vaultq.blobs.protocol import BlobStore
    from vaultq.runtime import JobHandle

log = logging.getLogger(__name__)

QUEUE = "drawing-jobs"
BUCKET = "drawings"
SCHEDULE = "schedule_v1.xlsx"
EVALUATION = "evaluation.json"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HANDLER_TIMEOUT_SECONDS = 900
MAX_DRAWING_BYTES = 50 * 1024 * 1024
#: Read at import, so that a misconfigured endpoint stops ``vaultq up`` at once rather than
#: failing every job's last stage.
LLM = llm.LlmSettings.from_env(os.environ)

app = App("drawing-jobs")
# The worker's lease heartbeat keeps a running job's message invisible however long it runs,
# so a short visibility only decides how soon a dead worker's job comes back (2 minutes).
# On AWS, where there is no heartbeat, the SAM template raises it to 6x the 900 s timeout.
app.queue(QUEUE, visibility_timeout_seconds=120, dead_letter=DeadLetterQueue(max_receive_count=3))
app.bucket(BUCKET)
app.alarm(
    "drawing-jobs-dead-letters",
    metric=dlq_depth(QUEUE),
    comparison=">",
    threshold=5,
    description="More than 5 drawing jobs are in the dead-letter queue",
)


class DrawingRequest(BaseModel):
    """The JSON part ``body`` of ``POST /process-drawing``."""

    model_config = ConfigDict(extra="forbid")

    project: str | None = Field(default=None, max_length=200)
    drawing_number: str | None = Field(default=None, max_length=100)
    #: Demonstrates resuming: the job's first attempt fails right after this stage, so the
    #: retry starts from its checkpoint.
    simulate_crash_after: Literal["context", "components", "excel_generation"] | None = None


app.accept_jobs(
    queue=QUEUE,
    path="/process-drawing",
    body=DrawingRequest,
    files=[
        FileField(name="drawing", content_types=("application/pdf",), max_bytes=MAX_DRAWING_BYTES),
        FileField(
            name="context",
            required=False,
            content_types=("application/pdf", "text/plain", "text/markdown"),
            max_bytes=MAX_DRAWING_BYTES,
        ),
    ],
    bucket=BUCKET,
    estimated_time_seconds=30,
    ttl_seconds=30 * 86_400,
)


class SimulatedCrash(RuntimeError):
    """Raised on a first attempt that asked for it: an ordinary, retryable failure."""


@functools.cache
def blobs() -> BlobStore:
    """The bucket's store, opened once per handler process."""
    return wiring.open_blobs()


@functools.cache
def chat_client() -> llm.ChatClient | None:
    """The review's client, opened once per handler process; None when not configured."""
    if LLM is None:
        return None
    # Shared by every worker through vaultq's database: the rate holds for all of them.
    limiter = wiring.open_rate_limiter(default=LLM.bucket)
    return llm.ChatClient(LLM, limiter=limiter)


@app.handler(queue=QUEUE, batch_size=1, timeout_seconds=HANDLER_TIMEOUT_SECONDS)
def process_drawing(event: dict[str, Any], context: Any) -> None:
    """Run the stages the job has not completed; unreadable inputs dead-letter at once."""
    [record] = event["Records"]
    job = job_of(record, context)
    try:
        DrawingRun(job, json.loads(record["body"]), blobs()).run()
    except pipeline.InvalidDocument as exc:
        raise NonRetryableError(str(exc), reason=exc.failure_reason) from None


class DrawingRun:
    """One attempt at one job: each stage reads earlier outputs from the bucket."""

    def __init__(self, job: JobHandle, message: dict[str, Any], store: BlobStore) -> None:
        current = job.get()
        if current is None:
            raise NonRetryableError("the job is gone")
        self.job = job
        self.attempt = current.attempts
        self.completed = current.stages_completed
        self.checkpoints = dict(current.checkpoints)
        #: The stage whose checkpoint this attempt starts after; None on a fresh start.
        self.resumed_from = self.completed[-1] if self.completed else None
        self.request = DrawingRequest.model_validate(message["payload"])
        key = job.key
        self.folder = f"jobs/{key.tenant_id}/{key.client_id}/{key.job_id}"
        self.files: dict[str, dict[str, str]] = message.get("files", {})
        # Only the job's own uploads: a message naming another job's (or tenant's) file is
        # refused before any stage runs, not obeyed.
        for field, location in self.files.items():
            if location["bucket"] != BUCKET or not location["key"].startswith(self.folder + "/"):
                raise NonRetryableError(f"the {field} file is not this job's")
        self.store = store

    def run(self) -> None:
        steps = {
            "context": self._context,
            "components": self._components,
            "excel_generation": self._excel_generation,
            "judge": self._judge,
        }
        ran = []
        for done, (stage, step) in enumerate(steps.items()):
            if stage in self.completed:
                continue
            # GET /status shows the stage as current while it runs.
            self.job.save_progress(done / len(steps), stage=stage)
            checkpoint = step()
            self.job.complete_stage(stage, checkpoint=checkpoint, progress=(done + 1) / len(steps))
            self.checkpoints[stage] = checkpoint
            ran.append(stage)
            log.info("job %s: stage %s done", self.job.key.job_id, stage)
            if stage == self.request.simulate_crash_after and self.attempt == 1:
                raise SimulatedCrash(f"simulated crash after {stage}")
        evaluation = self._read_json("judge")
        self.job.succeed(
            {
                "components": self.checkpoints["components"]["count"],
                "evaluation_passed": evaluation["passed"],
                "review": evaluation["review"]["status"],
                "resumed_from": self.resumed_from,
                "stages_run": ran,
            },
            output_files=[
                self.checkpoints["excel_generation"]["object"],
                self.checkpoints["judge"]["object"],
            ],
        )

    def _context(self) -> dict[str, Any]:
        document = self._input("context")
        found = pipeline.context(document)
        return self._save("work/context.json", found) | {"tags": len(found["notes"])}

    def _components(self) -> dict[str, Any]:
        drawing = self._input("drawing")
        if drawing is None:
            raise pipeline.InvalidDocument("the job has no drawing")
        found = pipeline.components(drawing)
        return self._save("work/components.json", found) | {"count": len(found["components"])}

    def _excel_generation(self) -> dict[str, Any]:
        schedule = pipeline.excel_generation(
            self._read_json("components"), self._read_json("context")
        )
        return self._put(SCHEDULE, schedule, XLSX)

    def _judge(self) -> dict[str, Any]:
        found, notes = self._read_json("components"), self._read_json("context")
        schedule = self._read("excel_generation")
        evaluation = pipeline.judge(
            found, notes, schedule, review=llm.review(found, notes, chat_client())
        )
        evaluation["drawing"] = {
            "project": self.request.project,
            "drawing_number": self.request.drawing_number,
        }
        return self._save(EVALUATION, evaluation) | {"passed": evaluation["passed"]}

    def _input(self, field: str) -> bytes | None:
        location = self.files.get(field)
        if location is None:
            return None
        data, _info = self.store.get(location["bucket"], location["key"])
        return data

    def _save(self, name: str, document: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(document, indent=2, ensure_ascii=False).encode()
        return self._put(name, data, "application/json")

    def _put(self, name: str, data: bytes, content_type: str) -> dict[str, Any]:
        key = f"{self.folder}/{name}"
        self.store.put(BUCKET, key, data, content_type=content_type)
        return {"object": f"{BUCKET}/{key}"}

    def _read(self, stage: str) -> bytes:
        bucket, _, key = self.checkpoints[stage]["object"].partition("/")
        data, _info = self.store.get(bucket, key)
        return data

    def _read_json(self, stage: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self._read(stage))
        return document
