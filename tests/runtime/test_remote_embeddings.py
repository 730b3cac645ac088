"""The private-embeddings example with an OpenAI-compatible endpoint (a real HTTP server on
127.0.0.1) through a real worker and its handler processes: vectors come from the endpoint,
a 429's ``Retry-After`` is waited out, what keeps failing is dead-lettered with
``EMBEDDING_API_ERROR`` / ``EMBEDDING_API_TIMEOUT`` or, with the fallback, embedded by the
local model and counted; another model is refused rather than mixed into the collection;
the API key never reaches a log or the data directory.
"""

from __future__ import annotations

import base64
import logging
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

# `app` is re-exported: handler processes find it here (APP_PATH).
from examples.private_embeddings.app import BUCKET, COLLECTION, QUEUE, app  # noqa: F401

from tests.runtime.conftest import wait_for
from tests.runtime.example_worker import upload_worker
from tests.runtime.openai_embeddings_server import EmbeddingsServer, embeddings_server
from tests.runtime.quick_retries import shorten_upload_retries
from vaultq import wiring
from vaultq.client import upload_messages
from vaultq.embeddings import LocalSentenceModel
from vaultq.embeddings.pipeline import search_sealed, vector_key
from vaultq.jobs.protocol import JobKey
from vaultq.observe.protocol import EMBEDDING_BATCHES
from vaultq.privacy.keys import generate_worker_key
from vaultq.vectors.embedded import EmbeddedVectors

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from vaultq.blobs.protocol import BlobStore
    from vaultq.jobs.protocol import Job, JobStore
    from vaultq.privacy.keys import WorkerKey
    from vaultq.queues.protocol import ReceivedMessage
    from vaultq.queues.sqlite import SqliteQueues

#: Handler processes import this module to find the app; with this variable set they log
#: everything (DEBUG) to the file it names, so the tests can read their logs.
HANDLER_LOG_VARIABLE = "VAULTQ_TEST_HANDLER_LOG"
if os.environ.get(HANDLER_LOG_VARIABLE):
    logging.basicConfig(level=logging.DEBUG, filename=os.environ[HANDLER_LOG_VARIABLE])

pytestmark = pytest.mark.model

APP_PATH = "tests.runtime.test_remote_embeddings:app"
DLQ = f"{QUEUE}-dlq"
TENANT = "tenant-r"
TENANT_KEY = os.urandom(32)
#: What a TEI or vLLM server calls the local model; the endpoint serves its vectors.
SERVED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
REMOTE = f"openai-compatible:{SERVED_MODEL}"
LOCAL = "all-MiniLM-L6-v2"
API_KEY = f"sk-test-{uuid.uuid4().hex}"
TOPICS = ["sailing boats", "sourdough bread", "tax returns", "mountain hiking", "jazz piano"]


def texts(count: int, prefix: str) -> list[tuple[str, str]]:
    return [(f"{prefix}-{n}", f"A note about {TOPICS[n % 5]}, number {n}.") for n in range(count)]


@dataclass
class Deployment:
    root: Path
    queues: SqliteQueues
    blobs: BlobStore
    jobs: JobStore
    key: WorkerKey
    server: EmbeddingsServer

    def upload(self, messages: list[tuple[str, str]]) -> str:
        receipt = upload_messages(
            self.blobs,
            messages,
            bucket=BUCKET,
            public_key=self.key.public_key,
            tenant=TENANT,
            vector_key=TENANT_KEY,
            jobs=self.jobs,
            client_id="alice",
        )
        return receipt.job_id

    def finished(self, job_id: str) -> Job:
        key = JobKey(tenant_id=TENANT, client_id="alice", job_id=job_id)

        def done() -> Job | None:
            job = self.jobs.get(key)
            return job if job is not None and job.status.is_terminal else None

        found: Job = wait_for(done, timeout_seconds=90)
        return found

    def stored_models(self) -> dict[str, str]:
        vectors = EmbeddedVectors(self.root / "vectors.db")
        try:
            page = vectors.sealed_items(COLLECTION, tenant=TENANT, limit=1000)
        finally:
            vectors.close()
        return {item.message_id: str(item.metadata["model"]) for item in page.items}

    def embedding_batches(self) -> dict[tuple[str, str], tuple[int, float]]:
        metrics = wiring.open_metrics(f"sqlite:///{self.root}/vaultq.db")
        try:
            totals = metrics.totals()
        finally:
            metrics.close()
        return {
            (t.labels["model"], t.labels["fallback"]): (t.count, t.sum)
            for t in totals
            if t.name == EMBEDDING_BATCHES
        }

    def dead_letter_of(self, job_id: str) -> ReceivedMessage:
        def find() -> ReceivedMessage | None:
            for message in self.queues.receive(DLQ, max_messages=10):
                if job_id in message.body:
                    return message
            return None

        found: ReceivedMessage = wait_for(find, timeout_seconds=90)
        return found


