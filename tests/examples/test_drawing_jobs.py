"""The drawing-jobs example end to end: ``vaultq up examples.drawing_jobs.app:app``, a
multipart submission, status polling, and the outputs downloaded through signed URLs."""

from __future__ import annotations

import io
import json
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx2 as httpx
import pytest
from openpyxl import load_workbook

from tests.api.conftest import Server, start_server, token, wait_for
from tests.examples.drawing_llm_server import ChatServer, chat_server, completion
from tests.examples.pdf import text_pdf

if TYPE_CHECKING:
    from collections.abc import Iterator

APP = "examples.drawing_jobs.app:app"
DRAWING = text_pdf(
    [
        "GROUND FLOOR PLAN",
        "D-101 Door 900x2100 Qty 2   D-102 Door 800x2100",
        "W-03 Window 1200x1500 4 pcs",
    ],
    ["C-1 Column 400x400"],
)
SPEC = b"D-101: FD30 fire door, self-closing.\nW-03 double glazed.\n"
STAGES = ["context", "components", "excel_generation", "judge"]
REVIEW = "Door D-101 is fire rated as specified; nothing is missing."


@pytest.fixture(scope="module")
def llm_provider() -> Iterator[ChatServer]:
    """An OpenAI-compatible endpoint on 127.0.0.1 that reviews every schedule alike."""
    with chat_server(*[completion(REVIEW)] * 10) as provider:
        yield provider


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, llm_provider: ChatServer) -> Iterator[Server]:
    running = start_server(
        tmp_path_factory.mktemp("drawings"),
        app=APP,
        VAULTQ_OPERATOR_TENANT="ops",
        VAULTQ_ALARM_INTERVAL_SECONDS="0.2",
        DRAWING_LLM_URL=llm_provider.url,
        DRAWING_LLM_MODEL="tiny-reviewer",
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> httpx.Client:
    return server.client(token("acme", "producer", subject="studio"))


@pytest.fixture(scope="module")
def jobs(client: httpx.Client) -> dict[str, str]:
    """All the module's jobs, submitted at once so that they run side by side."""
    return {
        "plain": submit(client, DRAWING, SPEC, project="Riverside Clinic"),
        "crashing": submit(client, DRAWING, simulate_crash_after="components"),
        "unreadable": submit(client, b"%PDF-1.4 this is not a drawing"),
    }


def submit(client: httpx.Client, drawing: bytes, context: bytes | None = None, **body: Any) -> str:
    files = {"drawing": ("plan.pdf", drawing, "application/pdf")}
    if context is not None:
        files["context"] = ("spec.txt", context, "text/plain")
    answer = client.post("/process-drawing", files=files, data={"body": json.dumps(body)})
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["status"] == "queued"
    assert accepted["estimated_time_seconds"] == 30
    return str(accepted["job_id"])


def finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def terminal() -> dict[str, Any] | None:
        view: dict[str, Any] = client.get(f"/status/{job_id}").json()
        return view if view["status"] in {"succeeded", "failed", "dead_lettered"} else None

    view: dict[str, Any] = wait_for(terminal)
    return view


def download(server: Server, view: dict[str, Any], name: str) -> bytes:
    [output] = [f for f in view["output_files"] if f["key"].endswith("/" + name)]
    with httpx.Client(base_url=server.base_url, timeout=10) as anonymous:
        answer = anonymous.get(output["url"])  # the signature is the only credential
    assert answer.status_code == 200
    return answer.content


def test_a_drawing_becomes_a_schedule_and_an_evaluation(server: Server, client, jobs) -> None:
    view = finished(client, jobs["plain"])

    assert view["status"] == "succeeded", view["error"]
    assert view["stages_completed"] == STAGES
    assert view["progress"] == 1.0
    lifetime = datetime.fromisoformat(view["expires_at"]) - datetime.fromisoformat(
        view["created_at"]
    )
    assert lifetime == timedelta(days=30)
    assert view["result"]["components"] == 4
    assert view["result"]["resumed_from"] is None
    assert all(f["url"] and f["expires_at"] for f in view["output_files"])
    book = load_workbook(io.BytesIO(download(server, view, "schedule_v1.xlsx")))
    rows = list(book["Schedule"].iter_rows(values_only=True))
    assert [row[0] for row in rows[1:]] == ["D-101", "D-102", "W-03", "C-1", "Total"]
    assert rows[1][7] == "D-101: FD30 fire door, self-closing."
    assert rows[-1][5] == 2 + 1 + 4 + 1
    evaluation = json.loads(download(server, view, "evaluation.json"))
    assert evaluation["passed"]
    assert all(check["passed"] for check in evaluation["checks"])
    assert evaluation["review"]["status"] == "done"
    assert evaluation["review"]["model"] == "tiny-reviewer"
    assert evaluation["review"]["text"] == REVIEW
    assert evaluation["drawing"]["project"] == "Riverside Clinic"


def test_a_retried_job_resumes_from_its_last_checkpoint(client, jobs, llm_provider) -> None:
    view = finished(client, jobs["crashing"])

    assert view["status"] == "succeeded", view["error"]
    assert view["result"]["resumed_from"] == "components"
    assert view["result"]["stages_run"] == ["excel_generation", "judge"]
    assert view["stages_completed"] == STAGES
    finished(client, jobs["plain"])
    assert len(llm_provider.requests) == 2  # one review per job: the judge ran once each


def test_an_unreadable_drawing_is_dead_lettered_with_its_reason(client, jobs) -> None:
    view = finished(client, jobs["unreadable"])

    assert view["status"] == "dead_lettered"
    assert view["error"].startswith("INVALID_DOCUMENT")
    assert view["output_files"] == []


def test_more_than_five_dead_letters_raise_the_alarm(server: Server, client, jobs) -> None:
    operator = server.client(token("ops", "admin", subject="oncall"))
    name = "drawing-jobs-dead-letters"

    def state() -> str:
        [view] = operator.get("/alarms").json()
        assert view["name"] == name
        return str(view["state"])

    finished(client, jobs["unreadable"])
    for job_id in [submit(client, b"not a PDF") for _ in range(4)]:
        assert finished(client, job_id)["status"] == "dead_lettered"
    time.sleep(1.0)  # five evaluations with 5 dead letters
    assert state() == "OK"

    assert finished(client, submit(client, b"not a PDF either"))["status"] == "dead_lettered"

    wait_for(lambda: state() == "ALARM")
    raised = operator.get(f"/alarms/{name}/history").json()[0]
    assert (raised["old_state"], raised["new_state"], raised["value"]) == ("OK", "ALARM", 6)
