"""examples/predictions end to end: a real ``vaultq up examples.predictions.app:app`` over
HTTP, its workers scoring real uploads."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx2 as httpx
import pytest

from tests.api.conftest import ROOT, SECRET, START_SECONDS, Server, free_port, token, wait_for
from vaultq.jobs.protocol import JobKey
from vaultq.jobs.sqlite import SqliteJobs
from vaultq.outbox.sqlite import SqliteOutbox

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

APP = "examples.predictions.app:app"
CUSTOMERS = (ROOT / "examples/predictions/data/customers.csv").read_bytes()
PRODUCER = token("acme", "producer", subject="alice")
CONSUMER = token("acme", "consumer", subject="scorer")
ADMIN = token("acme", "admin", subject="root")
OPERATOR = token("ops", "admin", subject="oncall")


def start(data: Path, *, workers: int = 1, **env: str) -> Server:
    """``vaultq up`` of the predictions app, as tests/api/conftest.py starts the demo's."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vaultq", "up", APP, "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env={**os.environ, **_environment(data), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server(base_url=f"http://127.0.0.1:{port}", data=data, process=process)
    try:
        wait_for(
            lambda: process.poll() is not None or _healthy(server), timeout_seconds=START_SECONDS
        )
        if process.poll() is not None:
            raise RuntimeError("vaultq up did not start")
    except BaseException:
        server.stop()
        raise
    return server


def _environment(data: Path) -> dict[str, str]:
    return {
        "VAULTQ_URL": f"sqlite:///{data}/vaultq.db",
        "VAULTQ_AUTH_HS256_SECRET": SECRET.decode(),
    }


def _healthy(server: Server) -> bool:
    try:
        return httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def request_body(**changes: Any) -> dict[str, Any]:
    return {
        "request_id": str(uuid.uuid4()),
        "user_id": "usr_alice0001",
        "requested_at": datetime.now(tz=UTC).isoformat(),
        **changes,
    }


def submit(
    client: httpx.Client,
    data: bytes = CUSTOMERS,
    *,
    body: dict[str, Any] | None = None,
    content_type: str = "text/csv",
) -> httpx.Response:
    return client.post(
        "/predictions",
        files={
            "body": (None, json.dumps(body or request_body()), "application/json"),
            "file": ("customers.csv", data, content_type),
        },
    )


def finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return job if job["status"] not in ("queued", "processing") else None

    found: dict[str, Any] = wait_for(read, timeout_seconds=60)
    return found


