"""The HTTP API on Lambda: API Gateway HTTP API events (payload format 2.0, the canonical one
of tests/events) go through ``vaultq.api.aws_lambda`` to SQS, the job table and the state
table, all on moto."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.deploy import api_app
from tests.state_fixtures import REGION, dynamodb_client_fixture  # noqa: F401
from vaultq import wiring
from vaultq._dynamodb import StateTable
from vaultq.api import aws_lambda
from vaultq.api.auth import mint_token
from vaultq.events import LambdaContext
from vaultq.jobs.dynamodb import DynamoJobs
from vaultq.jobs.protocol import JobKey, JobStatus
from vaultq.outbox import PendingSend
from vaultq.outbox.dynamodb import DynamoOutbox
from vaultq.queues.sqs import SqsQueues

from ..aws_server import _free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

EVENTS = Path(__file__).resolve().parents[1] / "events"
SECRET = "k" * 48
#: The API's outbox claim: a send the queue refused is due again this much later.
CLAIM_SECONDS = 5


class Deployment:
    def __init__(self, *, endpoint: str, queue: str, jobs_table: str, state_table: str) -> None:
        self.queue = queue
        self.jobs_table = jobs_table
        self.state_table = state_table
        self.url = (
            f"aws://?region={REGION}&endpoint_url={endpoint}"
            f"&jobs_table={jobs_table}&state_table={state_table}"
        )
        self.queues = wiring.open_queues(self.url)

    def job(self, job_id: str) -> Any:
        jobs = wiring.open_jobs(self.url)
        try:
            return jobs.get(JobKey(tenant_id="acme", client_id="alice", job_id=job_id))
        finally:
            jobs.close()

    def messages(self) -> list[Any]:
        received = self.queues.receive(self.queue, max_messages=10, wait_seconds=0)
        return list(received)


@pytest.fixture(autouse=True)
def event_loop_of_the_environment() -> Iterator[None]:
    """Lambda keeps one event loop per execution environment and Mangum reuses the thread's;
    here each test gets its own, closed after it (an abandoned loop leaks its sockets)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def deployment(
    aws_endpoint: str, dynamodb_client: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    """What the template deploys, made on moto: the queue, the job table, the state table;
    and the function's environment."""
    suffix = uuid.uuid4().hex[:10]
    made = Deployment(
        endpoint=aws_endpoint,
        queue=f"apitest-{suffix}",
        jobs_table=f"vaultq-jobs-{suffix}",
        state_table=f"vaultq-state-{suffix}",
    )
    api_app.use(made.queue).provision(made.queues)
    DynamoJobs(region=REGION, table=made.jobs_table, client=dynamodb_client).create_table()
    StateTable(region=REGION, table=made.state_table, client=dynamodb_client).create()
    monkeypatch.setenv("VAULTQ_URL", made.url)
    monkeypatch.setenv("VAULTQ_APP", "tests.deploy.api_app:app")
    monkeypatch.setenv("VAULTQ_AUTH_HS256_SECRET", SECRET)
    fresh_container()
    yield made
    fresh_container()
    made.queues.close()
    for table in (made.jobs_table, made.state_table):
        dynamodb_client.delete_table(TableName=table)


def fresh_container() -> None:
    """A new execution environment: the next invocation builds the services again."""
    aws_lambda.lambda_services.cache_clear()
    aws_lambda._adapter.cache_clear()
    aws_lambda._drain_stores.cache_clear()


def context() -> LambdaContext:
    return LambdaContext(
        function_name="apitest-api",
        memory_limit_in_mb=512,
        deadline_monotonic=time.monotonic() + 30,
    )


def post_jobs(token: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "apigw_http_post_jobs.json").read_text())
    event["headers"]["authorization"] = f"Bearer {token}"
    return event


def get_job(token: str, job_id: str) -> dict[str, Any]:
    """The canonical event as API Gateway sends ``GET /jobs/<id>``: no body."""
    event = copy.deepcopy(post_jobs(token))
    for header in ("content-length", "content-type"):
        del event["headers"][header]
    del event["body"]
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/jobs/{job_id}"
    event["requestContext"]["http"]["method"] = "GET"
    event["pathParameters"] = {"proxy": f"jobs/{job_id}"}
    return event


