"""The ordered task API (examples/tasks): the seed's validation, its ordering scenario with a
real worker, and duplicate posts over HTTP against a real ``vaultq up``."""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from examples.tasks import app as tasks
from examples.tasks.models import Task, read_task
from pydantic import ValidationError

from tests.api.conftest import start_server, token, wait_for
from vaultq.app import App
from vaultq.events import LambdaContext, sqs_event
from vaultq.jobs import JobKey, JobStatus
from vaultq.jobs.sqlite import SqliteJobs
from vaultq.observe.alarms import Comparison, MetricKind
from vaultq.queues import MessageAttribute, OutgoingMessage
from vaultq.queues.sqlite import SqliteQueues
from vaultq.runtime import JOB_ATTRIBUTE
from vaultq.runtime.jobs import JobTracker
from vaultq.runtime.worker import Worker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.api.conftest import Server

VALID = {"title": "Buy milk", "description": "Two litres", "priority": "low"}
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def task(**fields: Any) -> Task:
    return Task.model_validate({**VALID, **fields})


def refused(**fields: Any) -> list[str]:
    """The fields a body with ``fields`` is refused for."""
    with pytest.raises(ValidationError) as caught:
        task(**fields)
    return [".".join(str(p) for p in error["loc"]) for error in caught.value.errors()]


# -- validation ----------------------------------------------------------------------------


def test_text_is_trimmed_then_escaped() -> None:
    accepted = task(title="  <b>Tom & Jerry's</b>\n", description='\t"quoted"  ')

    assert accepted.title == "&lt;b&gt;Tom &amp; Jerry&#x27;s&lt;/b&gt;"
    assert accepted.description == "&quot;quoted&quot;"


@pytest.mark.parametrize(
    ("field", "limit"), [("title", 200), ("description", 2000)], ids=["title", "description"]
)
def test_lengths_are_counted_after_trimming_and_before_escaping(field: str, limit: int) -> None:
    assert getattr(task(**{field: "x"}), field) == "x"
    assert getattr(task(**{field: " " + "x" * limit + " "}), field) == "x" * limit
    assert getattr(task(**{field: "&" * limit}), field) == "&amp;" * limit
    assert refused(**{field: "x" * (limit + 1)}) == [field]
    assert refused(**{field: ""}) == [field]
    assert refused(**{field: " \n\t "}) == [field]


@pytest.mark.parametrize("value", [None, 7, ["a"], {"a": 1}])
def test_text_must_be_a_string(value: object) -> None:
    assert refused(title=value) == ["title"]


@pytest.mark.parametrize(
    ("given", "stored"),
    [("low", "low"), ("LOW", "low"), ("Medium", "medium"), (" hIgH ", "high")],
)
def test_priority_is_case_insensitive(given: str, stored: str) -> None:
    assert task(priority=given).model_dump(mode="json")["priority"] == stored


@pytest.mark.parametrize("value", ["urgent", "", "lowest", 1, None])
def test_priority_outside_the_three_is_refused(value: object) -> None:
    assert refused(priority=value) == ["priority"]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2026-12-01", "2026-12-01"),
        ("20261201", "2026-12-01"),
        ("2026-12-01T17:30:00Z", "2026-12-01T17:30:00Z"),
        (" 2026-12-01T17:30:00+02:00 ", "2026-12-01T15:30:00Z"),
        ("2026-12-01T23:30:00.250-05:00", "2026-12-02T04:30:00.250000Z"),
        ("1999-01-01", "1999-01-01"),  # past due dates are accepted (an overdue task)
        (None, None),
    ],
)
def test_due_date_is_iso_8601_kept_in_utc(given: str | None, stored: str | None) -> None:
    assert task(due_date=given).model_dump(mode="json")["due_date"] == stored


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-01T17:30:00",  # no UTC offset: whose local time?
        "2026-02-30",
        "2026-13-01",
        "2026-12-01 17:30:00Z",
        "2026-12-01T25:00Z",
        "next tuesday",
        "",
        1_780_000_000,
        "1780000000",
    ],
)
def test_bad_due_dates_are_refused(value: object) -> None:
    assert refused(due_date=value) == ["due_date"]


def test_unknown_and_missing_fields_are_refused() -> None:
    assert refused(owner="alice") == ["owner"]
    with pytest.raises(ValidationError) as caught:
        Task.model_validate({"title": "t"})
    assert sorted(e["loc"][0] for e in caught.value.errors()) == ["description", "priority"]


