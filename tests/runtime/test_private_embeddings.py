"""Private embeddings end to end: a sealed upload becomes sealed vectors, through a real
worker and handler processes, and no plaintext or data key lands anywhere on disk or in logs.
"""

from __future__ import annotations

import base64
import logging
import os
import time
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import pytest
from examples.private_embeddings.app import BUCKET, COLLECTION, QUEUE, app

from tests.runtime.conftest import wait_for
from tests.runtime.example_worker import upload_worker
from tests.runtime.quick_retries import shorten_upload_retries
from vaultq import wiring
from vaultq.client import (
    SealedMessage,
    SealedUpload,
    seal_messages,
    upload_messages,
    wrap_vector_key_for,
)
from vaultq.embeddings import LocalSentenceModel
from vaultq.embeddings.pipeline import (
    EmbeddingServices,
    open_vector,
    process_upload,
    regenerate,
    search_sealed,
    vector_key,
)
from vaultq.jobs.protocol import JobKey, JobStatus
from vaultq.jobs.sqlite import SqliteJobs
from vaultq.privacy.keys import KeyRing, generate_worker_key
from vaultq.runtime.backoff import retry_delay_seconds
from vaultq.runtime.jobs import JobHandle
from vaultq.vectors.embedded import EmbeddedVectors

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from vaultq.blobs.protocol import BlobStore
    from vaultq.privacy.keys import WorkerKey
    from vaultq.queues.protocol import ReceivedMessage
    from vaultq.queues.sqlite import SqliteQueues

#: Handler processes import this module to find the app; with this variable set they log
#: everything (DEBUG) to the file it names, so the canary test can read their logs.
HANDLER_LOG_VARIABLE = "VAULTQ_TEST_HANDLER_LOG"
if os.environ.get(HANDLER_LOG_VARIABLE):
    logging.basicConfig(level=logging.DEBUG, filename=os.environ[HANDLER_LOG_VARIABLE])

APP_PATH = "tests.runtime.test_private_embeddings:app"
# Handler processes load the model before their first batch: 81 s for 20 texts at a load
# average of 11 on 2 cores, two thirds of the suite's 120 s. Each wait ends once it holds.
pytestmark = pytest.mark.timeout(240)
DLQ = f"{QUEUE}-dlq"
TENANT = "tenant-a"
#: The tenant's vector key, as its client keeps it (never in the data directory).
TENANT_KEY = os.urandom(32)


def texts(count: int) -> list[tuple[str, str]]:
    topics = ["sailing boats", "sourdough bread", "tax returns", "mountain hiking", "jazz piano"]
    return [
        (f"msg-{n:03d}", f"Note {n}: thoughts about {topics[n % 5]}, number {n * 7919 % 101}.")
        for n in range(count)
    ]


@dataclass
class Flow:
    root: Path
    queues: SqliteQueues
    blobs: BlobStore
    key: WorkerKey

    def upload(self, messages: list[tuple[str, str]], *, tenant: str = TENANT) -> str:
        receipt = upload_messages(
            self.blobs,
            messages,
            bucket=BUCKET,
            public_key=self.key.public_key,
            key_id=self.key.key_id,
            tenant=tenant,
            vector_key=TENANT_KEY,
        )
        assert receipt.message_count == len(messages)
        return receipt.job_id

    def drained(self) -> bool:
        stats = self.queues.stats(QUEUE)
        return stats.visible == 0 and stats.in_flight == 0 and stats.delayed == 0

    def vectors(self) -> EmbeddedVectors:
        return EmbeddedVectors(self.root / "vectors.db")

    def sealed_by_id(self, vectors: EmbeddedVectors, tenant: str = TENANT) -> dict[str, bytes]:
        page = vectors.sealed_items(COLLECTION, tenant=tenant, limit=1000)
        return {item.message_id: item.sealed_vector for item in page.items}

    def dead_letter(self) -> ReceivedMessage:
        messages: list[ReceivedMessage] = wait_for(
            lambda: self.queues.receive(DLQ), timeout_seconds=60
        )
        assert len(messages) == 1
        return messages[0]


@pytest.fixture(scope="module")
def model() -> LocalSentenceModel:
    return LocalSentenceModel()


@pytest.fixture
def flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flow]:
    yield from run_flow(tmp_path, monkeypatch, worker_keys=True)


@pytest.fixture
def keyless_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flow]:
    """A worker started without ``VAULTQ_WORKER_KEYS`` (e.g. a misspelt variable)."""
    yield from run_flow(tmp_path, monkeypatch, worker_keys=False)


