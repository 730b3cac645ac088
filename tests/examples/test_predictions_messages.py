"""The prediction message schema: what the API refuses before queueing, and what the worker
refuses before reading a file. Every refusal has a case here."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from examples.predictions.messages import (
    REFERENCE_TIME,
    InvalidMessage,
    PredictionMessage,
    PredictionRequest,
    read_message,
)
from pydantic import ValidationError

from vaultq.jobs.protocol import Job, JobKey, JobStatus

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
KEY = JobKey(tenant_id="acme", client_id="alice", job_id="6d5f5b579a094071bb6b1ebc7b675ab9")
UPLOAD = f"jobs/acme/alice/{KEY.job_id}/file.csv"


def request(**changes: Any) -> dict[str, Any]:
    fields = {
        "request_id": str(uuid.uuid4()),
        "user_id": "usr_alice0001",
        "requested_at": NOW.isoformat(),
        "threshold": 0.5,
    }
    return {name: value for name, value in {**fields, **changes}.items() if value is not ...}


def validate(body: dict[str, Any], *, at: datetime = NOW) -> PredictionRequest:
    return PredictionRequest.model_validate_json(json.dumps(body), context={REFERENCE_TIME: at})


def message(**changes: Any) -> dict[str, Any]:
    fields = {
        "job_id": KEY.job_id,
        "client_id": KEY.client_id,
        "payload": request(),
        "files": {"file": {"bucket": "predictions", "key": UPLOAD}},
    }
    return {**fields, **changes}


def job(*, created_at: datetime = NOW, input_files: tuple[str, ...] = ()) -> Job:
    ms = int(created_at.timestamp() * 1000)
    return Job(
        key=KEY,
        status=JobStatus.PROCESSING,
        created_at_ms=ms,
        updated_at_ms=ms,
        expires_at_ms=ms + 86_400_000,
        input_files=input_files or (f"predictions/{UPLOAD}",),
    )


def test_a_valid_request_is_accepted_as_sent() -> None:
    body = request()
    accepted = validate(body)
    assert str(accepted.request_id) == body["request_id"]
    assert accepted.user_id == "usr_alice0001"
    assert accepted.requested_at == NOW


def test_without_a_reference_time_the_window_is_measured_from_now() -> None:
    fresh = request(requested_at=datetime.now(tz=UTC).isoformat())
    assert PredictionRequest.model_validate(fresh).user_id == "usr_alice0001"
    with pytest.raises(ValidationError, match="requested_at"):
        PredictionRequest.model_validate(request(requested_at="2020-01-01T00:00:00Z"))


@pytest.mark.parametrize("offset_seconds", [-300, 299, 300])
def test_requested_at_within_five_minutes_either_way_is_accepted(offset_seconds: int) -> None:
    when = (NOW + timedelta(seconds=offset_seconds)).isoformat()
    assert validate(request(requested_at=when)).requested_at == NOW + timedelta(
        seconds=offset_seconds
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"priority": "high"}, "priority"),
        ({"request_id": ...}, "request_id"),
        ({"request_id": "not-a-uuid"}, "request_id"),
        ({"request_id": "00000000-0000-0000-0000-000000000000"}, "request_id"),
        ({"request_id": str(uuid.uuid1())}, "request_id"),
        ({"request_id": 12345}, "request_id"),
        ({"user_id": ...}, "user_id"),
        ({"user_id": "alice"}, "user_id"),
        ({"user_id": "usr_ALICE0001"}, "user_id"),
        ({"user_id": "usr_abc1234"}, "user_id"),
        ({"user_id": "usr_" + "a" * 33}, "user_id"),
        ({"user_id": "usr_alice0001\n"}, "user_id"),
        ({"user_id": "usr_alice-0001"}, "user_id"),
        ({"user_id": "usr_alice0001 OR 1=1"}, "user_id"),
        ({"requested_at": ...}, "requested_at"),
        ({"requested_at": "2026-11-23T12:00:00"}, "requested_at"),
        ({"requested_at": "yesterday"}, "requested_at"),
        ({"requested_at": (NOW - timedelta(seconds=301)).isoformat()}, "requested_at"),
        ({"requested_at": (NOW + timedelta(seconds=301)).isoformat()}, "requested_at"),
        ({"requested_at": (NOW - timedelta(days=3)).isoformat()}, "requested_at"),
        ({"threshold": 0}, "threshold"),
        ({"threshold": 1}, "threshold"),
        ({"threshold": "high"}, "threshold"),
    ],
)
def test_an_invalid_request_is_refused(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        validate(request(**changes))
    assert [error["loc"][0] for error in refused.value.errors()] == [field]


def test_a_valid_message_is_read() -> None:
    read = read_message(json.dumps(message()), job=job(), tenant="acme")
    assert read.job_id.hex == KEY.job_id
    assert read.files.file.key == UPLOAD


def test_a_message_that_waited_hours_is_judged_by_when_its_job_was_accepted() -> None:
    """The outbox may hold a message for as long as the queue is down, and retries wait:
    the window is measured from the job's creation, which the API recorded."""
    accepted = datetime.now(tz=UTC) - timedelta(hours=3)
    body = message(payload=request(requested_at=accepted.isoformat()))
    assert read_message(json.dumps(body), job=job(created_at=accepted), tenant="acme")


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        f"jobs/acme/alice/{KEY.job_id}/../../../bob/x/file.csv",
        "/etc/passwd",
        "jobs\\acme\\file.csv",
        "jobs/acme/./file.csv",
        "jobs//acme/file.csv",
        "jobs/acme/",
        "jobs/acme/file\x00.csv",
        "jobs/acme/file\n.csv",
        "jobs/acme/file\x85.csv",
        "",
        "k" * 1025,
    ],
)
def test_an_object_key_that_could_leave_its_folder_is_refused(key: str) -> None:
    body = message(files={"file": {"bucket": "predictions", "key": key}})
    with pytest.raises(ValidationError) as refused:
        PredictionMessage.model_validate(body, context={REFERENCE_TIME: NOW})
    assert [error["loc"] for error in refused.value.errors()] == [("files", "file", "key")]


