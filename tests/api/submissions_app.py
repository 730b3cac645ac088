"""An app that declares its own job routes, shaped like the seed systems of issue #7."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from vaultq import wiring
from vaultq.app import App, DeadLetterQueue, FileField
from vaultq.runtime import NonRetryableError, job_of

app = App("submissions")

# Seed 4: tasks go to one FIFO group; the queue drops duplicates by content. No handler
# reads it, so tests see exactly what was sent.
app.queue("tasks.fifo", fifo=True, content_based_deduplication=True)


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]
    priority: int = Field(default=3, ge=1, le=5)


app.accept_jobs(queue="tasks.fifo", path="/tasks", body=Task, message_group="tasks")


# Predictions: a validated body, validated again by the handler.
class Prediction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    series: list[float] = Field(min_length=1, max_length=100)
    horizon: int = Field(ge=1, le=10)


app.queue("predictions", visibility_timeout_seconds=30)
app.accept_jobs(queue="predictions", path="/predictions", body=Prediction)


@app.handler(queue="predictions", batch_size=1)
def predict(event: dict[str, Any], context: Any) -> None:
    [record] = event["Records"]
    prediction = Prediction.model_validate(json.loads(record["body"])["payload"])
    last = prediction.series[-1]
    job_of(record, context).succeed({"forecast": [last] * prediction.horizon})


# Seed 1: a PDF drawing and an optional context document, with a JSON body.
class DrawingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = Field(min_length=1, max_length=40)


app.queue("drawings", visibility_timeout_seconds=30)
app.bucket("drawings")
app.accept_jobs(
    queue="drawings",
    path="/process-drawing",
    body=DrawingRequest,
    files=[
        FileField(name="drawing", content_types=("application/pdf",), max_bytes=64 * 1024),
        FileField(name="context", required=False, max_bytes=1024),
    ],
    bucket="drawings",
)


@app.handler(queue="drawings", batch_size=1)
def process_drawing(event: dict[str, Any], context: Any) -> None:
    [record] = event["Records"]
    body = json.loads(record["body"])
    request = DrawingRequest.model_validate(body["payload"])
    blobs = wiring.open_blobs()
    try:
        sizes = {
            name: len(blobs.get(file["bucket"], file["key"])[0])
            for name, file in body["files"].items()
        }
        head = blobs.get(body["files"]["drawing"]["bucket"], body["files"]["drawing"]["key"])[0]
    finally:
        blobs.close()
    job_of(record, context).succeed(
        {"project": request.project, "sizes": sizes, "head": head[:5].decode()}
    )


# A route that waits for its job: a quote, or a problem with the failure's reason.
class Quote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str = Field(min_length=1, max_length=40)


app.queue("quotes", visibility_timeout_seconds=30, dead_letter=DeadLetterQueue(max_receive_count=3))
app.accept_jobs(
    queue="quotes",
    path="/quotes",
    body=Quote,
    wait_seconds=10,
    failure_statuses={"UNPRICEABLE": 422},
)


@app.handler(queue="quotes", batch_size=1)
def quote(event: dict[str, Any], context: Any) -> None:
    [record] = event["Records"]
    item = Quote.model_validate(json.loads(record["body"])["payload"]).item
    if item == "moon":
        raise NonRetryableError("UNPRICEABLE: the moon has no price", reason="UNPRICEABLE")
    job_of(record, context).succeed({"item": item, "price": len(item)})
