"""The private-embeddings API end to end: `vaultq up` on the example app, real worker and
model; tracked uploads, search and generate over HTTP, tenant isolation, and a search
query that never lands anywhere in clear."""

from __future__ import annotations

import base64
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest
from examples.private_embeddings.app import BUCKET, COLLECTION, PUBLIC_KEY_VARIABLE, app

from tests.api.conftest import start_server, token, wait_for
from vaultq import wiring
from vaultq.client import (
    SealedMessage,
    seal_messages,
    seal_query,
    upload_key,
    upload_messages,
    wrap_vector_key_for,
)
from vaultq.jobs.protocol import JobKey
from vaultq.privacy.keys import Kem, generate_worker_key
from vaultq.queues.sqlite import SqliteQueues
from vaultq.vectors.embedded import EmbeddedVectors

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import httpx2 as httpx

    from tests.api.conftest import Server
    from vaultq.blobs.protocol import BlobStore
    from vaultq.jobs.protocol import JobStore
    from vaultq.privacy.keys import WorkerKey

pytestmark = pytest.mark.model

APP = "examples.private_embeddings.app:app"
TOPICS = ["sailing boats", "sourdough bread", "tax returns", "mountain hiking", "jazz piano"]
MESSAGES = [(f"msg-{n}", f"Some thoughts about {topic}.") for n, topic in enumerate(TOPICS)]
#: Normal generate requests queued ahead of a high one.
BACKLOG = 20
#: Each tenant's vector key, kept by its client only.
VECTOR_KEYS = {"acme": os.urandom(32), "rival": os.urandom(32)}


@dataclass
class Deployment:
    server: Server
    key: WorkerKey
    #: A hybrid post-quantum key in the same ring.
    hybrid: WorkerKey
    upload_job: str
    blobs: BlobStore
    jobs: JobStore

    def client(self, tenant: str = "acme") -> httpx.Client:
        return self.server.client(token(tenant))

    def vectors(self) -> EmbeddedVectors:
        return EmbeddedVectors(self.server.data / "vectors.db")

    def vector_key(self, tenant: str = "acme", key: bytes | None = None) -> dict[str, str]:
        """``tenant``'s vector key (or ``key``) wrapped for one new request."""
        return wrap_vector_key_for(
            VECTOR_KEYS[tenant] if key is None else key,
            public_key=self.key.public_key,
            tenant=tenant,
        ).as_json()


def finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return job if job["status"] not in {"queued", "processing"} else None

    found: dict[str, Any] = wait_for(done, timeout_seconds=90)
    return found


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Tenant acme's messages uploaded as a tracked job; tenant rival's identical texts
    under ids of its own, untracked."""
    data = tmp_path_factory.mktemp("embeddings-api")
    key = generate_worker_key()
    hybrid = generate_worker_key(kem=Kem.MLKEM768_X25519)
    hybrid_entry = f"{hybrid.kem}:{base64.b64encode(hybrid.private_key).decode()}"
    ring = [base64.b64encode(key.private_key).decode(), hybrid_entry]
    server = start_server(
        data,
        app=APP,
        VAULTQ_WORKER_KEYS=" ".join(ring),
        **{PUBLIC_KEY_VARIABLE: base64.b64encode(key.public_key).decode()},
    )
    url = f"sqlite:///{data}/vaultq.db"
    queues = SqliteQueues(data / "vaultq.db")
    blobs = wiring.open_blobs(url, notifier=app.notifier(queues))
    jobs = wiring.open_jobs(url)
    try:
        app.provision(queues, blobs)
        receipt = upload_messages(
            blobs,
            MESSAGES,
            bucket=BUCKET,
            public_key=key.public_key,
            tenant="acme",
            vector_key=VECTOR_KEYS["acme"],
            jobs=jobs,
            client_id="alice",  # the subject acme's tokens carry: GET /jobs finds it
        )
        rival = [(f"rival-{message_id}", text) for message_id, text in MESSAGES]
        upload_messages(
            blobs,
            rival,
            bucket=BUCKET,
            public_key=key.public_key,
            tenant="rival",
            vector_key=VECTOR_KEYS["rival"],
        )
        yield Deployment(
            server=server,
            key=key,
            hybrid=hybrid,
            upload_job=receipt.job_id,
            blobs=blobs,
            jobs=jobs,
        )
    finally:
        jobs.close()
        blobs.close()
        queues.close()
        server.stop()


def search(deployment: Deployment, body: dict[str, Any], tenant: str = "acme") -> dict[str, Any]:
    """Search as ``tenant``; a plain ``query`` gets the tenant's wrapped vector key unless
    ``body`` names one."""
    if "query" in body:
        body = {"vector_key": deployment.vector_key(tenant), **body}
    client = deployment.client(tenant)
    accepted = client.post("/api/v1/search", json=body)
    # A search that failed while the request waited is a problem naming its job.
    assert accepted.status_code in {200, 202, 422}, accepted.text
    return finished(client, accepted.json()["job_id"])


def rival_indexed(deployment: Deployment) -> None:
    vectors = deployment.vectors()
    try:
        wait_for(
            lambda: vectors.count(COLLECTION, tenant="rival") == len(MESSAGES), timeout_seconds=90
        )
    finally:
        vectors.close()


def test_a_tracked_upload_reports_its_progress_and_result(deployment: Deployment) -> None:
    job = finished(deployment.client(), deployment.upload_job)

    assert job["status"] == "succeeded"
    assert job["progress"] == 1.0
    assert job["result"] == {
        "messages_embedded": len(MESSAGES),
        "model": "all-MiniLM-L6-v2",
        "fallback_messages": 0,
    }


def test_a_tampered_tracked_upload_dead_letters_its_job_without_retrying(
    deployment: Deployment,
) -> None:
    upload = seal_messages(
        [("t-0", "an ordinary note")],
        public_key=deployment.key.public_key,
        tenant="acme",
        vector_key=VECTOR_KEYS["acme"],
    )
    changed = bytearray(upload.messages[0].sealed)
    changed[20] ^= 0x01
    tampered = replace(
        upload,
        client_id="alice",
        messages=(SealedMessage(message_id="t-0", sealed=bytes(changed)),),
    )
    assert tampered.job_key is not None
    deployment.jobs.create(tampered.job_key)

    deployment.blobs.put(BUCKET, tampered.object_key, tampered.to_json())
    job = finished(deployment.client(), tampered.job_id)

    assert job["status"] == "dead_lettered"
    assert job["error"] == "DECRYPTION_FAILED"


def test_search_ranks_only_the_callers_messages(deployment: Deployment) -> None:
    finished(deployment.client(), deployment.upload_job)
    rival_indexed(deployment)

    job = search(deployment, {"query": "a sourdough loaf from my oven", "k": 3})

    assert job["status"] == "succeeded"
    hits = job["result"]["results"]
    assert hits[0]["message_id"] == "msg-1"
    assert len(hits) == 3
    assert all(hit["message_id"].startswith("msg-") for hit in hits)
    assert hits[0]["score"] > hits[1]["score"] >= hits[2]["score"]


def test_a_search_on_a_warm_worker_answers_with_its_results_at_once(
    deployment: Deployment,
) -> None:
    search(deployment, {"query": "warm up", "k": 1})
    client = deployment.client()

    body = {"query": "hiking in the mountains", "vector_key": deployment.vector_key(), "k": 1}
    answer = client.post("/api/v1/search", json=body)

    assert answer.status_code == 200
    assert answer.json()["status"] == "succeeded"
    assert answer.json()["result"]["results"][0]["message_id"] == "msg-3"
    assert answer.headers["Location"] == f"/jobs/{answer.json()['job_id']}"


def test_a_query_sealed_by_the_client_is_searched_for_its_tenant_only(
    deployment: Deployment,
) -> None:
    finished(deployment.client(), deployment.upload_job)
    for_acme = seal_query(
        "jazz piano",
        public_key=deployment.key.public_key,
        tenant="acme",
        vector_key=VECTOR_KEYS["acme"],
    )

    found = search(deployment, {"sealed_query": for_acme.as_json(), "k": 1})
    # The same sealed query replayed by another tenant does not open.
    replayed = search(deployment, {"sealed_query": for_acme.as_json(), "k": 1}, tenant="rival")

    assert found["result"]["results"][0]["message_id"] == "msg-4"
    assert replayed["status"] == "dead_lettered"
    assert replayed["result"] is None
    assert "DECRYPTION_FAILED" in replayed["error"]


def test_requests_sealed_to_a_hybrid_worker_key_are_served(deployment: Deployment) -> None:
    # A hybrid wrapped key is ~1,600 base64 characters, twelve times a classic one.
    finished(deployment.client(), deployment.upload_job)
    vector_key = wrap_vector_key_for(
        VECTOR_KEYS["acme"], public_key=deployment.hybrid.public_key, tenant="acme"
    ).as_json()
    query = seal_query(
        "jazz piano",
        public_key=deployment.hybrid.public_key,
        tenant="acme",
        vector_key=VECTOR_KEYS["acme"],
    )
    client = deployment.client()

    accepted = client.post(
        "/api/v1/embeddings/generate", json={"message_ids": ["msg-4"], "vector_key": vector_key}
    )
    assert accepted.status_code == 202, accepted.text
    generated = finished(client, accepted.json()["job_id"])
    found = search(deployment, {"sealed_query": query.as_json(), "k": 1})

    assert len(vector_key["wrapped_key"]) > 1000
    assert generated["status"] == "succeeded"
    assert found["result"]["results"][0]["message_id"] == "msg-4"


def test_a_vector_key_wrapped_for_another_tenant_or_a_wrong_key_fails_the_search_cleanly(
    deployment: Deployment,
) -> None:
    finished(deployment.client(), deployment.upload_job)
    rival_indexed(deployment)

    # Acme's wrapped vector key, replayed by rival: it opens for acme's request only.
    replayed = search(
        deployment, {"query": "jazz", "vector_key": deployment.vector_key("acme"), "k": 1}, "rival"
    )
    # Acme's own request, wrapped right, but with a key that sealed none of its vectors.
    wrong = search(
        deployment, {"query": "jazz", "vector_key": deployment.vector_key(key=os.urandom(32))}
    )

    for job, reason in ((replayed, "DECRYPTION_FAILED"), (wrong, "VECTOR_KEY_MISMATCH")):
        assert job["status"] == "dead_lettered"
        assert job["result"] is None
        assert job["error"].startswith(reason)
        assert job["error"].count(reason) == 1, "the reason is stated once"


def test_a_search_that_fails_while_it_waits_is_answered_as_the_callers_error(
    deployment: Deployment,
) -> None:
    rival_indexed(deployment)
    search(deployment, {"query": "warm up", "k": 1}, tenant="rival")
    # Acme's wrapped vector key, replayed by rival: it opens for acme's request only.
    body = {"query": "jazz", "vector_key": deployment.vector_key("acme"), "k": 1}

    refused = deployment.client("rival").post("/api/v1/search", json=body)

    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["code"] == "DECRYPTION_FAILED"
    job = deployment.client("rival").get(f"/jobs/{problem['job_id']}").json()
    assert (problem["job_status"], job["status"]) == ("dead_lettered", "dead_lettered")


def test_a_tracked_upload_at_another_tenants_key_dead_letters_the_job_at_that_key(
    deployment: Deployment,
) -> None:
    """The handler fails before the document names its job: the job is found from the
    object's key (tenant and job id) rather than left queued."""
    document = seal_messages(
        [("m-0", "an ordinary note")],
        public_key=deployment.key.public_key,
        tenant="rival",
        vector_key=VECTOR_KEYS["rival"],
    )
    deployment.jobs.create(JobKey(tenant_id="acme", client_id="alice", job_id=document.job_id))

    deployment.blobs.put(
        BUCKET, upload_key(tenant="acme", job_id=document.job_id), document.to_json()
    )
    job = finished(deployment.client(), document.job_id)

    assert (job["status"], job["error"]) == ("dead_lettered", "INVALID_UPLOAD")


