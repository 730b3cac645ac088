"""The private-embeddings example after its provider changed, through a real worker and its
handler process: a worker whose model is not the one the collection records fails the
upload's job as ``INVALID_SETTINGS``, naming both models, and stores no vector."""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING

import pytest

# `app` is re-exported: handler processes find it here (APP_PATH).
from examples.private_embeddings.app import BUCKET, COLLECTION, QUEUE, app  # noqa: F401

from tests.runtime.conftest import wait_for
from tests.runtime.example_worker import upload_worker
from vaultq import wiring
from vaultq.client import upload_messages
from vaultq.jobs.protocol import JobKey
from vaultq.privacy.keys import generate_worker_key
from vaultq.vectors.embedded import EmbeddedVectors

if TYPE_CHECKING:
    from pathlib import Path

    from vaultq.jobs.protocol import Job
    from vaultq.queues.protocol import ReceivedMessage

pytestmark = [pytest.mark.model, pytest.mark.slow]

APP_PATH = "tests.embeddings.test_example_model_swap:app"
TENANT = "tenant-s"
#: A model of the local model's dimension (384) that an endpoint served before.
ENDPOINT_MODEL = "openai-compatible:BAAI/bge-small-en-v1.5"
LOCAL = "all-MiniLM-L6-v2"


def test_a_worker_with_another_model_than_its_collection_fails_the_upload_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a collection of an endpoint's 384-dimension vectors
    vectors = EmbeddedVectors(tmp_path / "vectors.db")
    vectors.create_collection(COLLECTION, dimension=384, mode="sealed", model=ENDPOINT_MODEL)
    # When the deployment's worker comes up with the local model (384 dimensions too)
    for name in [n for n in os.environ if n.startswith("VAULTQ_EMBEDDINGS_")]:
        monkeypatch.delenv(name)
    url = f"sqlite:///{tmp_path}/vaultq.db"
    worker_key = generate_worker_key()
    monkeypatch.setenv("VAULTQ_URL", url)
    monkeypatch.setenv("VAULTQ_WORKER_KEYS", base64.b64encode(worker_key.private_key).decode())
    jobs = wiring.open_jobs(url)
    with upload_worker(url, tmp_path / "vaultq.db", app_path=APP_PATH) as (queues, blobs):
        try:
            receipt = upload_messages(
                blobs,
                [("m-1", "a note about sailing"), ("m-2", "a note about bread")],
                bucket=BUCKET,
                public_key=worker_key.public_key,
                tenant=TENANT,
                vector_key=os.urandom(32),
                jobs=jobs,
                client_id="alice",
            )
            key = JobKey(tenant_id=TENANT, client_id="alice", job_id=receipt.job_id)

            def finished() -> Job | None:
                job = jobs.get(key)
                return job if job is not None and job.status.is_terminal else None

            job: Job = wait_for(finished, timeout_seconds=90)
            dead: list[ReceivedMessage] = wait_for(
                lambda: queues.receive(f"{QUEUE}-dlq"), timeout_seconds=30
            )
        finally:
            jobs.close()

    # Then the job fails at once, saying which models disagree, and nothing is stored
    assert (job.status.value, job.error) == ("dead_lettered", "INVALID_SETTINGS")
    [message] = dead
    assert message.dead_letter is not None and message.dead_letter.receive_count == 1
    last_error = message.dead_letter.last_error or ""
    assert ENDPOINT_MODEL in last_error and LOCAL in last_error
    assert vectors.count(COLLECTION, tenant=TENANT) == 0
    vectors.close()