def run_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, worker_keys: bool
) -> Iterator[Flow]:
    url = f"sqlite:///{tmp_path}/vaultq.db"
    key = generate_worker_key()
    monkeypatch.setenv("VAULTQ_URL", url)
    if worker_keys:
        monkeypatch.setenv("VAULTQ_WORKER_KEYS", base64.b64encode(key.private_key).decode())
    else:
        monkeypatch.delenv("VAULTQ_WORKER_KEYS", raising=False)
    monkeypatch.setenv(HANDLER_LOG_VARIABLE, str(tmp_path / "handler.log"))
    shorten_upload_retries(monkeypatch)
    with upload_worker(url, tmp_path / "vaultq.db", app_path=APP_PATH) as (queues, blobs):
        yield Flow(root=tmp_path, queues=queues, blobs=blobs, key=key)


def test_uploaded_messages_become_sealed_vectors_searchable_by_their_text(
    flow: Flow, model: LocalSentenceModel
) -> None:
    messages = texts(20)
    flow.upload(messages)

    wait_for(flow.drained, timeout_seconds=90)

    vectors = flow.vectors()
    key = vector_key(TENANT_KEY, tenant=TENANT)
    query = model.embed([messages[7][1]])[0]
    try:
        assert vectors.count(COLLECTION, tenant=TENANT) == 20
        hits = search_sealed(vectors, COLLECTION, key=key, query_vector=query, k=3)
        stored = flow.sealed_by_id(vectors)["msg-007"]
    finally:
        vectors.close()
    assert hits[0][0] == "msg-007"
    assert hits[0][1] > 0.99
    # Sealed, not plain: the stored bytes do not hold the float32 vector.
    assert query.tobytes()[:64] not in stored
    assert open_vector(key, message_id="msg-007", sealed=stored) @ query > 0.99


def test_reprocessing_the_same_upload_changes_no_stored_vector(flow: Flow) -> None:
    job_id = flow.upload(texts(20))
    wait_for(flow.drained, timeout_seconds=90)
    vectors = flow.vectors()
    before = flow.sealed_by_id(vectors)
    object_key = f"jobs/{TENANT}/{job_id}.json"
    data, _ = flow.blobs.get(BUCKET, object_key)

    flow.blobs.put(BUCKET, object_key, data, content_type="application/json")
    wait_for(flow.drained, timeout_seconds=90)

    try:
        after = flow.sealed_by_id(vectors)
    finally:
        vectors.close()
    assert len(before) == 20
    assert after == before
    assert flow.queues.receive(DLQ) == []


def test_a_tampered_upload_is_dead_lettered_as_decryption_failed_without_plaintext(
    flow: Flow,
) -> None:
    secret_text = f"tamper-canary-{uuid.uuid4().hex}"
    upload = seal_messages(
        [("msg-000", "an ordinary note"), ("msg-001", secret_text)],
        public_key=flow.key.public_key,
        tenant=TENANT,
        vector_key=TENANT_KEY,
    )
    changed = bytearray(upload.messages[1].sealed)
    changed[20] ^= 0x01
    tampered = replace(
        upload,
        messages=(upload.messages[0], SealedMessage(message_id="msg-001", sealed=bytes(changed))),
    )

    flow.blobs.put(BUCKET, tampered.object_key, tampered.to_json())
    dead = flow.dead_letter()

    assert dead.dead_letter is not None
    assert dead.dead_letter.reason == "DECRYPTION_FAILED"
    assert dead.dead_letter.receive_count == 1  # not retried: no retry fixes a changed byte
    record_text = f"{dead.body} {dead.dead_letter.last_error}"
    assert secret_text not in record_text
    assert "ordinary note" not in record_text
    vectors = flow.vectors()
    try:
        assert vectors.count(COLLECTION, tenant=TENANT) == 0
    finally:
        vectors.close()


def test_an_upload_wrapped_to_an_unknown_key_is_dead_lettered_as_unknown_key_id(
    flow: Flow,
) -> None:
    stranger = generate_worker_key()
    upload_messages(
        flow.blobs,
        texts(2),
        bucket=BUCKET,
        public_key=stranger.public_key,
        tenant=TENANT,
        vector_key=TENANT_KEY,
    )

    dead = flow.dead_letter()

    assert dead.dead_letter is not None
    assert dead.dead_letter.reason == "UNKNOWN_KEY_ID"
    assert stranger.key_id in (dead.dead_letter.last_error or "")


