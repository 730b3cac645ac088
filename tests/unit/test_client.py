"""vaultq.client: tracked uploads and sealed search queries."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import pytest

from vaultq import errors, wiring
from vaultq.client import (
    MAX_QUERY_BYTES,
    InvalidUpload,
    SealedQuery,
    SealedUpload,
    WrappedVectorKey,
    new_vector_key_file,
    read_vector_key,
    seal_messages,
    seal_query,
    upload_messages,
    wrap_vector_key_for,
)
from vaultq.jobs.protocol import JobKey, JobStatus
from vaultq.jobs.sqlite import SqliteJobs
from vaultq.privacy.envelope import open_sealed
from vaultq.privacy.keys import Kem, KeyRing, WorkerKey, generate_worker_key

if TYPE_CHECKING:
    from pathlib import Path

KEY = generate_worker_key()
#: One worker key per suite: everything a client wraps works with either.
KEYS = {kem: generate_worker_key(kem=kem) for kem in Kem}


@pytest.fixture(params=list(Kem), ids=str)
def key(request: pytest.FixtureRequest) -> WorkerKey:
    return KEYS[request.param]


def ring_of(key: WorkerKey) -> KeyRing:
    return KeyRing([(key.kem, key.private_key)])


def test_a_tracked_upload_is_created_as_a_queued_job_that_its_document_names(
    tmp_path: Path,
) -> None:
    blobs = wiring.open_blobs(f"sqlite:///{tmp_path}/vaultq.db")
    jobs = SqliteJobs(tmp_path / "vaultq.db")
    try:
        blobs.create_bucket("messages")
        receipt = upload_messages(
            blobs,
            [("m1", "hello"), ("m2", "world")],
            bucket="messages",
            public_key=KEY.public_key,
            tenant="acme",
            jobs=jobs,
            client_id="alice",
        )
        job = jobs.get(JobKey(tenant_id="acme", client_id="alice", job_id=receipt.job_id))
        upload = SealedUpload.from_json(blobs.get("messages", receipt.object_key)[0])
    finally:
        jobs.close()
        blobs.close()

    assert job is not None
    assert job.status is JobStatus.QUEUED
    assert job.attributes == {"messages_total": 2}
    assert upload.job_key == job.key


def test_an_untracked_upload_document_has_no_client_field() -> None:
    upload = seal_messages([("m1", "hello")], public_key=KEY.public_key, tenant="acme")

    document = json.loads(upload.to_json())

    assert "client_id" not in document
    assert upload.job_key is None
    assert SealedUpload.from_json(upload.to_json()) == upload


def test_a_tracked_upload_needs_both_a_job_table_and_a_client(tmp_path: Path) -> None:
    blobs = wiring.open_blobs(f"sqlite:///{tmp_path}/vaultq.db")
    try:
        with pytest.raises(errors.InvalidParameterValue):
            upload_messages(
                blobs,
                [("m1", "hello")],
                bucket="messages",
                public_key=KEY.public_key,
                tenant="acme",
                client_id="alice",
            )
    finally:
        blobs.close()


def test_a_sealed_query_opens_only_for_its_tenant(key: WorkerKey) -> None:
    sealed = SealedQuery.from_json(
        seal_query("jazz piano", public_key=key.public_key, tenant="acme").as_json()
    )
    ring = ring_of(key)

    data_key = ring.unwrap(sealed.wrapped_key, tenant="acme", job_id=sealed.query_id)
    text = open_sealed(data_key, tenant="acme", message_id=sealed.query_id, sealed=sealed.sealed)

    assert bytes(text) == b"jazz piano"
    assert sealed.wrapped_key.kem is key.kem
    assert b"jazz" not in json.dumps(sealed.as_json()).encode()
    with pytest.raises(errors.DecryptionFailed):
        ring.unwrap(sealed.wrapped_key, tenant="rival", job_id=sealed.query_id)


@pytest.mark.parametrize("text", ["", "x" * (MAX_QUERY_BYTES + 1)])
def test_an_empty_or_oversized_query_is_refused(text: str) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        seal_query(text, public_key=KEY.public_key, tenant="acme")


def test_a_sealed_query_with_an_unknown_field_is_refused() -> None:
    document = {**seal_query("q", public_key=KEY.public_key, tenant="acme").as_json(), "x": "1"}

    with pytest.raises(InvalidUpload):
        SealedQuery.from_json(document)


def test_an_upload_carries_the_vector_key_wrapped_for_its_tenant_and_job_only(
    key: WorkerKey,
) -> None:
    vector_key = os.urandom(32)
    upload = SealedUpload.from_json(
        seal_messages(
            [("m1", "hello")], public_key=key.public_key, tenant="acme", vector_key=vector_key
        ).to_json()
    )
    ring = ring_of(key)

    assert upload.wrapped_vector_key is not None
    data_key = ring.unwrap(upload.wrapped_key, tenant="acme", job_id=upload.job_id)
    [message] = upload.messages
    assert open_sealed(data_key, tenant="acme", message_id="m1", sealed=message.sealed) == b"hello"
    opened = ring.unwrap_vector_key(upload.wrapped_vector_key, tenant="acme", job_id=upload.job_id)
    assert bytes(opened) == vector_key
    with pytest.raises(errors.DecryptionFailed):
        ring.unwrap_vector_key(upload.wrapped_vector_key, tenant="rival", job_id=upload.job_id)
    assert vector_key.hex() not in upload.to_json().decode()


def test_a_sealed_query_and_a_request_carry_the_vector_key_for_their_own_id(
    key: WorkerKey,
) -> None:
    vector_key = os.urandom(32)
    ring = ring_of(key)
    query = SealedQuery.from_json(
        seal_query("q", public_key=key.public_key, tenant="acme", vector_key=vector_key).as_json()
    )
    request = WrappedVectorKey.from_json(
        wrap_vector_key_for(vector_key, public_key=key.public_key, tenant="acme").as_json()
    )

    assert query.wrapped_vector_key is not None
    for wrapped, bound_to in [
        (query.wrapped_vector_key, query.query_id),
        (request.wrapped_key, request.request_id),
    ]:
        assert bytes(ring.unwrap_vector_key(wrapped, tenant="acme", job_id=bound_to)) == vector_key
    with pytest.raises(errors.DecryptionFailed):
        ring.unwrap_vector_key(request.wrapped_key, tenant="acme", job_id=query.query_id)


def test_a_vector_key_file_is_private_and_reads_back_as_32_bytes(tmp_path: Path) -> None:
    path = tmp_path / "acme.vector-key"
    new_vector_key_file(path)

    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert len(read_vector_key(path)) == 32
    with pytest.raises(errors.InvalidParameterValue):
        new_vector_key_file(path)  # never overwrites a key
    path.write_text("AAAA\n")
    with pytest.raises(errors.InvalidParameterValue):
        read_vector_key(path)


def test_a_key_id_must_match_the_public_key_of_either_suite() -> None:
    classic, hybrid = KEYS[Kem.X25519], KEYS[Kem.MLKEM768_X25519]

    upload = seal_messages(
        [("m1", "a")], public_key=hybrid.public_key, tenant="t", key_id=hybrid.key_id
    )

    assert upload.wrapped_key.key_id == hybrid.key_id
    with pytest.raises(errors.InvalidParameterValue):
        seal_messages(
            [("m1", "a")], public_key=hybrid.public_key, tenant="t", key_id=classic.key_id
        )
