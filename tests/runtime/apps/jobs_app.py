"""A three-stage pipeline that checkpoints after each stage and resumes on a retry."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.runtime.apps.behaviours import record
from vaultq.app import App, DeadLetterQueue, RetryPolicy
from vaultq.runtime import job_of

STAGES = ["fetch", "transform", "store"]

app = App("pipeline")
app.queue(
    "pipeline", visibility_timeout_seconds=30, dead_letter=DeadLetterQueue(max_receive_count=2)
)


@app.handler(
    queue="pipeline",
    timeout_seconds=2,
    batch_size=1,
    retry=RetryPolicy(base_seconds=0, cap_seconds=0),
)
def pipeline(event: dict[str, Any], context: Any) -> None:
    [message] = event["Records"]
    body = json.loads(message["body"])
    job = job_of(message, context)
    checkpoint = job.last_checkpoint()
    done = checkpoint.data["done"] if checkpoint else []
    first_attempt = message["attributes"]["ApproximateReceiveCount"] == "1"
    for stage in STAGES:
        if stage not in done:
            record(stage, [message])
            done = [*done, stage]
            job.complete_stage(stage, checkpoint={"done": done}, progress=len(done) / len(STAGES))
            if first_attempt and body.get("hang_after") == stage:
                time.sleep(10)  # past the 2-second timeout: the attempt is stopped here
        if body.get("fail_after") == stage and not _fixed(body):
            raise RuntimeError(f"stage {stage} broke")
    job.succeed({"stages": done}, output_files=[f"out/{body['id']}.txt"])


def _fixed(body: dict[str, Any]) -> bool:
    """A failing stage is mended once the file ``fixed_when`` names exists."""
    return "fixed_when" in body and Path(body["fixed_when"]).exists()
