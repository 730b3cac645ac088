"""The private-embeddings example on pgvector, chosen by settings alone: `vaultq up` with
``VAULTQ_VECTORS_URL`` at PostgreSQL and an indexed collection named by
``VAULTQ_EMBEDDINGS_COLLECTION`` and ``..._MODE``; real worker, model and HTTP search."""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING, Any

import pytest
from examples.private_embeddings.app import BUCKET, PUBLIC_KEY_VARIABLE, app

from tests.api.conftest import start_server, token, wait_for
from tests.contract.vectors_fixtures import (  # noqa: F401 (fixtures register by name)
    pgvector_open_vectors_fixture,
    pgvector_server_fixture,
)
from vaultq import errors, wiring
from vaultq.client import upload_messages, wrap_vector_key_for
from vaultq.privacy.keys import generate_worker_key
from vaultq.queues.sqlite import SqliteQueues
from vaultq.vectors import Mode

if TYPE_CHECKING:
    from pathlib import Path

    import httpx2 as httpx

    from vaultq.vectors import VectorStore

# Two handler processes load the model (uploads, then requests) on a loaded 2-core machine.
pytestmark = [pytest.mark.model, pytest.mark.timeout(240)]

APP = "examples.private_embeddings.app:app"
COLLECTION = "notes_indexed"
TOPICS = ["sailing boats", "sourdough bread", "tax returns", "mountain hiking", "jazz piano"]
MESSAGES = [(f"msg-{n}", f"Some thoughts about {topic}.") for n, topic in enumerate(TOPICS)]


def stored(vectors: VectorStore) -> int:
    try:
        return vectors.count(COLLECTION, tenant="acme")
    except errors.CollectionNotFound:
        return 0  # the worker makes it on its first upload


def finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return job if job["status"] not in {"queued", "processing"} else None

    found: dict[str, Any] = wait_for(done, timeout_seconds=150)
    return found


def test_the_example_embeds_into_and_searches_an_indexed_pgvector_collection(
    tmp_path: Path, pgvector_open_vectors: Any
) -> None:
    key = generate_worker_key()
    server = start_server(
        tmp_path,
        app=APP,
        VAULTQ_WORKER_KEYS=base64.b64encode(key.private_key).decode(),
        VAULTQ_VECTORS_URL=pgvector_open_vectors.uri,
        VAULTQ_EMBEDDINGS_COLLECTION=COLLECTION,
        VAULTQ_EMBEDDINGS_MODE="indexed",
        **{PUBLIC_KEY_VARIABLE: base64.b64encode(key.public_key).decode()},
    )
    queues = SqliteQueues(tmp_path / "vaultq.db")
    blobs = wiring.open_blobs(f"sqlite:///{tmp_path}/vaultq.db", notifier=app.notifier(queues))
    vectors = pgvector_open_vectors()
    try:
        app.provision(queues, blobs)
        # No vector key: an indexed collection stores the vectors in clear.
        upload_messages(blobs, MESSAGES, bucket=BUCKET, public_key=key.public_key, tenant="acme")
        wait_for(lambda: stored(vectors) == len(MESSAGES), timeout_seconds=150)
        client = server.client(token("acme"))
        # The route asks for a vector key, which an indexed collection does not use.
        unused = wrap_vector_key_for(os.urandom(32), public_key=key.public_key, tenant="acme")
        body = {"query": "a sourdough loaf from my oven", "k": 2, "vector_key": unused.as_json()}
        job_id = client.post("/api/v1/search", json=body).json()["job_id"]
        job = finished(client, job_id)
    finally:
        blobs.close()
        queues.close()
        server.stop()

    assert vectors.collection(COLLECTION).mode is Mode.INDEXED
    assert job["status"] == "succeeded", job
    assert job["result"]["results"][0]["message_id"] == "msg-1"
    # Nothing went to a local file: every worker shares the PostgreSQL store.
    assert not list(tmp_path.rglob("vectors.db"))
