"""Upload events: S3 puts on a bucket reach a handler through a queue, as on AWS."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from tests.runtime.apps.behaviours import record
from vaultq.app import App
from vaultq.blobs import BucketNotification

app = App("uploads")
app.queue("uploads", visibility_timeout_seconds=30)
app.bucket("inbox", notifications=[BucketNotification("uploads", prefix="in/", suffix=".json")])


@app.handler(queue="uploads")
def on_upload(event: dict[str, Any], context: Any) -> None:
    for sqs_record in event["Records"]:
        for s3_record in json.loads(sqs_record["body"])["Records"]:
            key = unquote_plus(s3_record["s3"]["object"]["key"])
            seen = {**sqs_record, "body": json.dumps({"id": f"{s3_record['eventName']} {key}"})}
            record("uploads", [seen])
