"""Job routes an app declares: their own validated bodies, files, FIFO groups and duplicates,
against a real `vaultq up` serving tests/api/submissions_app.py."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from tests.api.conftest import start_server, token, wait_for
from vaultq import wiring

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx2 as httpx

    from tests.api.conftest import Server
    from vaultq.queues.protocol import ReceivedMessage

PROBLEM = "application/problem+json"
PDF = b"%PDF-1.7\n" + b"0" * 100
REQUEST_LIMIT = 8192


@pytest.fixture(scope="module")
def routes_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(
        tmp_path_factory.mktemp("routes"),
        app="tests.api.submissions_app:app",
        # Smaller than the drawing's own limit (64 KiB): routes with files take their own.
        VAULTQ_MAX_REQUEST_BYTES=str(REQUEST_LIMIT),
    )
    yield running
    running.stop()


def _client(server: Server) -> httpx.Client:
    # A tenant per test: duplicates, idempotency keys and queue contents never meet.
    return server.client(token(f"t-{uuid.uuid4().hex[:12]}"))


def _tasks_sent(server: Server, tenant_marker: str) -> list[ReceivedMessage]:
    """Every message on tasks.fifo whose payload carries ``tenant_marker`` (nothing reads it)."""
    queues = wiring.open_queues(f"sqlite:///{server.data}/vaultq.db")
    try:
        messages = queues.receive("tasks.fifo", max_messages=10, visibility_timeout_seconds=0)
    finally:
        queues.close()
    return [m for m in messages if tenant_marker in m.body]


def _job(client: httpx.Client, job_id: str, status: str) -> dict[str, object]:
    found: dict[str, object] = wait_for(
        lambda: (r := client.get(f"/jobs/{job_id}").json())["status"] == status and r
    )
    return found


def test_a_declared_body_is_validated_and_its_handler_gets_the_validated_payload(
    routes_server: Server,
) -> None:
    client = _client(routes_server)

    accepted = client.post("/predictions", json={"series": [1, 2.5], "horizon": 3})

    assert accepted.status_code == 202
    job_id = accepted.json()["job_id"]
    assert accepted.headers["location"] == f"/jobs/{job_id}"
    job = _job(client, job_id, "succeeded")
    assert job["result"] == {"forecast": [2.5, 2.5, 2.5]}


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"series": [], "horizon": 3}, "body.series"),
        ({"series": [1], "horizon": 99}, "body.horizon"),
        ({"series": [1], "horizon": 3, "extra": 1}, "body.extra"),
        ({"payload": {"series": [1], "horizon": 3}}, "body.payload"),
    ],
)
def test_an_invalid_body_is_refused_with_its_field_and_nothing_is_queued(
    routes_server: Server, body: dict[str, object], location: str
) -> None:
    client = _client(routes_server)

    refused = client.post("/predictions", json=body)

    assert refused.status_code == 422
    assert refused.headers["content-type"] == PROBLEM
    problem = refused.json()
    assert problem["code"] == "VALIDATION_ERROR"
    assert location in [error["location"] for error in problem["errors"]]
    assert client.get("/jobs").json()["jobs"] == []


def test_the_queue_gets_the_sanitised_payload_in_the_declared_fifo_group(
    routes_server: Server,
) -> None:
    client = _client(routes_server)
    marker = uuid.uuid4().hex

    accepted = client.post("/tasks", json={"title": f"  {marker}  "})

    assert accepted.status_code == 202
    [message] = _tasks_sent(routes_server, marker)
    body = json.loads(message.body)
    assert body["job_id"] == accepted.json()["job_id"]
    assert body["payload"] == {"title": marker, "priority": 3}
    assert message.group_id == "tasks"


def test_a_duplicate_within_the_window_answers_with_the_original_job_and_sends_nothing(
    routes_server: Server,
) -> None:
    client = _client(routes_server)
    marker = uuid.uuid4().hex

    first = client.post("/tasks", json={"title": marker, "priority": 2})
    # Equal once validated: the whitespace is stripped, the default spelled out.
    again = client.post("/tasks", json={"title": f" {marker}", "priority": 2})
    other = client.post("/tasks", json={"title": marker, "priority": 1})

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert other.status_code == 202
    assert other.json()["job_id"] != first.json()["job_id"]
    sent = _tasks_sent(routes_server, marker)
    assert sorted(json.loads(m.body)["job_id"] for m in sent) == sorted(
        [first.json()["job_id"], other.json()["job_id"]]
    )
    assert len(client.get("/jobs").json()["jobs"]) == 2


def test_an_equal_submission_of_another_tenant_is_its_own_job(routes_server: Server) -> None:
    marker = uuid.uuid4().hex

    ours = _client(routes_server).post("/tasks", json={"title": marker})
    theirs = _client(routes_server).post("/tasks", json={"title": marker})

    assert (ours.status_code, theirs.status_code) == (202, 202)
    assert len(_tasks_sent(routes_server, marker)) == 2


def test_an_idempotency_key_answers_with_its_first_job_and_refuses_another_payload(
    routes_server: Server,
) -> None:
    client = _client(routes_server)
    key = {"Idempotency-Key": uuid.uuid4().hex}

    first = client.post("/predictions", json={"series": [1], "horizon": 1}, headers=key)
    retried = client.post("/predictions", json={"series": [1], "horizon": 1}, headers=key)
    changed = client.post("/predictions", json={"series": [2], "horizon": 1}, headers=key)

    assert first.status_code == 202
    assert retried.status_code == 200
    assert retried.json()["job_id"] == first.json()["job_id"]
    assert retried.json()["status"] in {"queued", "processing", "succeeded"}
    assert changed.status_code == 422
    assert changed.headers["content-type"] == PROBLEM
    assert changed.json()["code"] == "IdempotencyKeyMismatch"
    assert len(client.get("/jobs").json()["jobs"]) == 1


def test_the_default_route_honours_an_idempotency_key_too(routes_server: Server) -> None:
    server = routes_server
    client = _client(server)
    key = {"Idempotency-Key": "order-42"}

    first = client.post("/predictions", json={"series": [3], "horizon": 2}, headers=key)
    second = client.post("/predictions", json={"series": [3], "horizon": 2}, headers=key)
    # Without a key and without deduplication, an equal submission is a new job.
    third = client.post("/predictions", json={"series": [3], "horizon": 2})

    assert second.json()["job_id"] == first.json()["job_id"]
    assert third.status_code == 202
    assert third.json()["job_id"] != first.json()["job_id"]


def _drawing(
    client: httpx.Client,
    *,
    body: object = None,
    files: dict[str, tuple[str, bytes, str]] | None = None,
) -> httpx.Response:
    return client.post(
        "/process-drawing",
        data={"body": json.dumps(body if body is not None else {"project": "tower"})},
        files=files if files is not None else {"drawing": ("plan.pdf", PDF, "application/pdf")},
    )


def test_a_multipart_submission_stores_its_files_and_the_handler_reads_them(
    routes_server: Server,
) -> None:
    client = _client(routes_server)

    accepted = _drawing(
        client,
        files={
            "drawing": ("plan.pdf", PDF, "application/pdf"),
            "context": ("notes.txt", b"north wing", "text/plain"),
        },
    )

    assert accepted.status_code == 202
    job_id = accepted.json()["job_id"]
    job = _job(client, job_id, "succeeded")
    assert job["result"] == {
        "project": "tower",
        "sizes": {"drawing": len(PDF), "context": 10},
        "head": "%PDF-",
    }


def test_multipart_files_are_stored_under_the_tenant_client_and_job(
    routes_server: Server,
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    client = routes_server.client(token(tenant, subject="alice"))

    job_id = _drawing(client).json()["job_id"]

    blobs = wiring.open_blobs(f"sqlite:///{routes_server.data}/vaultq.db")
    try:
        stored = blobs.list("drawings", f"jobs/{tenant}/").objects
    finally:
        blobs.close()
    assert [(o.key, o.content_type) for o in stored] == [
        (f"jobs/{tenant}/alice/{job_id}/drawing.pdf", "application/pdf")
    ]
    assert client.get(f"/jobs/{job_id}").status_code == 200


@pytest.mark.parametrize(
    ("files", "status", "code"),
    [
        ({"drawing": ("plan.png", b"\x89PNG", "image/png")}, 415, "UnsupportedMediaType"),
        (
            {"drawing": ("plan.pdf", b"0" * (64 * 1024 + 1), "application/pdf")},
            413,
            "EntityTooLarge",
        ),
        ({"context": ("notes.txt", b"n", "text/plain")}, 422, "VALIDATION_ERROR"),
        (
            {
                "drawing": ("plan.pdf", PDF, "application/pdf"),
                "appendix": ("a.pdf", PDF, "application/pdf"),
            },
            422,
            "VALIDATION_ERROR",
        ),
    ],
    ids=["wrong-type", "oversize", "missing-required", "unknown-file"],
)
def test_refused_files_answer_stable_codes_and_create_no_job(
    routes_server: Server, files: dict[str, tuple[str, bytes, str]], status: int, code: str
) -> None:
    client = _client(routes_server)

    refused = _drawing(client, files=files)

    assert refused.status_code == status
    assert refused.headers["content-type"] == PROBLEM
    assert refused.json()["code"] == code
    assert client.get("/jobs").json()["jobs"] == []


def test_a_multipart_body_is_validated_like_a_json_one(routes_server: Server) -> None:
    client = _client(routes_server)

    refused = _drawing(client, body={"project": "tower", "colour": "red"})
    as_json = client.post("/process-drawing", json={"project": "tower"})

    assert refused.status_code == 422
    assert "body.body.colour" in [e["location"] for e in refused.json()["errors"]]
    assert as_json.status_code == 415
    assert as_json.json()["code"] == "UnsupportedMediaType"


def test_each_route_documents_its_own_request_schema(routes_server: Server) -> None:
    schema = routes_server.client().get("/openapi.json").json()

    tasks = schema["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]
    drawing = schema["paths"]["/process-drawing"]["post"]["requestBody"]["content"]
    assert tasks["schema"] == {"$ref": "#/components/schemas/Task"}
    assert schema["components"]["schemas"]["Task"]["additionalProperties"] is False
    form = drawing["multipart/form-data"]
    assert form["schema"]["required"] == ["body", "drawing"]
    assert form["schema"]["properties"]["body"] == {"$ref": "#/components/schemas/DrawingRequest"}
    assert "DrawingRequest" in schema["components"]["schemas"]
    assert "/jobs" not in schema["paths"] or "post" not in schema["paths"]["/jobs"]


def test_routes_with_files_take_bodies_as_large_as_their_files_and_no_larger(
    routes_server: Server,
) -> None:
    client = _client(routes_server)
    big_pdf = PDF + b"0" * (4 * REQUEST_LIMIT)

    accepted = _drawing(client, files={"drawing": ("plan.pdf", big_pdf, "application/pdf")})
    too_large = _drawing(client, files={"drawing": ("plan.pdf", big_pdf * 3, "application/pdf")})
    json_refused = client.post(
        "/predictions", json={"series": [1.0] * (REQUEST_LIMIT // 2), "horizon": 1}
    )

    assert accepted.status_code == 202
    assert too_large.status_code == 413
    assert too_large.json()["code"] == "REQUEST_TOO_LARGE"
    assert json_refused.status_code == 413
    assert json_refused.json()["code"] == "REQUEST_TOO_LARGE"


def test_equal_submissions_racing_create_one_job(routes_server: Server) -> None:
    client = _client(routes_server)
    marker = uuid.uuid4().hex

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: client.post("/tasks", json={"title": marker}), range(8)))

    created = [a for a in answers if a.status_code == 202]
    assert len(created) == 1
    # The others saw the first one finished (200, its job) or still being accepted (409).
    for answer in answers:
        assert answer.status_code in {200, 202, 409}
        if answer.status_code == 409:
            assert answer.json()["code"] == "IdempotencyAlreadyInProgress"
        else:
            assert answer.json()["job_id"] == created[0].json()["job_id"]
    assert len(_tasks_sent(routes_server, marker)) == 1


# -- routes that wait for their job ---------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "status", "expected"),
    [
        ("tea", 200, {"status": "succeeded", "result": {"item": "tea", "price": 3}}),
        ("moon", 422, {"code": "UNPRICEABLE", "job_status": "dead_lettered"}),
    ],
)
def test_a_waiting_route_answers_the_finished_job_and_a_replay_answers_the_same(
    routes_server: Server, item: str, status: int, expected: dict[str, object]
) -> None:
    client = _client(routes_server)
    headers = {"Idempotency-Key": uuid.uuid4().hex}

    first = client.post("/quotes", json={"item": item}, headers=headers)
    replayed = client.post("/quotes", json={"item": item}, headers=headers)

    for answer in (first, replayed):
        assert answer.status_code == status, answer.text
        assert expected.items() <= answer.json().items()
    assert first.json()["job_id"] == replayed.json()["job_id"]
    if status >= 400:
        assert first.headers["content-type"].startswith(PROBLEM)
        assert first.json()["detail"] == "UNPRICEABLE: the moon has no price"