def test_payload_is_read_back_unchanged_and_never_escaped_twice() -> None:
    sent = task(title=" a < b ", description="&" * 2000, due_date="2026-12-01T08:00:00+01:00")
    payload = sent.model_dump(mode="json")

    assert read_task(json.loads(json.dumps(payload))) == sent


@pytest.mark.parametrize(
    "title",
    ["<b>raw</b>", " padded", "&amp;" * 201, "", "AT&T"],
    ids=["unescaped", "untrimmed", "too-long", "empty", "bare-ampersand"],
)
def test_payload_the_api_did_not_sanitise_is_refused(title: str) -> None:
    with pytest.raises(ValidationError):
        read_task({**task().model_dump(mode="json"), "title": title})


def test_outcome_summarises_the_task() -> None:
    result = tasks.outcome(
        task(title="Ship <it>", priority="HIGH", due_date="2026-05-31"), attempt=2, now=NOW
    )

    assert result == {
        "title": "Ship &lt;it&gt;",
        "description": "Two litres",
        "priority": "high",
        "due_date": "2026-05-31",
        "summary": "[high] Ship &lt;it&gt; (due 2026-05-31)",
        "overdue": True,
        "description_words": 2,
        "attempt": 2,
    }
    assert (
        tasks.outcome(task(due_date=NOW.date().isoformat()), attempt=1, now=NOW)["overdue"] is False
    )
    assert tasks.outcome(task(due_date="2026-06-01T11:59:59Z"), attempt=1, now=NOW)["overdue"]
    assert tasks.outcome(task(), attempt=1, now=NOW)["overdue"] is None


# -- declarations ---------------------------------------------------------------------------


def test_queue_route_and_processor_are_declared_as_the_seed_says() -> None:
    spec = tasks.app.queues["tasks.fifo"]
    route = tasks.app.job_routes["/tasks"]
    mapping = tasks.app.handlers["process_tasks"].mapping

    assert spec.attributes.fifo and spec.attributes.content_based_deduplication
    assert spec.attributes.visibility_timeout_seconds == 300
    assert spec.attributes.message_retention_seconds == 4 * 86_400
    assert spec.dead_letter is not None and spec.dead_letter.max_receive_count == 3
    assert (route.body, route.message_group, route.deduplicate) == (Task, "tasks", True)
    assert (mapping.queue, mapping.batch_size, mapping.report_batch_item_failures) == (
        "tasks.fifo",
        10,
        True,
    )


def test_alarms_have_the_seed_thresholds() -> None:
    alarms = {
        name: (a.metric.kind, a.metric.queue or a.metric.handler, a.comparison, a.threshold)
        for name, a in tasks.app.alarms.items()
    }
    periods = {name: a.period_seconds for name, a in tasks.app.alarms.items()}

    assert alarms == {
        "tasks-api-errors": (MetricKind.API_ERRORS, None, Comparison.GREATER, 5),
        "tasks-processor-errors": (
            MetricKind.HANDLER_ERRORS,
            "process_tasks",
            Comparison.GREATER,
            10,
        ),
        "tasks-dead-letters": (
            MetricKind.DLQ_DEPTH,
            "tasks.fifo",
            Comparison.GREATER_OR_EQUAL,
            1,
        ),
    }
    assert periods["tasks-api-errors"] == periods["tasks-processor-errors"] == 300


# -- the processor, with a real worker ------------------------------------------------------

RECORD_ENV = "VAULTQ_TEST_TASK_BATCHES"


def _recorded(event: dict[str, Any], context: Any) -> Any:
    """The example's processor, writing down each batch it was given and what it failed."""
    response = tasks.process_tasks(event, context)
    titles = {r["messageId"]: json.loads(r["body"])["payload"]["title"] for r in event["Records"]}
    batch = {
        "seen": [
            [titles[r["messageId"]], int(r["attributes"]["ApproximateReceiveCount"])]
            for r in event["Records"]
        ],
        "failed": [titles[f["itemIdentifier"]] for f in response["batchItemFailures"]],
    }
    with Path(os.environ[RECORD_ENV]).open("a") as out:
        out.write(json.dumps(batch) + "\n")
    return response


# The example app with its processor wrapped: handler processes import it by this path.
recording = App("tasks-recording")
recording.queues = tasks.app.queues
recording.handlers = {
    name: replace(spec, function=_recorded) for name, spec in tasks.app.handlers.items()
}


def message_body(key: JobKey, title: str) -> dict[str, Any]:
    payload = task(title=title).model_dump(mode="json")
    return {"job_id": key.job_id, "client_id": key.client_id, "payload": payload}