def test_an_api_without_the_worker_public_key_is_not_ready_and_says_why(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path, app=APP, workers=0, **{PUBLIC_KEY_VARIABLE: ""})
    try:
        client = server.client(token("acme"))
        body = {
            "query": "jazz",
            "vector_key": wrap_vector_key_for(
                os.urandom(32), public_key=generate_worker_key().public_key, tenant="acme"
            ).as_json(),
        }

        searched = client.post("/api/v1/search", json=body)
        ready = client.get("/readyz")
    finally:
        server.stop()

    assert searched.status_code == 500
    assert searched.json()["code"] == "WORKER_PUBLIC_KEY_MISSING"
    assert ready.status_code == 503
    assert PUBLIC_KEY_VARIABLE in ready.json()["detail"]


def test_generate_reembeds_the_callers_messages_and_reports_unknown_ids(
    deployment: Deployment,
) -> None:
    finished(deployment.client(), deployment.upload_job)
    rival_indexed(deployment)
    vectors = deployment.vectors()
    try:
        assert vectors.delete(COLLECTION, tenant="acme", message_ids=["msg-0", "msg-2"]) == 2
        client = deployment.client()
        accepted = client.post(
            "/api/v1/embeddings/generate",
            json={
                "message_ids": ["msg-0", "rival-msg-1", "msg-2", "nope"],
                "priority": "high",
                "vector_key": deployment.vector_key(),
            },
        )
        assert accepted.status_code == 202
        job = finished(client, accepted.json()["job_id"])
        acme_count = vectors.count(COLLECTION, tenant="acme")
        rival_count = vectors.count(COLLECTION, tenant="rival")
    finally:
        vectors.close()

    assert job["status"] == "succeeded"
    result = job["result"]
    assert [r["message_id"] for r in result["results"]] == ["msg-0", "msg-2"]
    assert set(result["results"][0]) == {
        "message_id",
        "embedding_stored",
        "processing_time_ms",
        "model",
    }
    assert result["unknown_message_ids"] == ["rival-msg-1", "nope"]
    assert result["unopened_message_ids"] == {}
    assert result["priority"] == "high"
    assert (acme_count, rival_count) == (len(MESSAGES), len(MESSAGES))
    assert job["progress"] == 1.0


