"""Every operation of the OpenAPI schema, fuzzed against a real `vaultq up` with Schemathesis.

Whatever a generated request holds, the server must not fail (no 5xx), every error must be
problem details with a stable ``code``, and every response whose status the schema documents
must match the schema.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.api.conftest import start_server, token

if TYPE_CHECKING:
    from collections.abc import Iterator

    from schemathesis import Case, CheckContext, Response

    from tests.api.conftest import Server

PROBLEM = "application/problem+json"
TENANT = "fuzz"
#: Generated requests per operation in the fuzzing phase (the coverage phase adds its own).
MAX_EXAMPLES = 25
#: In CI the same requests every run, so a failure there reproduces locally with CI=true.
DETERMINISTIC = os.environ.get("CI", "").lower() == "true"


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
    running.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: Server) -> schemathesis.BaseSchema:
    bearer = token(TENANT, "producer", "consumer", "admin", subject="fuzzer")
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {bearer}"},
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": DETERMINISTIC,
                "database": "none",
            },
        }
    )
    return schemathesis.openapi.from_url(f"{fuzzed_server.base_url}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


def problem_details(ctx: CheckContext, response: Response, case: Case) -> bool | None:
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


@pytest.mark.slow
@schema.parametrize()
def test_every_operation_answers_within_its_schema_and_errors_as_problems(case: Case) -> None:
    # Given a request generated from the schema (valid or deliberately not), with a token
    # that may do everything
    # When it is sent to the real server
    # Then no 5xx, errors are problem details, and documented responses match the schema
    case.call_and_validate(
        checks=[not_a_server_error, response_schema_conformance, problem_details],
        timeout=30,
    )