@pytest.fixture(scope="module")
def model() -> LocalSentenceModel:
    local = LocalSentenceModel()
    local.embed(["warm up"])  # the first encode is slow: the server's answers must not be
    return local


def deploy(
    tmp_path_factory: pytest.TempPathFactory, model: LocalSentenceModel, **settings: str
) -> Iterator[Deployment]:
    """Both module fixtures' variables stay set while the module runs, and handler
    processes start with what is set then: each deployment sets every variable it needs."""
    root = tmp_path_factory.mktemp("remote-embeddings")
    key_file = tmp_path_factory.mktemp("secrets") / "api-key"  # outside the data directory
    key_file.write_text(f"{API_KEY}\n")
    url = f"sqlite:///{root}/vaultq.db"
    worker_key = generate_worker_key()
    with (
        embeddings_server(model.embed, dimension=model.dimension) as server,
        pytest.MonkeyPatch.context() as env,
    ):
        variables = {
            "VAULTQ_URL": url,
            "VAULTQ_WORKER_KEYS": base64.b64encode(worker_key.private_key).decode(),
            HANDLER_LOG_VARIABLE: str(root / "handler.log"),
            "VAULTQ_EMBEDDINGS_URL": server.url,
            "VAULTQ_EMBEDDINGS_MODEL": SERVED_MODEL,
            "VAULTQ_EMBEDDINGS_DIMENSION": str(model.dimension),
            "VAULTQ_EMBEDDINGS_API_KEY_FILE": str(key_file),
            # Room for the server's model under a loaded CI machine; "slow" answers later.
            "VAULTQ_EMBEDDINGS_TIMEOUT_SECONDS": "2",
            "VAULTQ_EMBEDDINGS_MAX_ATTEMPTS": "2",
            # Once open, the circuit stays open for the module.
            "VAULTQ_EMBEDDINGS_RETRY_REMOTE_AFTER_SECONDS": "600",
            **settings,
        }
        for name, value in variables.items():
            env.setenv(name, value)
        shorten_upload_retries(env)
        jobs = wiring.open_jobs(url)
        with upload_worker(url, root / "vaultq.db", app_path=APP_PATH) as (queues, blobs):
            try:
                yield Deployment(root, queues, blobs, jobs, worker_key, server)
            finally:
                jobs.close()


@pytest.fixture(scope="module")
def remote_only(
    tmp_path_factory: pytest.TempPathFactory, model: LocalSentenceModel
) -> Iterator[Deployment]:
    yield from deploy(tmp_path_factory, model, VAULTQ_EMBEDDINGS_FALLBACK="none")


@pytest.fixture(scope="module")
def with_fallback(
    tmp_path_factory: pytest.TempPathFactory, model: LocalSentenceModel
) -> Iterator[Deployment]:
    # The circuit stays open for the whole test once it opened.
    yield from deploy(tmp_path_factory, model, VAULTQ_EMBEDDINGS_FALLBACK="local")


def test_uploads_are_embedded_by_the_endpoint_and_its_key_reaches_no_log_or_file(
    remote_only: Deployment, model: LocalSentenceModel, capfd: pytest.CaptureFixture[str]
) -> None:
    remote_only.server.mode = "ok"
    messages = texts(6, "ok")

    job = remote_only.finished(remote_only.upload(messages))

    assert job.status.value == "succeeded"
    assert job.result == {"messages_embedded": 6, "model": REMOTE, "fallback_messages": 0}
    stored = remote_only.stored_models()
    assert stored == {message_id: REMOTE for message_id, _ in messages}
    # The endpoint's vectors are searchable with the local model's: one space.
    vectors = EmbeddedVectors(remote_only.root / "vectors.db")
    try:
        hits = search_sealed(
            vectors,
            COLLECTION,
            key=vector_key(TENANT_KEY, tenant=TENANT),
            query_vector=model.embed([messages[3][1]])[0],
            k=1,
        )
    finally:
        vectors.close()
    assert hits[0][0] == "ok-3" and hits[0][1] > 0.99
    assert {r.authorization for r in remote_only.server.requests} == {f"Bearer {API_KEY}"}
    logs = (remote_only.root / "handler.log").read_text() + "".join(capfd.readouterr())
    files = b"".join(p.read_bytes() for p in remote_only.root.rglob("*") if p.is_file())
    assert "/v1/embeddings" in logs  # the scan does see the requests' log lines
    assert API_KEY not in logs
    assert API_KEY.encode() not in files


