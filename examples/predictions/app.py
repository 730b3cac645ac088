"""Validated async predictions: a CSV of customers becomes a CSV of churn probabilities.

``POST /predictions`` takes a multipart form: the CSV as ``file`` (``text/csv``) and a JSON
``body`` part that `PredictionRequest` validates (request and user ids, ``requested_at``
within five minutes, unknown fields refused). The API stores the file, stores the job
``queued`` and sends its message, or keeps it in the outbox while the queue is disabled or
down. ``score_predictions`` validates the message again against the job's own record, scores
every row with the churn model and writes ``results.csv`` beside the upload; ``GET
/jobs/{job_id}`` then shows it with an expiring download URL. Run it with::

    vaultq up examples.predictions.app:app

A file that cannot be scored (not UTF-8, missing columns, too many rows) or a message that
fails validation goes to the dead-letter queue at once, with its reason; any other failure
is retried with back-off, three receives in all. An alarm fires on the first dead letter.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from examples.predictions.messages import (
    InvalidMessage,
    PredictionMessage,
    PredictionRequest,
    read_message,
)
from vaultq import errors, wiring
from vaultq.app import App, DeadLetterQueue, FileField
from vaultq.observe.alarms import dlq_depth
from vaultq.runtime.failures import NonRetryableError
from vaultq.runtime.jobs import JobHandle, job_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from vaultq.blobs.protocol import BlobStore

QUEUE = "predictions"
BUCKET = "predictions"
RESULTS_NAME = "results.csv"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
_FOURTEEN_DAYS_SECONDS = 14 * 24 * 60 * 60

app = App("predictions")
app.queue(
    QUEUE,
    visibility_timeout_seconds=300,
    dead_letter=DeadLetterQueue(max_receive_count=3, retention_seconds=_FOURTEEN_DAYS_SECONDS),
)
app.bucket(BUCKET)
app.accept_jobs(
    queue=QUEUE,
    path="/predictions",
    body=PredictionRequest,
    files=[FileField(name="file", content_types=("text/csv",), max_bytes=MAX_UPLOAD_BYTES)],
    bucket=BUCKET,
    # A request sent again (same body, same file) within five minutes answers with the job
    # it created: a client may retry after a lost answer; later, the replay window refuses it.
    deduplicate=True,
    estimated_time_seconds=5,
)
app.alarm(
    "predictions-dead-letters",
    metric=dlq_depth(QUEUE),
    threshold=1,
    description="A prediction job was dead-lettered: its record says why.",
)


@functools.cache
def blobs() -> BlobStore:
    """The blob store of this handler process, opened on its first job."""
    return wiring.open_blobs()


# One job at a time per worker process, each handler process holding its own model (sklearn
# costs about a second to import): scale out with ``vaultq up --workers N``.
@app.handler(queue=QUEUE, batch_size=1, timeout_seconds=120, max_concurrency=1)
def score_predictions(event: dict[str, Any], context: Any) -> None:
    # sklearn loads with the model: in handler processes only, not in the API's.
    from examples.predictions import model  # noqa: PLC0415

    [record] = event["Records"]
    job, message = _job_and_message(record, context)
    upload = message.files.file
    try:
        data, _info = blobs().get(upload.bucket, upload.key)
    except errors.NoSuchKey:
        raise NonRetryableError("the uploaded file is gone", reason="INPUT_FILE_MISSING") from None
    job.complete_stage("validate", progress=0.2)
    try:
        scoring = model.score_csv(
            data, model=model.churn_model(), threshold=message.payload.threshold
        )
    except model.InvalidCsv as exc:
        raise NonRetryableError(str(exc), reason=exc.failure_reason) from None
    results_key = upload.key.rpartition("/")[0] + "/" + RESULTS_NAME
    # Rewritten whole by a retry: the same input and model give the same bytes.
    blobs().put(upload.bucket, results_key, scoring.results_csv, content_type="text/csv")
    job.complete_stage("score", progress=0.9)
    job.succeed(
        {
            "rows": scoring.rows,
            "scored": scoring.scored,
            "rejected": scoring.rejected,
            "predicted_churn": scoring.predicted_churn,
            "threshold": message.payload.threshold,
        },
        output_files=[f"{upload.bucket}/{results_key}"],
    )


def _job_and_message(
    record: Mapping[str, Any], context: Any
) -> tuple[JobHandle, PredictionMessage]:
    """The record's job, and its message validated against the job's record. A message that
    names no job, or fails validation, is poison: no retry can make it valid."""
    try:
        job = job_of(record, context)
        stored = job.get()
        if stored is None:
            raise InvalidMessage("the message's job is gone")
        return job, read_message(record["body"], job=stored, tenant=_tenant(record))
    except (InvalidMessage, errors.InvalidParameterValue) as exc:
        raise NonRetryableError(str(exc), reason=InvalidMessage.failure_reason) from None


def _tenant(record: Mapping[str, Any]) -> str | None:
    # Set by vaultq's API on every message it sends; a sender cannot choose it.
    attribute = record.get("messageAttributes", {}).get("vaultq-tenant")
    return None if attribute is None else attribute.get("stringValue")
