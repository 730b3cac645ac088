"""``s3_records``: what a handler of upload events reads out of an SQS record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vaultq import errors
from vaultq.events import s3_records

S3_PUT = json.loads((Path(__file__).parents[1] / "events" / "s3_put.json").read_text())


def sqs_record(body: str) -> dict[str, object]:
    return {"messageId": "m-1", "body": body}


def test_an_s3_event_yields_its_records() -> None:
    records = s3_records(sqs_record(json.dumps(S3_PUT)))
    assert records == S3_PUT["Records"]
    assert records[0]["eventName"] == "ObjectCreated:Put"


def test_the_test_event_s3_sends_when_notifications_are_configured_yields_nothing() -> None:
    test_event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-11-23T19:00:00.000Z",
        "Bucket": "uploads",
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }
    assert s3_records(sqs_record(json.dumps(test_event))) == []


@pytest.mark.parametrize(
    "body",
    ['{"not": "an event"}', "not json", '{"Records": "nope"}', '{"Records": [1]}', "[]"],
)
def test_anything_else_is_a_poison_message(body: str) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        s3_records(sqs_record(body))