def visible(client: httpx.Client) -> int:
    stats = client.get("/queues/predictions/stats")
    assert stats.status_code == 200
    return int(stats.json()["visible"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start(
        tmp_path_factory.mktemp("predictions"),
        workers=1,
        VAULTQ_OPERATOR_TENANT="ops",
        VAULTQ_ALARM_INTERVAL_SECONDS="0.5",
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the queue on and no workers: what is sent stays there to be counted."""
    running = start(tmp_path_factory.mktemp("predictions-idle"), workers=0)
    yield running
    running.stop()


def test_an_uploaded_csv_comes_back_scored(server: Server) -> None:
    producer = server.client(PRODUCER)
    upload = CUSTOMERS + b"C09999,12,lots,1,one-year,yes\n"

    accepted = submit(producer, upload)

    assert accepted.status_code == 202
    assert accepted.json()["status"] == "queued"
    job = finished(producer, accepted.json()["job_id"])
    assert job["status"] == "succeeded"
    assert job["stages_completed"] == ["validate", "score"]
    assert job["result"] == {
        "rows": 26,
        "scored": 25,
        "rejected": 1,
        "predicted_churn": job["result"]["predicted_churn"],
        "threshold": 0.5,
    }
    [output] = job["output_files"]
    assert output["key"].endswith("/results.csv")
    download = httpx.get(server.base_url + output["url"])  # the signed URL needs no token
    rows = list(csv.DictReader(io.StringIO(download.text)))
    ids = [line.split(",")[0] for line in upload.decode().splitlines()[1:]]
    assert [row["customer_id"] for row in rows] == ids
    assert all(0 <= float(row["churn_probability"]) <= 1 for row in rows[:-1])
    assert sum(row["churned"] == "1" for row in rows) == job["result"]["predicted_churn"]
    assert rows[-1]["error"] == "monthly_charges: not a number"


def test_a_request_sent_again_answers_with_its_first_job(server: Server) -> None:
    producer = server.client(PRODUCER)
    body = request_body()
    first = submit(producer, body=body)

    again = submit(producer, body=body)
    changed = submit(producer, body={**body, "request_id": str(uuid.uuid4())})

    assert (first.status_code, again.status_code, changed.status_code) == (202, 200, 202)
    assert again.json()["job_id"] == first.json()["job_id"] != changed.json()["job_id"]


def test_a_file_that_cannot_be_scored_is_dead_lettered_at_once(server: Server) -> None:
    producer = server.client(PRODUCER)
    accepted = submit(producer, b"name,email\nAda,ada@example.com\n")

    job = finished(producer, accepted.json()["job_id"])

    assert job["status"] == "dead_lettered"
    assert job["error"].startswith("INVALID_CSV")
    assert "the header lacks customer_id" in job["error"]
    letters = server.client(ADMIN).get("/queues/predictions/dead-letters").json()
    [letter] = [d for d in letters if accepted.json()["job_id"] in d["body"]]
    assert (letter["failure_reason"], letter["receive_count"]) == ("INVALID_CSV", 1)
    operator = server.client(OPERATOR)
    wait_for(lambda: operator.get("/alarms").json()[0]["state"] == "ALARM")
    [alarm] = operator.get("/alarms").json()
    assert (alarm["name"], alarm["metric"]) == (
        "predictions-dead-letters",
        "dlq_depth(predictions)",
    )


SIX_MINUTES = timedelta(minutes=6)
REFUSED = [
    pytest.param({"user_id": "alice"}, "text/csv", 422, id="user id format"),
    pytest.param({"request_id": "42"}, "text/csv", 422, id="request id not a UUID"),
    pytest.param({"priority": "high"}, "text/csv", 422, id="unknown field"),
    pytest.param({"requested_at": -SIX_MINUTES}, "text/csv", 422, id="replayed"),
    pytest.param({"requested_at": SIX_MINUTES}, "text/csv", 422, id="from the future"),
    pytest.param({"requested_at": "2026-11-23T12:00:00"}, "text/csv", 422, id="naive time"),
    pytest.param({}, "application/octet-stream", 415, id="not text/csv"),
]


@pytest.mark.parametrize(("changes", "content_type", "status"), REFUSED)
def test_an_invalid_request_is_refused_and_never_queued(
    idle_server: Server, changes: dict[str, Any], content_type: str, status: int
) -> None:
    producer = idle_server.client(PRODUCER)
    consumer = idle_server.client(CONSUMER)
    before = visible(consumer)
    body = request_body(
        **{
            name: (datetime.now(tz=UTC) + value).isoformat()
            if isinstance(value, timedelta)
            else value
            for name, value in changes.items()
        }
    )

    refused = submit(producer, body=body, content_type=content_type)

    assert refused.status_code == status
    assert visible(consumer) == before
    assert submit(producer).status_code == 202  # the same route and queue otherwise work
    assert visible(consumer) == before + 1


def test_a_request_without_its_file_or_body_is_refused(idle_server: Server) -> None:
    producer = idle_server.client(PRODUCER)
    body = json.dumps(request_body())
    no_file = producer.post("/predictions", files={"body": (None, body, "application/json")})
    no_body = producer.post("/predictions", files={"file": ("c.csv", CUSTOMERS, "text/csv")})
    as_json = producer.post("/predictions", json=request_body())
    assert (no_file.status_code, no_body.status_code, as_json.status_code) == (422, 422, 415)


@pytest.mark.parametrize(
    ("credential", "method", "path"),
    [
        pytest.param(PRODUCER, "DELETE", "/queues/predictions/messages", id="producer purge"),
        pytest.param(PRODUCER, "GET", "/queues/predictions/stats", id="producer stats"),
        pytest.param(
            PRODUCER, "GET", "/queues/predictions/dead-letters", id="producer dead letters"
        ),
        pytest.param(
            PRODUCER, "POST", "/queues/predictions/dead-letters/redrive", id="producer redrive"
        ),
        pytest.param(CONSUMER, "POST", "/queues/predictions/messages", id="consumer send"),
        pytest.param(CONSUMER, "DELETE", "/queues/predictions/messages", id="consumer purge"),
        pytest.param(ADMIN, "DELETE", "/queues/predictions/messages", id="tenant admin purge"),
    ],
)
def test_each_token_does_only_its_own_part(
    idle_server: Server, credential: str, method: str, path: str
) -> None:
    body = {"body": "{}"} if path.endswith("/messages") else {}
    answer = idle_server.client(credential).request(method, path, json=body)
    assert answer.status_code == 403


def test_a_consumer_token_cannot_submit_predictions(idle_server: Server) -> None:
    consumer = idle_server.client(CONSUMER)
    before = visible(consumer)
    assert submit(consumer).status_code == 403
    assert visible(consumer) == before


@pytest.mark.slow
def test_uploads_wait_while_the_queue_is_disabled_and_run_once_it_is_back(
    tmp_path: Path,
) -> None:
    down = start(tmp_path, workers=0, VAULTQ_QUEUE_ENABLED="false")
    try:
        producer = down.client(PRODUCER)
        job_ids = [submit(producer).json()["job_id"] for _ in range(2)]
        assert [producer.get(f"/jobs/{j}").json()["status"] for j in job_ids] == ["queued"] * 2
        assert visible(down.client(CONSUMER)) == 0
    finally:
        down.stop()

    up = start(tmp_path, workers=1)
    jobs = SqliteJobs(tmp_path / "vaultq.db")
    outbox = SqliteOutbox(tmp_path / "vaultq.db")
    try:
        producer = up.client(PRODUCER)
        assert [finished(producer, j)["status"] for j in job_ids] == ["succeeded"] * 2
        # Sent by the API's outbox pump, and run, once each: the outbox holds nothing that
        # could be sent again, and each job entered processing once.
        assert outbox.count() == 0
        keys = [JobKey(tenant_id="acme", client_id="alice", job_id=j) for j in job_ids]
        assert [job.attempts for job in map(jobs.get, keys) if job] == [1, 1]
        consumer = up.client(CONSUMER)
        # A job ends just before its message is deleted: wait for the delete.
        wait_for(lambda: consumer.get("/queues/predictions/stats").json()["in_flight"] == 0)
        stats = consumer.get("/queues/predictions/stats").json()
        assert (stats["visible"], stats["in_flight"]) == (0, 0)
        assert consumer.get("/queues/predictions-dlq/stats").json()["visible"] == 0
    finally:
        outbox.close()
        jobs.close()
        up.stop()


def test_a_message_sent_straight_to_the_queue_is_refused_by_the_worker(server: Server) -> None:
    """The worker validates too: a producer may send to the queue without the API's route,
    but a message that names no job of its sender's tenant reads no file."""
    forged = {
        "job_id": uuid.uuid4().hex,
        "client_id": "alice",
        "payload": request_body(),
        "files": {"file": {"bucket": "predictions", "key": "jobs/acme/bob/x/file.csv"}},
    }
    sent = server.client(PRODUCER).post(
        "/queues/predictions/messages", json={"body": json.dumps(forged)}
    )
    assert sent.status_code == 201
    admin = server.client(ADMIN)

    def dead_letter() -> dict[str, Any] | None:
        letters = admin.get("/queues/predictions/dead-letters").json()
        return next((d for d in letters if d["message_id"] == sent.json()["message_id"]), None)

    letter = wait_for(dead_letter, timeout_seconds=60)
    assert (letter["failure_reason"], letter["receive_count"]) == ("INVALID_MESSAGE", 1)