def test_a_high_priority_request_overtakes_a_backlog_of_normal_ones(
    deployment: Deployment,
) -> None:
    client = deployment.client()
    finished(client, deployment.upload_job)

    def generate(priority: str) -> str:
        body = {
            "message_ids": [message_id for message_id, _ in MESSAGES],
            "priority": priority,
            "vector_key": deployment.vector_key(),
        }
        accepted = client.post("/api/v1/embeddings/generate", json=body)
        assert accepted.status_code == 202, accepted.text
        assert set(accepted.json()) == {"job_id", "status", "estimated_time_seconds"}
        job_id: str = accepted.json()["job_id"]
        return job_id

    # Warm both handler processes: a cold one spends seconds loading the model.
    for priority in ("normal", "high"):
        finished(client, generate(priority))
    # Submitted at once, so the backlog is queued before the normal handler drains it.
    with ThreadPoolExecutor(max_workers=8) as pool:
        backlog = list(pool.map(lambda _: generate("normal"), range(BACKLOG)))
    high = finished(client, generate("high"))
    drained = [finished(client, job_id) for job_id in backlog]

    assert high["status"] == "succeeded" and high["result"]["priority"] == "high"
    assert [job["status"] for job in drained] == ["succeeded"] * BACKLOG
    # Submitted last, it finished before most of the backlog (the jobs' own finish times,
    # so how fast this test polls cannot change the verdict).
    high_done = datetime.fromisoformat(high["updated_at"])
    overtaken = [job for job in drained if datetime.fromisoformat(job["updated_at"]) > high_done]
    assert len(overtaken) >= BACKLOG // 2, [job["updated_at"] for job in drained]


@pytest.mark.parametrize(
    ("path", "body", "location"),
    [
        ("/api/v1/search", {"query": "x", "k": 0}, "body.k"),
        ("/api/v1/search", {"query": "x", "k": 101}, "body.k"),
        ("/api/v1/search", {"query": "", "k": 3}, "body.query"),
        ("/api/v1/search", {"k": 3}, "body"),
        ("/api/v1/search", {"query": "x", "limit": 3}, "body.limit"),
        ("/api/v1/embeddings/generate", {"message_ids": []}, "body.message_ids"),
        (
            "/api/v1/embeddings/generate",
            {"message_ids": ["a", "a"], "vector_key": {"request_id": "r", "wrapped_key": "AA=="}},
            "body",
        ),
        ("/api/v1/embeddings/generate", {"message_ids": ["a/../b"]}, "body.message_ids.0"),
        ("/api/v1/embeddings/generate", {"message_ids": ["a"], "priority": "now"}, "body.priority"),
        # The tenant's wrapped vector key is required: the workers hold none of their own.
        ("/api/v1/embeddings/generate", {"message_ids": ["a"]}, "body.vector_key"),
        ("/api/v1/search", {"query": "x", "k": 3}, "body"),
        (
            "/api/v1/search",
            {"sealed_query": {"query_id": "q", "wrapped_key": "AA==", "sealed": "AA=="}},
            "body.sealed_query.wrapped_vector_key",
        ),
    ],
)
def test_malformed_requests_are_refused_before_any_job_exists(
    deployment: Deployment, path: str, body: dict[str, Any], location: str
) -> None:
    client = deployment.server.client(token("strict", subject=f"s-{uuid.uuid4().hex}"))

    refused = client.post(path, json=body)

    assert refused.status_code == 422
    assert refused.json()["code"] == "VALIDATION_ERROR"
    assert location in [error["location"] for error in refused.json()["errors"]]
    assert client.get("/jobs").json()["jobs"] == []


def test_a_search_query_is_never_written_in_clear(deployment: Deployment) -> None:
    finished(deployment.client(), deployment.upload_job)
    canary = f"canary-{uuid.uuid4().hex}"

    job = search(deployment, {"query": f"where did I put {canary}?", "k": 2})

    assert job["status"] == "succeeded"
    stored = b"".join(p.read_bytes() for p in deployment.server.data.rglob("*") if p.is_file())
    assert job["job_id"].encode() in stored  # the scan does see what the search wrote
    for form in (canary.encode(), canary.encode("utf-16-le"), base64.b64encode(canary.encode())):
        assert form not in stored
    # Nor is any tenant's vector key, in any usual encoding.
    for key in VECTOR_KEYS.values():
        for form in (key, key.hex().encode(), base64.b64encode(key)):
            assert form not in stored