class Bench:
    def __init__(self, path: Path) -> None:
        self.db = path / "vaultq.db"
        self.batches_file = path / "batches.jsonl"
        self.queues = SqliteQueues(self.db)
        self.jobs = SqliteJobs(self.db)
        tasks.app.provision(self.queues)

    def post(self, title: str) -> JobKey:
        """What ``POST /tasks`` stores and sends, without the HTTP."""
        key = JobKey(tenant_id="acme", client_id="alice", job_id=uuid.uuid4().hex)
        self.jobs.create(key)
        self.send(json.dumps(message_body(key, title)), key)
        return key

    def send(self, body: str, key: JobKey | None) -> None:
        attribute = MessageAttribute(data_type="String", value=str(key))
        self.queues.send(
            tasks.QUEUE,
            OutgoingMessage(
                body=body,
                attributes={} if key is None else {JOB_ATTRIBUTE: attribute},
                group_id=tasks.GROUP,
            ),
        )

    def batches(self) -> list[dict[str, Any]]:
        if not self.batches_file.exists():
            return []
        return [json.loads(line) for line in self.batches_file.read_text().splitlines()]

    def attempt(self, key: JobKey) -> int | None:
        job = self.jobs.get(key)
        return None if job is None or job.result is None else int(job.result["attempt"])

    def status(self, key: JobKey) -> JobStatus | None:
        job = self.jobs.get(key)
        return None if job is None else job.status

    def dead_letters(self) -> dict[str, tuple[str, str | None]]:
        messages = self.queues.receive(
            "tasks-dlq.fifo", max_messages=10, visibility_timeout_seconds=0
        )
        return {
            json.loads(m.body)["payload"]["title"]: (m.dead_letter.reason, m.dead_letter.last_error)
            for m in messages
            if m.dead_letter is not None
        }


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bench]:
    monkeypatch.setenv(RECORD_ENV, str(tmp_path / "batches.jsonl"))
    running = Bench(tmp_path)
    yield running
    running.queues.close()
    running.jobs.close()


@pytest.fixture
def start_worker(bench: Bench) -> Iterator[Callable[[], None]]:
    started: list[tuple[Worker, threading.Thread]] = []

    def start() -> None:
        worker = Worker(
            recording,
            app_path=f"{__name__}:recording",
            queues=bench.queues,
            job_store_factory=functools.partial(SqliteJobs, bench.db),
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread))

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(timeout=30)


def test_a_failed_task_holds_back_later_tasks_until_it_succeeds(
    bench: Bench, start_worker: Callable[[], None]
) -> None:
    a, b, c = bench.post("A"), bench.post("FLAKY B"), bench.post("C")
    start_worker()

    wait_for(lambda: bench.status(c) is JobStatus.SUCCEEDED)
    # A task's job ends inside its batch, just before the batch is written down.
    wait_for(lambda: len(bench.batches()) >= 2)

    assert bench.batches() == [
        # B fails its first attempt; C, after it, is not attempted and goes back with it.
        {"seen": [["A", 1], ["FLAKY B", 1], ["C", 1]], "failed": ["FLAKY B", "C"]},
        # The next batch starts at B.
        {"seen": [["FLAKY B", 2], ["C", 2]], "failed": []},
    ]
    assert [bench.attempt(k) for k in (a, b, c)] == [1, 2, 2]


def test_a_task_that_always_fails_is_dead_lettered_before_later_tasks_run(
    bench: Bench, start_worker: Callable[[], None]
) -> None:
    a, b, c = bench.post("A"), bench.post("FAIL B"), bench.post("C")
    start_worker()
    wait_for(bench.batches)
    d = bench.post("D")

    wait_for(lambda: bench.status(d) is JobStatus.SUCCEEDED)
    wait_for(lambda: len(bench.batches()) >= 4)

    assert bench.batches() == [
        {"seen": [["A", 1], ["FAIL B", 1], ["C", 1]], "failed": ["FAIL B", "C"]},
        {"seen": [["FAIL B", 2], ["C", 2], ["D", 1]], "failed": ["FAIL B", "C", "D"]},
        {"seen": [["FAIL B", 3], ["C", 3], ["D", 2]], "failed": ["FAIL B", "C", "D"]},
        {"seen": [["D", 3]], "failed": []},
    ]
    # As on Lambda, C shared B's three receives without being attempted, so it followed B
    # to the dead-letter queue; D, sent later, ran once B was gone.
    assert bench.dead_letters() == {
        "FAIL B": ("HANDLER_ERROR", "the handler reported failure"),
        "C": ("HANDLER_ERROR", "the handler reported failure"),
    }
    assert [bench.status(k) for k in (a, b, c)] == [
        JobStatus.SUCCEEDED,
        JobStatus.DEAD_LETTERED,
        JobStatus.DEAD_LETTERED,
    ]
    assert bench.attempt(c) is None


