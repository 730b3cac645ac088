"""Retiring a worker key: stored uploads are re-wrapped to a new key, still open with it
alone, and the re-wrap's own upload events embed nothing.

Real parts throughout: the embedded blob store with the example app's bucket notification,
the embedded queue, job table and vector store, real key rings, and the example's real
upload handler (``embed_uploads``), called in process. Only the model is a stand-in: a
deterministic provider that counts what it embeds, so no model loads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import examples.private_embeddings.app as example
import numpy as np
import pytest
from examples.private_embeddings.app import BUCKET, COLLECTION, QUEUE, app, embed_uploads
from typer.testing import CliRunner, Result

from vaultq import wiring
from vaultq.cli import app as cli
from vaultq.client import SealedUpload, upload_messages, wrap_vector_key_for
from vaultq.embeddings.pipeline import (
    EmbeddingServices,
    embed_upload,
    ensure_collection,
    load_upload,
    records_of,
    regenerate,
)
from vaultq.errors import DecryptionFailed
from vaultq.events import LambdaContext, sqs_event
from vaultq.jobs.protocol import JobKey, JobStatus
from vaultq.jobs.sqlite import SqliteJobs
from vaultq.privacy.keys import Kem, KeyRing, generate_worker_key, wrap_data_key
from vaultq.privacy.rewrap import RewrapFailure, is_rewrap_write, rewrap_uploads
from vaultq.queues.sqlite import SqliteQueues
from vaultq.vectors.embedded import EmbeddedVectors

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from vaultq.blobs.protocol import BlobStore
    from vaultq.privacy.keys import WorkerKey
    from vaultq.privacy.rewrap import RewrapSummary
    from vaultq.queues.protocol import QueueBackend

TENANT = "tenant-r"
CLIENT = "client-r"
TENANT_KEY = bytes(range(32))
TEXTS = [("m-1", "first note about boats"), ("m-2", "second note about bread")]
DIMENSION = 8


class CountingProvider:
    """One fixed unit vector per text; counts the texts it was asked to embed."""

    name = "counting-stand-in"
    dimension = DIMENSION

    def __init__(self) -> None:
        self.texts: list[str] = []

    @property
    def embedded(self) -> int:
        return len(self.texts)

    def embed(self, texts: Sequence[str]) -> Any:
        self.texts += texts
        rows = [
            np.frombuffer(hashlib.sha256(t.encode()).digest()[:DIMENSION], np.uint8) for t in texts
        ]
        matrix = np.asarray(rows, dtype=np.float32).reshape(len(texts), DIMENSION) + 1
        return np.ascontiguousarray(matrix / np.linalg.norm(matrix, axis=1, keepdims=True))


def ring(*keys: WorkerKey) -> KeyRing:
    return KeyRing((key.kem, key.private_key) for key in keys)


@dataclass
class World:
    queues: SqliteQueues
    blobs: BlobStore
    jobs: SqliteJobs
    vectors: EmbeddedVectors
    provider: CountingProvider
    monkeypatch: pytest.MonkeyPatch

    def services(self, *keys: WorkerKey) -> EmbeddingServices:
        return EmbeddingServices(
            blobs=self.blobs,
            key_ring=ring(*keys),
            provider=self.provider,
            vectors=self.vectors,
            collection=COLLECTION,
            bucket=BUCKET,
        )

    def upload(self, key: WorkerKey, texts: Sequence[tuple[str, str]] = TEXTS) -> JobKey:
        receipt = upload_messages(
            self.blobs,
            texts,
            bucket=BUCKET,
            public_key=key.public_key,
            tenant=TENANT,
            vector_key=TENANT_KEY,
            jobs=self.jobs,
            client_id=CLIENT,
        )
        return JobKey(tenant_id=TENANT, client_id=CLIENT, job_id=receipt.job_id)

    def rewrap(self, to: WorkerKey, *holding: WorkerKey, dry_run: bool = False) -> RewrapSummary:
        return rewrap_uploads(
            self.blobs, BUCKET, key_ring=ring(*holding), public_key=to.public_key, dry_run=dry_run
        )

    def events(self) -> list[Any]:
        """Every upload event queued so far, oldest first, taken off the queue."""
        messages = self.queues.receive(QUEUE, max_messages=10)
        for message in messages:
            self.queues.delete(QUEUE, message.receipt_handle)
        return sorted(messages, key=lambda m: _records(m)[0]["s3"]["object"]["sequencer"])

    def handle(self, message: Any, *keys: WorkerKey) -> None:
        """The example's upload handler, given this world's services, on one event."""
        self.monkeypatch.setattr(example, "services", lambda: self.services(*keys))
        context = LambdaContext(
            function_name="embed_uploads",
            memory_limit_in_mb=1024,
            deadline_monotonic=time.monotonic() + 60,
            jobs=self.jobs,
        )
        embed_uploads(sqs_event(QUEUE, [message]), context)

    def sealed_vectors(self) -> dict[str, bytes]:
        page = self.vectors.sealed_items(COLLECTION, tenant=TENANT, limit=100)
        return {item.message_id: item.sealed_vector for item in page.items}

    def stored(self, key: JobKey) -> tuple[bytes, str]:
        data, info = self.blobs.get(BUCKET, f"jobs/{TENANT}/{key.job_id}.json")
        return data, info.content_type


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    queues = SqliteQueues(tmp_path / "vaultq.db")
    blobs = wiring.open_blobs(f"sqlite:///{tmp_path}/vaultq.db", notifier=app.notifier(queues))
    app.provision(queues, blobs)
    jobs = SqliteJobs(tmp_path / "vaultq.db")
    vectors = EmbeddedVectors(tmp_path / "vectors.db")
    provider = CountingProvider()
    ensure_collection(vectors, COLLECTION, provider=provider, mode="sealed")
    try:
        yield World(queues, blobs, jobs, vectors, provider, monkeypatch)
    finally:
        for closing in (blobs, jobs, queues, vectors):
            closing.close()


def test_a_rewrapped_upload_opens_with_the_new_key_alone_and_is_not_embedded_again(
    world: World,
) -> None:
    old, new = generate_worker_key(), generate_worker_key()
    job = world.upload(old)
    [upload_event] = world.events()
    world.handle(upload_event, old)
    embedded, vectors, finished = (
        world.provider.embedded,
        world.sealed_vectors(),
        world.jobs.get(job),
    )
    before = SealedUpload.from_json(world.stored(job)[0])

    summary = world.rewrap(new, old, new)
    [rewrap_event] = world.events()
    world.handle(rewrap_event, new)

    assert (summary.scanned, summary.rewrapped, summary.current, summary.failed) == (1, 1, 0, 0)
    assert world.provider.embedded == embedded == len(TEXTS)
    assert world.sealed_vectors() == vectors and world.jobs.get(job) == finished
    after = SealedUpload.from_json(world.stored(job)[0])
    assert after.messages == before.messages  # the ciphertexts are the client's
    assert {after.wrapped_key.key_id, after.wrapped_vector_key.key_id} == {new.key_id}  # type: ignore[union-attr]
    grant = wrap_vector_key_for(TENANT_KEY, public_key=new.public_key, tenant=TENANT)
    done = regenerate(
        world.services(new), tenant=TENANT, message_ids=["m-1", "m-2"], vector_key=grant
    )
    assert [r["message_id"] for r in done.results] == ["m-1", "m-2"]
    assert world.sealed_vectors() == vectors  # the same key sealed the same vectors


def test_a_client_event_handled_after_the_rewrap_still_embeds_and_the_rewrap_event_does_not(
    world: World,
) -> None:
    """SQS standard queues do not keep order: either event may come first."""
    old, new = generate_worker_key(), generate_worker_key()
    job = world.upload(old)
    world.rewrap(new, old)
    client_event, rewrap_event = world.events()

    world.handle(rewrap_event, new)
    untouched = world.jobs.get(job)
    world.handle(client_event, new)

    assert untouched is not None and untouched.status is JobStatus.QUEUED
    assert world.provider.embedded == len(TEXTS)
    assert world.jobs.get(job).status is JobStatus.SUCCEEDED  # type: ignore[union-attr]


def test_a_second_run_rewraps_nothing_and_writes_nothing(world: World) -> None:
    old, new = generate_worker_key(), generate_worker_key()
    job = world.upload(old)
    world.rewrap(new, old)
    stored = world.stored(job)
    world.events()

    again = world.rewrap(new, new)

    assert (again.scanned, again.rewrapped, again.current, again.failed) == (1, 0, 1, 0)
    assert world.stored(job) == stored and world.events() == []


def test_a_rewrap_keeps_the_client_write_etag_through_later_rewraps(world: World) -> None:
    first, second, third = (generate_worker_key() for _ in range(3))
    job = world.upload(first)
    client_etag = world.blobs.head(BUCKET, f"jobs/{TENANT}/{job.job_id}.json").etag
    world.rewrap(second, first)
    world.rewrap(third, second)
    events = world.events()

    services = world.services(third)
    loaded = [load_upload(services, record) for m in events for record in _records(m)]

    assert [upload is not None for upload in loaded] == [True, False, False]
    assert f"vaultq-rewrapped-from={client_etag}" in world.stored(job)[1]


def test_a_rewrapped_key_stays_bound_to_its_tenant_and_job() -> None:
    old, new = generate_worker_key(), generate_worker_key()
    data_key = bytes(range(1, 33))
    wrapped = wrap_data_key(data_key, public_key=old.public_key, tenant=TENANT, job_id="job-1")

    moved = ring(old).rewrap(wrapped, public_key=new.public_key, tenant=TENANT, job_id="job-1")

    assert ring(new).unwrap(moved, tenant=TENANT, job_id="job-1") == data_key
    for tenant, job_id in ((TENANT, "job-2"), ("tenant-s", "job-1")):
        with pytest.raises(DecryptionFailed):
            ring(new).unwrap(moved, tenant=tenant, job_id=job_id)
    with pytest.raises(DecryptionFailed):  # nor does it pass for the tenant's vector key
        ring(new).unwrap_vector_key(moved, tenant=TENANT, job_id="job-1")


def test_regenerate_still_takes_a_message_from_its_latest_upload_after_a_rewrap(
    world: World,
) -> None:
    """Senders switch to the new key first; the re-wrap then rewrites the older uploads."""
    old, new = generate_worker_key(), generate_worker_key()
    world.upload(old, [("m-1", "first version")])
    time.sleep(0.005)  # the store's clock counts milliseconds
    world.upload(new, [("m-1", "second version")])
    time.sleep(0.005)

    world.rewrap(new, old)
    grant = wrap_vector_key_for(TENANT_KEY, public_key=new.public_key, tenant=TENANT)
    regenerate(world.services(new), tenant=TENANT, message_ids=["m-1"], vector_key=grant)

    assert world.provider.texts == ["second version"]


def test_objects_that_do_not_open_are_reported_and_left_byte_for_byte(world: World) -> None:
    old, new, unknown = generate_worker_key(), generate_worker_key(), generate_worker_key()
    tampered, foreign, fine = world.upload(old), world.upload(unknown), world.upload(old)
    upload = SealedUpload.from_json(world.stored(tampered)[0])
    changed = replace(upload.wrapped_key, ciphertext=bytes(48))
    tampered_key = f"jobs/{TENANT}/{tampered.job_id}.json"
    world.blobs.put(BUCKET, tampered_key, replace(upload, wrapped_key=changed).to_json())
    world.blobs.put(BUCKET, "jobs/notes.txt", b"not an upload")
    moved = f"jobs/{TENANT}/elsewhere.json"
    world.blobs.put(BUCKET, moved, world.stored(fine)[0])
    left = {key: world.blobs.get(BUCKET, key)[0] for key in _keys(world)}

    summary = world.rewrap(new, old)

    assert (summary.scanned, summary.rewrapped, summary.failed) == (5, 1, 4)
    assert set(summary.failures) == {
        RewrapFailure(key=tampered_key, reason="DECRYPTION_FAILED"),
        RewrapFailure(key=f"jobs/{TENANT}/{foreign.job_id}.json", reason="UNKNOWN_KEY_ID"),
        RewrapFailure(key="jobs/notes.txt", reason="INVALID_UPLOAD"),
        RewrapFailure(key=moved, reason="INVALID_UPLOAD"),
    }
    for failure in summary.failures:
        assert world.blobs.get(BUCKET, failure.key)[0] == left[failure.key]


def test_a_dry_run_counts_what_it_would_rewrap_and_changes_nothing(world: World) -> None:
    old, new = generate_worker_key(), generate_worker_key()
    job = world.upload(old)
    world.events()
    stored = world.stored(job)

    summary = world.rewrap(new, old, dry_run=True)

    assert (summary.scanned, summary.rewrapped, summary.dry_run) == (1, 1, True)
    assert world.stored(job) == stored and world.events() == []


def test_an_x25519_upload_moves_to_the_hybrid_post_quantum_suite(world: World) -> None:
    old, hybrid = generate_worker_key(), generate_worker_key(kem=Kem.MLKEM768_X25519)
    job = world.upload(old)
    world.events()

    world.rewrap(hybrid, old)

    upload = SealedUpload.from_json(world.stored(job)[0])
    assert upload.wrapped_key.kem is Kem.MLKEM768_X25519
    results = embed_upload(world.services(hybrid), upload)
    assert [r["message_id"] for r in results] == ["m-1", "m-2"]


# -- the command ------------------------------------------------------------------------------


def rewrap_command(tmp_path: Path, key_file: Path, *options: str) -> Result:
    url = f"sqlite:///{tmp_path}/vaultq.db"
    return CliRunner().invoke(
        cli, ["keys", "rewrap", "--bucket", BUCKET, "--to", str(key_file), "--url", url, *options]
    )


def test_the_command_rewraps_then_finds_everything_current(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = generate_worker_key(), generate_worker_key(kem=Kem.MLKEM768_X25519)
    world.upload(old)
    monkeypatch.setenv("VAULTQ_WORKER_KEYS", f"x25519:{_b64(old.private_key)}")
    key_file = tmp_path / "new.json"
    key_file.write_text(json.dumps({"key_id": new.key_id, "public_key": _b64(new.public_key)}))

    dry = rewrap_command(tmp_path, key_file, "--json", "--dry-run")
    done = rewrap_command(tmp_path, key_file, "--json")
    again = rewrap_command(tmp_path, key_file, "--json")

    assert (dry.exit_code, done.exit_code, again.exit_code) == (0, 0, 0)
    counts = [_counts(result.stdout) for result in (dry, done, again)]
    assert counts == [(1, 1, 0, 0), (1, 1, 0, 0), (1, 0, 1, 0)]


def test_the_command_exits_1_and_names_objects_it_could_not_open(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = generate_worker_key(), generate_worker_key()
    job = world.upload(old)
    monkeypatch.setenv("VAULTQ_WORKER_KEYS", _b64(new.private_key))  # not the old key
    key_file = tmp_path / "new.pub"
    key_file.write_text(_b64(new.public_key) + "\n")

    result = rewrap_command(tmp_path, key_file)

    assert result.exit_code == 1
    assert f"jobs/{TENANT}/{job.job_id}.json" in result.stdout and "UNKNOWN_KEY_ID" in result.stdout


@pytest.mark.parametrize(
    ("ring_text", "key_text", "expected"),
    [
        ("", "public", "VAULTQ_WORKER_KEYS is not set"),
        ("bogus:private", "public", "worker key 1 names an unknown suite"),
        ("private", "not base64!", "a worker public key is base64"),
        ("private", '{"kem": "x25519"}', "JSON without a public_key field"),
    ],
)
def test_the_command_exits_2_with_a_message_that_holds_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ring_text: str, key_text: str, expected: str
) -> None:
    key = generate_worker_key()
    private, public = _b64(key.private_key), _b64(key.public_key)
    ring_text, key_text = (
        text.replace("private", private).replace("public", public) for text in (ring_text, key_text)
    )
    monkeypatch.setenv("VAULTQ_WORKER_KEYS", ring_text)
    key_file = tmp_path / "new.pub"
    key_file.write_text(key_text)

    result = rewrap_command(tmp_path, key_file)

    assert result.exit_code == 2
    assert expected in result.stderr and private not in result.output + result.stderr


# -- S3 ---------------------------------------------------------------------------------------


def test_on_s3_the_marker_survives_and_only_the_client_event_embeds(aws_url: str) -> None:
    """moto delivers the bucket's events to SQS with the object's eTag, as S3 does."""
    bucket, queue = f"rewrap-{uuid.uuid4().hex[:12]}", f"uploads-{uuid.uuid4().hex[:12]}"
    queues = wiring.open_queues(aws_url)
    uploads = _s3_app(bucket, queue)
    blobs = wiring.open_blobs(aws_url, notifier=uploads.notifier(queues))
    try:
        uploads.provision(queues, blobs)
        old, new = generate_worker_key(), generate_worker_key()
        receipt = upload_messages(
            blobs, TEXTS, bucket=bucket, public_key=old.public_key, tenant=TENANT
        )
        summary = rewrap_uploads(blobs, bucket, key_ring=ring(old), public_key=new.public_key)
        records = [record for message in _drain(queues, queue, 2) for record in _records(message)]
        info = blobs.head(bucket, receipt.object_key)
    finally:
        blobs.close()
        queues.close()

    assert summary.rewrapped == 1
    skipped = [is_rewrap_write(info, event_etag=r["s3"]["object"]["eTag"]) for r in records]
    assert sorted(skipped) == [False, True]


def _s3_app(bucket: str, queue: str) -> Any:
    from vaultq.app import App  # noqa: PLC0415
    from vaultq.blobs import BucketNotification  # noqa: PLC0415

    uploads = App("rewrap-s3")
    uploads.queue(queue)
    uploads.bucket(bucket, notifications=[BucketNotification(queue, prefix="jobs/")])
    return uploads


def _drain(queues: QueueBackend, queue: str, count: int) -> list[Any]:
    found: list[Any] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found += [m for m in queues.receive(queue, max_messages=10, wait_seconds=1) if _records(m)]
        if len(found) >= count:
            return found
    raise AssertionError(f"{len(found)} of {count} events arrived")


def _records(message: Any) -> list[dict[str, Any]]:
    return records_of({"body": message.body})


def _keys(world: World) -> list[str]:
    return [info.key for info in world.blobs.list(BUCKET, "jobs/").objects]


def _counts(stdout: str) -> tuple[int, int, int, int]:
    summary = json.loads(stdout)
    return summary["scanned"], summary["rewrapped"], summary["current"], summary["failed"]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
