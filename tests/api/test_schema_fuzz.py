"""Every operation of the OpenAPI schema, fuzzed against a real `vaultq up` with Schemathesis.

Whatever a generated request holds, the server must not fail (no 5xx), every error must be
problem details with a stable ``code``, and every response whose status the schema documents
must match the schema, media type included.
"""

from __future__ import annotations

import json
import os
import signal
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.api.conftest import start_server, token, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx2 as httpx
    from schemathesis import Case, CheckContext, Response

    from tests.api.conftest import Server

PROBLEM = "application/problem+json"
TENANT = "fuzz"
#: Generated requests per operation in the fuzzing phase (the coverage phase adds its own).
MAX_EXAMPLES = 25
#: In CI the same requests every run, so a failure there reproduces locally with CI=true.
DETERMINISTIC = os.environ.get("CI", "").lower() == "true"
QUEUES = ["demo-jobs", "demo-jobs-dlq", "demo-uploads", "demo-uploads-dlq"]
BUCKET = "demo-uploads"
BLOB_KEY = "fuzz/report.txt"


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(
        tmp_path_factory.mktemp("fuzz"),
        # Limits high enough that the fuzzer never meets a 429 instead of the route it tests.
        VAULTQ_RATE_LIMIT_PER_SECOND="100000",
        VAULTQ_RATE_LIMIT_BURST="1000000",
        # The fuzzing tenant operates the deployment, so purging is reachable too.
        VAULTQ_OPERATOR_TENANT=TENANT,
    )
    yield running
    # SIGINT, as Ctrl-C: on the SIGTERM `stop` sends, `vaultq up` exits without stopping its
    # worker, which would outlive the test.
    running.process.send_signal(signal.SIGINT)
    running.process.wait(timeout=60)
    running.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: Server) -> schemathesis.BaseSchema:
    bearer = token(TENANT, "producer", "consumer", "admin", subject="fuzzer")
    job_ids = _seed(fuzzed_server.client(bearer))
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {bearer}"},
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": DETERMINISTIC,
                "database": "none",
            },
            # Names that exist, often enough to reach past the 404s into the routes' work.
            "dictionaries": {
                "queues": {"values": QUEUES},
                "buckets": {"values": [BUCKET]},
                "keys": {"values": [BLOB_KEY]},
                "jobs": {"values": job_ids},
            },
            "parameters": {
                "path.queue": {"dictionary": "queues", "probability": 0.7},
                "path.bucket": {"dictionary": "buckets", "probability": 0.7},
                "path.key": {"dictionary": "keys", "probability": 0.5},
                "body.key": {"dictionary": "keys", "probability": 0.5},
                "path.job_id": {"dictionary": "jobs", "probability": 0.5},
            },
        }
    )
    return schemathesis.openapi.from_url(f"{fuzzed_server.base_url}/openapi.json", config=config)


def _seed(client: httpx.Client) -> list[str]:
    """A succeeded job, a dead-lettered one (so dead letters exist) and a stored blob."""
    done = client.post("/jobs", json={"payload": {"seed": 1}}).json()["job_id"]
    dead = client.post("/jobs", json={"payload": {"fail": "always"}}).json()["job_id"]
    for job_id, status in ((done, "succeeded"), (dead, "dead_lettered")):
        wait_for(partial(_has_status, client, job_id, status))
    client.put(f"/blobs/{BUCKET}/{BLOB_KEY}", content=b"seed").raise_for_status()
    return [done, dead]


def _has_status(client: httpx.Client, job_id: str, status: str) -> bool:
    return bool(client.get(f"/jobs/{job_id}").json()["status"] == status)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # Schemathesis 4.32.5's `from_fixture` reads `node._nodeid`, which pytest 9.2 no longer
    # has; without it every lazily loaded schema test fails with an AttributeError.
    request.node._nodeid = request.node.nodeid


def problem_details(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every error is RFC 9457 problem details carrying a stable ``code``."""
    if response.status_code < 400:
        return None
    media_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    assert media_type == PROBLEM, (
        f"{response.status_code} answered as {media_type!r}, not {PROBLEM}"
    )
    body = json.loads(response.content)
    assert isinstance(body, dict), "the problem is not a JSON object"
    assert isinstance(body.get("code"), str), "the problem has no string `code`"
    assert body.get("status") == response.status_code, "the problem's status is not the response's"
    return None


# One item fuzzes every operation (~1,000 requests): its time is schemathesis generating
# cases on the CPU, ~60 s alone and several times that on a loaded machine.
@pytest.mark.timeout(600)
@pytest.mark.slow
@schema.parametrize()
def test_every_operation_answers_within_its_schema_and_errors_as_problems(case: Case[Any]) -> None:
    # Given a request generated from the schema (valid or deliberately not), with a token
    # that may do everything
    # When it is sent to the real server
    # Then no 5xx, errors are problem details, and documented responses match the schema
    # (without the media-type check a body of an undocumented media type is never validated)
    case.call_and_validate(
        checks=[
            not_a_server_error,
            content_type_conformance,
            response_schema_conformance,
            problem_details,
        ],
        timeout=30,
    )
