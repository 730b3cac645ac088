"""Jobs over HTTP, against a real server with a real worker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.api.conftest import token, wait_for

if TYPE_CHECKING:
    from tests.api.conftest import Server

PROBLEM = "application/problem+json"


def test_submitted_job_runs_to_success_and_reports_its_stages(server: Server) -> None:
    client = server.client(token())

    accepted = client.post("/jobs", json={"payload": {"drawing": "floor-2.pdf"}})

    assert accepted.status_code == 202
    body = accepted.json()
    assert body["status"] == "queued"
    assert body["estimated_time_seconds"] == 2
    assert accepted.headers["location"] == f"/jobs/{body['job_id']}"
    job = wait_for(
        lambda: (r := client.get(f"/jobs/{body['job_id']}").json())["status"] == "succeeded" and r
    )
    assert job["stages_completed"] == ["validate", "digest", "summarise"]
    assert job["progress"] == 1.0
    assert job["result"]["type"] == "dict"
    assert client.get(f"/status/{body['job_id']}").json()["status"] == "succeeded"


def test_failing_job_ends_dead_lettered_with_its_error(server: Server) -> None:
    client = server.client(token())
    job_id = client.post("/jobs", json={"payload": {"fail": "always"}}).json()["job_id"]

    job = wait_for(
        lambda: (r := client.get(f"/jobs/{job_id}").json())["status"] == "dead_lettered" and r
    )

    assert "NON_RETRYABLE" in job["error"]


def test_invalid_submissions_are_refused_with_problem_details(server: Server) -> None:
    client = server.client(token())

    for body in ({}, {"payload": 1, "extra": True}, {"payload": 1, "client_id": "bad id"}):
        response = client.post("/jobs", json=body)
        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == "VALIDATION_ERROR"
    assert (
        client.post(
            "/jobs", content=b"not json", headers={"Content-Type": "application/json"}
        ).status_code
        == 422
    )


def test_oversized_request_is_refused_before_it_is_read(server: Server) -> None:
    client = server.client(token())

    response = client.post("/jobs", json={"payload": "x" * (3 * 1024 * 1024)})

    assert response.status_code == 413
    assert response.json()["code"] == "REQUEST_TOO_LARGE"


def test_unknown_job_and_route_answer_404_problems(server: Server) -> None:
    client = server.client(token())

    missing = client.get("/jobs/" + "0" * 32)
    malformed = client.get("/jobs/not-a-job")
    nowhere = client.get("/nowhere")

    assert missing.status_code == malformed.status_code == nowhere.status_code == 404
    assert missing.json()["code"] == malformed.json()["code"] == "JobNotFound"
    assert nowhere.json()["code"] == "NOT_FOUND"


def test_listing_pages_through_the_callers_jobs(server: Server) -> None:
    client = server.client(token(subject="lister"))
    submitted = {client.post("/jobs", json={"payload": i}).json()["job_id"] for i in range(5)}

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/jobs", params=params).json()
        seen += [job["job_id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert sorted(seen) == sorted(submitted)
    assert client.get("/jobs", params={"limit": 101}).status_code == 422
    assert client.get("/jobs", params={"cursor": "tampered"}).status_code == 400