def test_a_429_is_retried_after_its_retry_after(remote_only: Deployment) -> None:
    remote_only.server.mode = "429-once"
    sent_before = len(remote_only.server.requests)

    job = remote_only.finished(remote_only.upload(texts(2, "throttled")))

    refused, accepted = remote_only.server.requests[sent_before:]
    assert job.status.value == "succeeded"
    assert accepted.at - refused.at >= 1.0  # Retry-After: 1
    assert remote_only.stored_models()["throttled-1"] == REMOTE


@pytest.mark.parametrize(
    ("mode", "reason"), [("503", "EMBEDDING_API_ERROR"), ("slow", "EMBEDDING_API_TIMEOUT")]
)
def test_an_endpoint_that_keeps_failing_dead_letters_the_upload(
    remote_only: Deployment, mode: str, reason: str
) -> None:
    remote_only.server.mode = mode  # type: ignore[assignment]
    sent_before = len(remote_only.server.requests)
    messages = texts(2, f"failing-{mode}")

    job_id = remote_only.upload(messages)
    dead = remote_only.dead_letter_of(job_id)
    job = remote_only.finished(job_id)

    assert dead.dead_letter is not None
    assert dead.dead_letter.reason == reason
    assert dead.dead_letter.receive_count == 3
    assert len(remote_only.server.requests) - sent_before == 3 * 2  # 3 receives, 2 attempts
    assert job.status.value == "dead_lettered" and job.error == reason
    assert not set(remote_only.stored_models()) & {message_id for message_id, _ in messages}


@pytest.fixture(scope="module")
def unchecked_fallback(
    tmp_path_factory: pytest.TempPathFactory, model: LocalSentenceModel
) -> Iterator[Deployment]:
    """A deployment whose endpoint has not been checked yet: the check runs once per
    process, on the endpoint's first answer."""
    yield from deploy(tmp_path_factory, model, VAULTQ_EMBEDDINGS_FALLBACK="local")


def test_an_endpoint_serving_another_model_is_refused_rather_than_mixed(
    unchecked_fallback: Deployment,
) -> None:
    unchecked_fallback.server.mode = "other-model"

    job_id = unchecked_fallback.upload(texts(3, "other"))
    dead = unchecked_fallback.dead_letter_of(job_id)

    assert dead.dead_letter is not None
    assert dead.dead_letter.reason == "INVALID_SETTINGS"
    assert dead.dead_letter.receive_count == 1  # no retry changes the settings
    assert "different models" in (dead.dead_letter.last_error or "")
    assert unchecked_fallback.stored_models() == {}


def test_batches_the_endpoint_fails_are_embedded_locally_and_counted(
    with_fallback: Deployment,
) -> None:
    with_fallback.server.mode = "ok"
    first = with_fallback.finished(with_fallback.upload(texts(2, "before")))
    with_fallback.server.mode = "503"
    sent_before = len(with_fallback.server.requests)

    failed_over = with_fallback.finished(with_fallback.upload(texts(3, "during")))
    sent_during = len(with_fallback.server.requests) - sent_before
    # The circuit is open: the next upload goes to the local model without a request.
    after = with_fallback.finished(with_fallback.upload(texts(2, "after")))

    assert first.result == {"messages_embedded": 2, "model": REMOTE, "fallback_messages": 0}
    assert failed_over.result == {"messages_embedded": 3, "model": LOCAL, "fallback_messages": 3}
    assert after.result == {"messages_embedded": 2, "model": LOCAL, "fallback_messages": 2}
    assert sent_during == 2  # the batch's attempts, then the local model
    assert len(with_fallback.server.requests) - sent_before == 2
    stored = with_fallback.stored_models()
    assert {stored["before-0"], stored["during-0"], stored["after-1"]} == {REMOTE, LOCAL}
    assert stored["during-2"] == LOCAL and stored["before-1"] == REMOTE
    log = (with_fallback.root / "handler.log").read_text()
    assert "3 messages embedded by the fallback all-MiniLM-L6-v2" in log
    assert API_KEY not in log
    # Batches and messages per model, fallbacks apart, as /metrics exports them.
    assert wait_for(
        lambda: (
            with_fallback.embedding_batches()
            == {
                (REMOTE, "false"): (1, 2.0),
                (LOCAL, "true"): (2, 5.0),
            }
        )
    )