def producer_token() -> str:
    return mint_token(secret=SECRET.encode(), tenant="acme", roles=["producer"], subject="alice")


def invoke(event: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    """Invoke the API's handler as Lambda would; the status, headers and JSON body that API
    Gateway would answer with."""
    response = aws_lambda.api_handler(event, context())
    assert not response["isBase64Encoded"]
    return response["statusCode"], response["headers"], json.loads(response["body"])


def test_post_jobs_stores_the_job_and_sends_its_message(deployment: Deployment) -> None:
    status, _, accepted = invoke(post_jobs(producer_token()))

    assert status == 202
    assert accepted["status"] == "queued"
    job = deployment.job(accepted["job_id"])
    assert job.status is JobStatus.QUEUED
    [message] = deployment.messages()
    assert json.loads(message.body)["payload"] == {"text": "hello, lambda"}
    assert json.loads(message.body)["job_id"] == accepted["job_id"]
    outbox = wiring.open_outbox(deployment.url)
    assert outbox.count() == 0, "a sent message leaves nothing in the outbox"
    outbox.close()


def test_get_job_reads_it_from_the_job_table(deployment: Deployment) -> None:
    token = producer_token()
    _, _, accepted = invoke(post_jobs(token))

    status, _, job = invoke(get_job(token, accepted["job_id"]))

    assert status == 200
    assert (job["job_id"], job["status"]) == (accepted["job_id"], "queued")


def test_a_bad_token_is_401_problem_json_and_creates_nothing(deployment: Deployment) -> None:
    forged = mint_token(secret=b"x" * 48, tenant="acme", roles=["producer"], subject="alice")

    status, headers, problem = invoke(post_jobs(forged))

    assert status == 401
    assert headers["content-type"] == "application/problem+json"
    assert problem["status"] == 401
    assert deployment.messages() == []


def test_with_the_queue_down_the_job_waits_in_the_outbox_and_one_drain_sends_it(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_sqs = SqsQueues(region=REGION, endpoint_url=f"http://127.0.0.1:{_free_port()}")
    with monkeypatch.context() as outage:
        outage.setattr(aws_lambda.wiring, "open_queues", lambda url: dead_sqs)
        status, _, accepted = invoke(post_jobs(producer_token()))
    dead_sqs.close()
    assert status == 202
    assert deployment.job(accepted["job_id"]).status is JobStatus.QUEUED

    # The queue is back; a minute later the schedule runs the drain in a new container.
    fresh_container()
    monkeypatch.setattr(aws_lambda.wiring, "open_outbox", later_outbox(CLAIM_SECONDS + 1))
    drains = [aws_lambda.outbox_handler({}, context()) for _ in range(2)]

    assert drains == [{"sent": 1, "kept": 0}, {"sent": 0, "kept": 0}]
    [message] = deployment.messages()
    assert json.loads(message.body)["job_id"] == accepted["job_id"]
    assert deployment.job(accepted["job_id"]).status is JobStatus.QUEUED


def later_outbox(seconds: float) -> Any:
    """``wiring.open_outbox``, on a clock ``seconds`` ahead: the API's claim has lapsed."""
    opened = wiring.open_outbox

    def open_outbox(url: str | None = None) -> DynamoOutbox:
        outbox = opened(url)
        assert isinstance(outbox, DynamoOutbox)
        outbox._clock = lambda: time.time() + seconds
        return outbox

    return open_outbox


def test_a_send_its_queue_refuses_does_not_hold_up_the_others(deployment: Deployment) -> None:
    outbox = wiring.open_outbox(deployment.url)
    for queue in (f"{deployment.queue}-deleted", deployment.queue):
        outbox.add(PendingSend(id=uuid.uuid4().hex, queue=queue, body="{}"), claim_seconds=0)
    outbox.close()

    drained = aws_lambda.outbox_handler({}, context())

    assert drained == {"sent": 1, "kept": 1}
    assert [m.body for m in deployment.messages()] == ["{}"]