POISON: dict[str, Callable[[dict[str, Any]], str]] = {
    "not-json": lambda body: "{",
    "no-payload": lambda body: json.dumps({**body, "payload": None}),
    "unsanitised": lambda body: json.dumps(
        {**body, "payload": {**body["payload"], "title": "<b>B</b>"}}
    ),
    "unknown-field": lambda body: json.dumps(
        {**body, "payload": {**body["payload"], "owner": "eve"}}
    ),
    "no-job": json.dumps,
}


@pytest.mark.parametrize("kind", sorted(POISON))
def test_poison_message_is_a_reported_failure_not_a_crash(bench: Bench, kind: str) -> None:
    a = bench.post("A")
    key = JobKey(tenant_id="acme", client_id="alice", job_id=uuid.uuid4().hex)
    bench.jobs.create(key)
    bench.send(POISON[kind](message_body(key, "B")), None if kind == "no-job" else key)
    bench.post("C")
    received = bench.queues.receive(tasks.QUEUE, max_messages=10)
    JobTracker(bench.jobs).begin(received)  # the worker's step: the jobs are processing
    context = LambdaContext(
        function_name="process_tasks",
        memory_limit_in_mb=128,
        deadline_monotonic=float("inf"),
        jobs=bench.jobs,
    )

    response = tasks.process_tasks(sqs_event(tasks.QUEUE, received), context)

    assert len(received) == 3
    assert response == {
        "batchItemFailures": [{"itemIdentifier": m.message_id} for m in received[1:]]
    }
    assert bench.status(a) is JobStatus.SUCCEEDED


# -- over HTTP, against `vaultq up examples.tasks.app:app` ----------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("tasks"), app="examples.tasks.app:app")
    yield running
    running.stop()


def processed(server: Server) -> int:
    """Tasks the processor has settled as succeeded, from the Prometheus metrics."""
    text = server.client().get("/metrics").text
    found = re.search(
        r'^vaultq_handler_messages_total\{handler="process_tasks",result="succeeded"\} (\S+)$',
        text,
        re.MULTILINE,
    )
    return 0 if found is None else int(float(found.group(1)))


def finished(server: Server, client: Any, job_id: str) -> dict[str, Any] | None:
    job = client.get(f"/jobs/{job_id}").json()
    return job if job["status"] == "succeeded" else None


def test_a_duplicate_post_within_five_minutes_is_processed_once(server: Server) -> None:
    client = server.client(token())
    body = {"title": f"Renew passport {uuid.uuid4().hex[:6]}", "description": "Before June"}
    before = processed(server)

    first = client.post("/tasks", json={**body, "priority": "high"})
    # Equal once sanitised: the same task.
    again = client.post("/tasks", json={**body, "priority": " HIGH", "title": body["title"] + " "})

    assert first.status_code == 202
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (200, "true")
    assert again.json()["job_id"] == first.json()["job_id"]
    job = wait_for(lambda: finished(server, client, first.json()["job_id"]))
    assert job["result"]["summary"] == f"[high] {body['title']}"
    assert job["result"]["attempt"] == 1
    # Once more after it ran, then another task: FIFO, so once that one is done, anything the
    # duplicates had queued before it would have been processed too.
    assert client.post("/tasks", json={**body, "priority": "high"}).status_code == 200
    later = client.post(
        "/tasks", json={**VALID, "title": "Later", "due_date": "2026-12-01T09:00:00+01:00"}
    )
    done = wait_for(lambda: finished(server, client, later.json()["job_id"]))
    assert done["result"]["due_date"] == "2026-12-01T08:00:00Z"
    # The metrics are recorded just after a batch settles.
    wait_for(lambda: processed(server) >= before + 2)
    assert processed(server) == before + 2


def test_invalid_task_is_refused_with_every_problem(server: Server) -> None:
    client = server.client(token())

    answer = client.post(
        "/tasks",
        json={"title": " ", "description": "x" * 2001, "priority": "urgent", "due": "soon"},
    )

    assert answer.status_code == 422
    problems = {e["location"] for e in answer.json()["errors"]}
    assert problems == {"body.title", "body.description", "body.priority", "body.due"}