@pytest.mark.parametrize(
    "changes",
    [
        {"job_id": "../jobs"},
        {"job_id": "0" * 32},
        {"client_id": "alice#bob"},
        {"payload": request(user_id="bob")},
        {"payload": request(requested_at=(NOW - timedelta(minutes=6)).isoformat())},
        {"files": {}},
        {"files": {"file": {"bucket": "Predictions", "key": UPLOAD}}},
        {"files": {"file": {"bucket": "predictions", "key": UPLOAD, "size": 1}}},
        {"files": {"file": {"bucket": "predictions", "key": UPLOAD}, "other": {}}},
        {"payload": {**request(), "admin": True}},
        {"reply_to": "https://example.com"},
    ],
)
def test_a_message_outside_the_schema_is_refused_by_the_worker(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidMessage, match="does not match the schema"):
        read_message(json.dumps(message(**changes)), job=job(), tenant="acme")


def test_a_message_that_is_not_json_is_refused_by_the_worker() -> None:
    with pytest.raises(InvalidMessage, match="does not match the schema"):
        read_message("{not json", job=job(), tenant="acme")


def test_the_workers_refusal_does_not_echo_the_message() -> None:
    body = message(payload=request(user_id="usr_SECRET-name"))
    with pytest.raises(InvalidMessage) as refused:
        read_message(json.dumps(body), job=job(), tenant="acme")
    assert "SECRET" not in str(refused.value)
    assert "payload.user_id" in str(refused.value)


@pytest.mark.parametrize(
    ("body", "tenant", "files", "why"),
    [
        (message(), "other-tenant", (), "another tenant"),
        (message(), None, (), "another tenant"),
        (message(job_id=uuid.uuid4().hex), "acme", (), "another job"),
        (message(client_id="bob"), "acme", (), "another job"),
        (
            message(files={"file": {"bucket": "predictions", "key": "jobs/acme/bob/j/file.csv"}}),
            "acme",
            (),
            "not uploaded with its job",
        ),
        (message(), "acme", ("predictions/jobs/acme/alice/other/file.csv",), "not uploaded"),
        (
            message(files={"file": {"bucket": "elsewhere", "key": UPLOAD}}),
            "acme",
            (),
            "not uploaded with its job",
        ),
    ],
)
def test_a_message_that_does_not_belong_to_its_job_is_refused(
    body: dict[str, Any], tenant: str | None, files: tuple[str, ...], why: str
) -> None:
    with pytest.raises(InvalidMessage, match=why):
        read_message(json.dumps(body), job=job(input_files=files), tenant=tenant)
