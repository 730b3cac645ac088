"""Authentication, roles and the tenant wall, over HTTP."""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING

import pytest

from tests.api.conftest import token
from vaultq.api.auth import mint_token

if TYPE_CHECKING:
    from tests.api.conftest import Server


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def unsigned_token() -> str:
    claims = {"sub": "eve", "tenant": "acme", "roles": ["admin"], "exp": int(time.time()) + 60}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


@pytest.mark.parametrize(
    "bad_token",
    [
        unsigned_token(),
        mint_token(secret=b"w" * 48, tenant="acme", roles=["admin"]),
        mint_token(
            secret=b"s" * 48,
            tenant="acme",
            roles=["admin"],
            expires_in_seconds=60,
            clock=lambda: time.time() - 3600,
        ),
        "not.a.jwt",
    ],
    ids=["alg-none", "wrong-secret", "expired", "garbage"],
)
def test_forged_or_expired_tokens_are_refused(server: Server, bad_token: str) -> None:
    response = server.client(bad_token).post("/jobs", json={"payload": 1})

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "invalid or expired token",
        "code": "UNAUTHENTICATED",
    }


def test_missing_token_is_refused(server: Server) -> None:
    assert server.client().get("/jobs").status_code == 401


def test_roles_give_least_privilege(server: Server) -> None:
    consumer = server.client(token("acme", "consumer"))
    producer = server.client(token("acme", "producer"))

    assert consumer.post("/jobs", json={"payload": 1}).status_code == 403
    assert producer.get("/queues/demo-jobs/stats").status_code == 403
    assert producer.get("/queues/demo-jobs/dead-letters").status_code == 403
    assert consumer.post("/queues/demo-jobs/dead-letters/redrive", json={}).status_code == 403
    assert consumer.get("/queues/demo-jobs/stats").status_code == 200


def test_another_tenant_cannot_see_read_list_or_cancel_a_job(server: Server) -> None:
    owner = server.client(token("acme", "producer", subject="shared-name"))
    job_id = owner.post("/jobs", json={"payload": {"secret": 1}}).json()["job_id"]
    for roles in (("producer",), ("consumer",), ("admin",)):
        intruder = server.client(token("globex", *roles, subject="shared-name"))

        assert intruder.get(f"/jobs/{job_id}").status_code == 404
        assert intruder.get(f"/jobs/{job_id}", params={"client": "shared-name"}).status_code in (
            403,
            404,
        )
        listed = intruder.get("/jobs", params={"client": "shared-name"})
        assert job_id not in json.dumps(listed.json())
        assert intruder.delete(f"/jobs/{job_id}").status_code in (403, 404)
    assert owner.get(f"/jobs/{job_id}").status_code == 200


def test_a_producer_reads_only_its_own_jobs(server: Server) -> None:
    alice = server.client(token("acme", "producer", subject="alice"))
    bob = server.client(token("acme", "producer", subject="bob"))
    job_id = alice.post("/jobs", json={"payload": 1}).json()["job_id"]

    assert bob.get(f"/jobs/{job_id}").status_code == 404
    assert bob.get(f"/jobs/{job_id}", params={"client": "alice"}).status_code == 403
    consumer = server.client(token("acme", "consumer"))
    assert consumer.get(f"/jobs/{job_id}", params={"client": "alice"}).status_code == 200