def test_an_upload_failing_for_a_retryable_reason_is_retried_for_minutes() -> None:
    """UNKNOWN_KEY_ID while a key rotation reaches every worker, EMBEDDING_API_ERROR during
    a provider outage: the upload is retried for at least ten minutes, at worst, before it
    is dead-lettered, and its message outlives that window."""
    queue = app.queues[QUEUE]
    assert queue.dead_letter is not None
    retry = app.handlers["embed_uploads"].mapping.retry
    receives = queue.dead_letter.max_receive_count

    # The shortest a jitter could make each wait.
    waits = [retry_delay_seconds(retry, n, random=lambda: 0.0) for n in range(1, receives)]

    assert sum(waits) >= 10 * 60
    assert sum(waits) + receives * queue.attributes.visibility_timeout_seconds < (
        queue.attributes.message_retention_seconds
    )


def test_a_tracked_upload_a_worker_without_keys_cannot_open_dead_letters_its_job(
    keyless_flow: Flow,
) -> None:
    jobs = SqliteJobs(keyless_flow.root / "vaultq.db")
    try:
        receipt = upload_messages(
            keyless_flow.blobs,
            texts(1),
            bucket=BUCKET,
            public_key=keyless_flow.key.public_key,
            tenant=TENANT,
            vector_key=TENANT_KEY,
            jobs=jobs,
            client_id="alice",
        )
        key = JobKey(tenant_id=TENANT, client_id="alice", job_id=receipt.job_id)

        dead = keyless_flow.dead_letter()
        # The handler marks the job before it fails: before the message is dead-lettered.
        job = jobs.get(key)
    finally:
        jobs.close()

    assert dead.dead_letter is not None and dead.dead_letter.reason == "INVALID_SETTINGS"
    assert job is not None
    assert (job.status, job.error) == (JobStatus.DEAD_LETTERED, "INVALID_SETTINGS")


def test_a_tenants_wrapped_vector_key_replayed_in_another_tenants_upload_is_dead_lettered(
    flow: Flow,
) -> None:
    mine = seal_messages(
        texts(2), public_key=flow.key.public_key, tenant=TENANT, vector_key=TENANT_KEY
    )
    # Another tenant's upload that carries tenant-a's wrapped vector key, to seal its vectors
    # under tenant-a's key (or learn it): the key was wrapped for tenant-a and its job only.
    theirs = seal_messages(texts(2), public_key=flow.key.public_key, tenant="tenant-b")
    replayed = replace(theirs, wrapped_vector_key=mine.wrapped_vector_key)

    flow.blobs.put(BUCKET, replayed.object_key, replayed.to_json())
    dead = flow.dead_letter()

    assert dead.dead_letter is not None
    assert dead.dead_letter.reason == "DECRYPTION_FAILED"
    assert dead.dead_letter.receive_count == 1
    vectors = flow.vectors()
    try:
        assert vectors.count(COLLECTION, tenant="tenant-b") == 0
    finally:
        vectors.close()


