"""The demo app ``vaultq up`` serves by default: ``POST /jobs`` takes any JSON payload.

Its handler runs a small three-stage job (validate, digest, summarise), saving a checkpoint
after each stage, so a retried job resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from vaultq.app import App, DeadLetterQueue
from vaultq.blobs import BucketNotification
from vaultq.events import s3_records
from vaultq.observe.alarms import dlq_depth
from vaultq.runtime import NonRetryableError, job_of

log = logging.getLogger(__name__)

app = App("demo")
app.queue("demo-jobs", visibility_timeout_seconds=60, dead_letter=DeadLetterQueue())
app.accept_jobs(queue="demo-jobs", estimated_time_seconds=2)
app.queue("demo-uploads", visibility_timeout_seconds=60, dead_letter=DeadLetterQueue())
app.bucket("demo-uploads", notifications=[BucketNotification("demo-uploads")])
for watched in ("demo-jobs", "demo-uploads"):
    app.alarm(
        f"{watched}-dead-letters",
        metric=dlq_depth(watched),
        threshold=1,
        description=f"a message of {watched} failed every attempt and waits in its DLQ",
    )


@app.handler(queue="demo-jobs", batch_size=1, timeout_seconds=30)
def run_job(event: dict[str, Any], context: Any) -> None:
    [record] = event["Records"]
    job = job_of(record, context)
    payload = json.loads(record["body"])["payload"]
    if isinstance(payload, dict) and payload.get("fail") == "always":
        raise NonRetryableError("the payload asked to fail")
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    job.complete_stage("validate", checkpoint={"bytes": len(canonical)}, progress=1 / 3)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    job.complete_stage("digest", checkpoint={"sha256": digest}, progress=2 / 3)
    summary = {"sha256": digest, "bytes": len(canonical), "type": type(payload).__name__}
    job.complete_stage("summarise", progress=1.0)
    job.succeed(summary)


@app.handler(queue="demo-uploads")
def on_upload(event: dict[str, Any], context: Any) -> None:
    """Upload events arrive as S3 event JSON in the SQS record's body; the demo only logs
    their keys' sizes (never contents)."""
    for record in event["Records"]:
        for upload in s3_records(record):
            log.info("upload of %d bytes", upload["s3"]["object"]["size"])