def test_no_plaintext_or_data_key_is_written_anywhere(
    flow: Flow, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    canary = f"canary-{uuid.uuid4().hex}"
    messages = [*texts(5), ("msg-canary", f"My secret is {canary}, keep it.")]
    job_id = flow.upload(messages)
    wait_for(flow.drained, timeout_seconds=90)
    upload = SealedUpload.from_json(flow.blobs.get(BUCKET, f"jobs/{TENANT}/{job_id}.json")[0])
    data_key = bytes(
        KeyRing([flow.key.private_key]).unwrap(upload.wrapped_key, tenant=TENANT, job_id=job_id)
    )

    stored = b"".join(path.read_bytes() for path in flow.root.rglob("*") if path.is_file())
    captured = capfd.readouterr()
    logs = f"{caplog.text}\n{captured.out}\n{captured.err}".encode()

    # The scan sees what is stored in clear (ids) and what the handler processes logged.
    assert b"msg-canary" in stored
    assert f"job {job_id}: 6 of 6 messages embedded".encode() in stored
    forbidden = {
        "canary": canary.encode(),
        "canary (UTF-16)": canary.encode("utf-16-le"),
        "data key": data_key,
        "data key (hex)": data_key.hex().encode(),
        "data key (HEX)": data_key.hex().upper().encode(),
        "data key (base64)": base64.b64encode(data_key),
        "data key (base64url)": base64.urlsafe_b64encode(data_key),
        "vector key": TENANT_KEY,
        "vector key (hex)": TENANT_KEY.hex().encode(),
        "vector key (HEX)": TENANT_KEY.hex().upper().encode(),
        "vector key (base64)": base64.b64encode(TENANT_KEY),
        "vector key (base64url)": base64.urlsafe_b64encode(TENANT_KEY),
    }
    found = [name for name, value in forbidden.items() if value in stored or value in logs]
    assert found == []


def test_the_pipeline_saves_the_jobs_progress_after_each_batch(
    tmp_path: Path, model: LocalSentenceModel
) -> None:
    key = generate_worker_key()
    blobs = wiring.open_blobs(f"sqlite:///{tmp_path}/vaultq.db")
    blobs.create_bucket(BUCKET)
    vectors = EmbeddedVectors(tmp_path / "vectors.db")
    vectors.create_collection(COLLECTION, dimension=model.dimension, mode="sealed")
    jobs = SqliteJobs(tmp_path / "vaultq.db")
    services = EmbeddingServices(
        blobs=blobs,
        key_ring=KeyRing([key.private_key]),
        provider=model,
        vectors=vectors,
        collection=COLLECTION,
        batch_size=8,
    )
    upload = seal_messages(
        texts(20), public_key=key.public_key, tenant=TENANT, vector_key=TENANT_KEY
    )
    blobs.put(BUCKET, upload.object_key, upload.to_json())
    job_key = JobKey(tenant_id=TENANT, client_id="client", job_id=upload.job_id)
    jobs.create(job_key)
    jobs.transition(job_key, to=JobStatus.PROCESSING)
    seen: list[float] = []

    class RecordingHandle(JobHandle):
        def save_progress(self, progress, *, stage=None, checkpoint=None):
            seen.append(progress)
            return super().save_progress(progress, stage=stage, checkpoint=checkpoint)

    record = {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": BUCKET}, "object": {"key": upload.object_key}},
    }
    try:
        results = process_upload(services, record, job=RecordingHandle(jobs, job_key))
        job = jobs.get(job_key)
        checkpoint = jobs.last_checkpoint(job_key)
    finally:
        vectors.close()
        jobs.close()
        blobs.close()

    assert seen == [8 / 20, 16 / 20, 1.0]
    assert job is not None
    assert job.progress == 1.0
    assert checkpoint is not None
    assert dict(checkpoint.data) == {"messages_done": 20, "messages_total": 20}
    assert [r["message_id"] for r in results] == [mid for mid, _ in texts(20)]
    assert set(results[0]) == {"message_id", "embedding_stored", "processing_time_ms", "model"}
    assert all(r["embedding_stored"] and r["model"] == "all-MiniLM-L6-v2" for r in results)


def test_regenerate_takes_each_message_from_the_tenants_latest_upload_only(
    tmp_path: Path, model: LocalSentenceModel
) -> None:
    key = generate_worker_key()
    blobs = wiring.open_blobs(f"sqlite:///{tmp_path}/vaultq.db")
    blobs.create_bucket(BUCKET)
    vectors = EmbeddedVectors(tmp_path / "vectors.db")
    vectors.create_collection(COLLECTION, dimension=model.dimension, mode="sealed")
    services = EmbeddingServices(
        blobs=blobs,
        key_ring=KeyRing([key.private_key]),
        provider=model,
        vectors=vectors,
        collection=COLLECTION,
    )
    for tenant, messages in [
        (TENANT, [("msg-1", "an old draft about tax returns"), ("msg-2", "jazz piano")]),
        (f"{TENANT}2", [("msg-3", "a neighbour tenant's note")]),
        (TENANT, [("msg-1", "the final text about sailing boats")]),
    ]:
        upload = seal_messages(messages, public_key=key.public_key, tenant=tenant)
        blobs.put(BUCKET, upload.object_key, upload.to_json())
        time.sleep(0.01)  # distinct last-modified times: the latest upload wins
    blobs.put(BUCKET, f"jobs/{TENANT}/junk.json", b"not an upload")
    vkey = vector_key(TENANT_KEY, tenant=TENANT)
    wrapped = wrap_vector_key_for(TENANT_KEY, public_key=key.public_key, tenant=TENANT)
    try:
        done = regenerate(
            services, tenant=TENANT, message_ids=["msg-1", "msg-3", "msg-9"], vector_key=wrapped
        )
        [stored] = vectors.sealed_items(COLLECTION, tenant=TENANT, limit=10).items
        vector = open_vector(vkey, message_id="msg-1", sealed=stored.sealed_vector)
    finally:
        vectors.close()
        blobs.close()

    assert [r["message_id"] for r in done.results] == ["msg-1"]
    assert done.unknown_message_ids == ["msg-3", "msg-9"]
    assert vector @ model.embed(["the final text about sailing boats"])[0] > 0.99
