"""What the pipeline checks before it stores a tenant's vectors, and how regenerate copes
with uploads that do not open:

- a collection of another mode than the app expects is refused before anything is embedded
  (a sealed app must never store plain vectors because a collection was made indexed);
- a vector key that does not open the tenant's stored vectors is refused with nothing
  stored (it would break every later search), a search names the messages its key does not
  open, and a vector sealed under a wrong key can still be repaired with the right one;
- regenerate takes each message from its newest upload that opens and reports the ids none
  opens for, instead of failing the whole request.

The endpoint is a real OpenAI-compatible HTTP server on 127.0.0.1 whose vectors are
deterministic per text, so no model is loaded.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from tests.embeddings.test_collection_model import DIMENSION, served_vectors
from tests.runtime.openai_embeddings_server import EmbeddingsServer, embeddings_server
from vaultq import errors, wiring
from vaultq.client import WrappedVectorKey, seal_messages, seal_query, wrap_vector_key_for
from vaultq.embeddings.openai_compat import OpenAICompatibleProvider, RetrySettings
from vaultq.embeddings.pipeline import (
    EmbeddingServices,
    VectorKeyMismatch,
    embed_upload,
    ensure_collection,
    open_vector,
    regenerate,
    seal_vector,
    search_query,
    vector_key,
)
from vaultq.privacy.keys import KeyRing, generate_worker_key
from vaultq.vectors.embedded import EmbeddedVectors
from vaultq.vectors.protocol import VectorItem

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from vaultq.blobs.protocol import BlobStore
    from vaultq.client import SealedUpload

COLLECTION = "notes"
TENANT = "tenant-p"
BUCKET = "messages"
TENANT_KEY = bytes(range(32))
WRONG_KEY = bytes(range(100, 132))
OTHER_KEY = bytes(range(200, 232))


def text_of(message_id: str, version: str = "") -> str:
    return f"a note called {message_id}{version}"


class Deployment:
    """One data directory's blobs, vector store and endpoint, and a worker key."""

    def __init__(self, root: Path, server: EmbeddingsServer) -> None:
        self.server = server
        self.key = generate_worker_key()
        self.blobs: BlobStore = wiring.open_blobs(f"sqlite:///{root}/vaultq.db")
        self.blobs.create_bucket(BUCKET)
        self.vectors = EmbeddedVectors(root / "vectors.db")
        self.provider = OpenAICompatibleProvider(
            server.url, model="embed-a", dimension=DIMENSION, retry=RetrySettings(max_attempts=1)
        )

    def worker(self, mode: str | None = "sealed") -> EmbeddingServices:
        return EmbeddingServices(
            blobs=self.blobs,
            key_ring=KeyRing([self.key.private_key]),
            provider=self.provider,
            vectors=self.vectors,
            collection=COLLECTION,
            mode=mode,
        )

    def collection(self, mode: str) -> None:
        ensure_collection(self.vectors, COLLECTION, provider=self.provider, mode=mode)

    def upload(
        self,
        *message_ids: str,
        tenant_key: bytes = TENANT_KEY,
        public_key: bytes | None = None,
        version: str = "",
        put: bool = True,
    ) -> SealedUpload:
        upload = seal_messages(
            [(message_id, text_of(message_id, version)) for message_id in message_ids],
            public_key=self.key.public_key if public_key is None else public_key,
            tenant=TENANT,
            vector_key=tenant_key,
        )
        if put:
            self.put(upload)
        return upload

    def put(self, upload: SealedUpload) -> None:
        self.blobs.put(BUCKET, upload.object_key, upload.to_json())
        time.sleep(0.01)  # distinct upload times: newest first is well defined

    def grant(self, tenant_key: bytes = TENANT_KEY) -> WrappedVectorKey:
        return wrap_vector_key_for(tenant_key, public_key=self.key.public_key, tenant=TENANT)

    def seal_directly(self, message_id: str, tenant_key: bytes) -> None:
        """A vector stored under ``tenant_key`` by a worker without the key check (the state
        the walkthrough left: one message re-sealed under another key)."""
        key = vector_key(tenant_key, tenant=TENANT)
        sealed = seal_vector(key, message_id=message_id, vector=served_vectors([message_id])[0])
        self.vectors.upsert(
            COLLECTION, [VectorItem(tenant=TENANT, message_id=message_id, sealed_vector=sealed)]
        )

    def stored_text(self, message_id: str) -> str | None:
        """Which of ``text_of``'s versions the stored vector of ``message_id`` embeds."""
        key = vector_key(TENANT_KEY, tenant=TENANT)
        page = self.vectors.sealed_items(COLLECTION, tenant=TENANT, limit=100)
        [sealed] = [i.sealed_vector for i in page.items if i.message_id == message_id]
        vector = open_vector(key, message_id=message_id, sealed=sealed)
        for version in ("", "-v2"):
            if float(vector @ served_vectors([text_of(message_id, version)])[0]) > 0.999:
                return text_of(message_id, version)
        return None

    def close(self) -> None:
        self.provider.close()
        self.vectors.close()
        self.blobs.close()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with embeddings_server(served_vectors, dimension=DIMENSION) as server:
        deployed = Deployment(tmp_path, server)
        try:
            yield deployed
        finally:
            deployed.close()


# -- the collection's mode ---------------------------------------------------------------


@pytest.mark.parametrize(("existing", "expected"), [("indexed", "sealed"), ("sealed", "indexed")])
def test_a_collection_of_another_mode_is_refused_before_anything_is_embedded(
    deployment: Deployment, existing: str, expected: str
) -> None:
    deployment.collection(existing)
    worker = deployment.worker(mode=expected)

    with pytest.raises(errors.InvalidSettings) as at_start:
        deployment.collection(expected)
    with pytest.raises(errors.InvalidSettings) as per_job:
        embed_upload(worker, deployment.upload("m-1"))
    with pytest.raises(errors.InvalidSettings) as regenerating:
        regenerate(worker, tenant=TENANT, message_ids=["m-1"], vector_key=deployment.grant())

    for raised in (at_start, per_job, regenerating):
        message = str(raised.value)
        assert f"is {existing}" in message and f"expects a {expected}" in message
    assert deployment.server.requests == []
    assert deployment.vectors.count(COLLECTION, tenant=TENANT) == 0


def test_a_worker_that_expects_no_mode_follows_the_collections(deployment: Deployment) -> None:
    deployment.collection("indexed")

    embed_upload(deployment.worker(mode=None), deployment.upload("m-1"))

    assert deployment.vectors.count(COLLECTION, tenant=TENANT) == 1


def test_a_misspelt_mode_fails_when_the_services_are_built(deployment: Deployment) -> None:
    with pytest.raises(errors.InvalidSettings, match="sealed or indexed"):
        deployment.worker(mode="seal")


# -- the tenant's vector key -----------------------------------------------------------


@pytest.mark.parametrize("job", ["upload", "regenerate"])
def test_a_vector_key_that_does_not_open_the_tenants_vectors_is_refused_with_nothing_stored(
    deployment: Deployment, job: str
) -> None:
    deployment.collection("sealed")
    worker = deployment.worker()
    embed_upload(worker, deployment.upload("m-1", "m-2"))  # the first key is the tenant's
    before = deployment.vectors.sealed_items(COLLECTION, tenant=TENANT).items
    requests = len(deployment.server.requests)

    with pytest.raises(VectorKeyMismatch) as raised:
        if job == "upload":
            embed_upload(worker, deployment.upload("m-3", tenant_key=WRONG_KEY))
        else:
            grant = deployment.grant(WRONG_KEY)
            regenerate(worker, tenant=TENANT, message_ids=["m-2"], vector_key=grant)

    # Final (the app dead-letters a DecryptionFailed at once), with a stable reason, naming
    # the message whose vector the key does not open, and nothing embedded or stored.
    assert isinstance(raised.value, errors.DecryptionFailed)
    assert raised.value.failure_reason == "VECTOR_KEY_MISMATCH"
    assert "message m-1" in str(raised.value)
    assert len(deployment.server.requests) == requests
    assert deployment.vectors.sealed_items(COLLECTION, tenant=TENANT).items == before
    # The tenant's own key still works.
    embed_upload(worker, deployment.upload("m-3"))
    assert deployment.vectors.count(COLLECTION, tenant=TENANT) == 3


def test_a_vector_sealed_under_a_wrong_key_is_repaired_by_regenerating_it(
    deployment: Deployment,
) -> None:
    deployment.collection("sealed")
    worker = deployment.worker()
    deployment.upload("m-1", "m-2", "m-3")
    deployment.seal_directly("m-1", TENANT_KEY)
    deployment.seal_directly("m-2", TENANT_KEY)
    deployment.seal_directly("m-3", TENANT_KEY)
    deployment.seal_directly("m-1", WRONG_KEY)  # the first stored vector no longer opens

    # Another key rewriting that very message is still refused: another vector is tested.
    with pytest.raises(VectorKeyMismatch, match="message m-2"):
        regenerate(
            worker, tenant=TENANT, message_ids=["m-1"], vector_key=deployment.grant(OTHER_KEY)
        )
    done = regenerate(worker, tenant=TENANT, message_ids=["m-1"], vector_key=deployment.grant())

    assert [r["message_id"] for r in done.results] == ["m-1"]
    assert deployment.stored_text("m-1") == text_of("m-1")


def test_the_first_jobs_key_becomes_the_tenants(deployment: Deployment) -> None:
    deployment.collection("sealed")
    worker = deployment.worker()

    embed_upload(worker, deployment.upload("m-1", tenant_key=WRONG_KEY))

    with pytest.raises(VectorKeyMismatch):
        embed_upload(worker, deployment.upload("m-2"))


def test_a_search_names_the_messages_whose_vectors_its_key_does_not_open(
    deployment: Deployment,
) -> None:
    deployment.collection("sealed")
    worker = deployment.worker()
    embed_upload(worker, deployment.upload("m-1", "m-2", "m-3"))
    deployment.seal_directly("m-2", WRONG_KEY)

    def search(tenant_key: bytes) -> None:
        query = seal_query(
            "a note", public_key=deployment.key.public_key, tenant=TENANT, vector_key=tenant_key
        )
        search_query(worker, tenant=TENANT, query=query, k=3)

    with pytest.raises(VectorKeyMismatch) as one_message:
        search(TENANT_KEY)
    with pytest.raises(VectorKeyMismatch) as wrong_key:
        search(OTHER_KEY)

    assert one_message.value.failure_reason == "VECTOR_KEY_MISMATCH"
    assert "1 of the tenant's 3 stored vectors (messages m-2)" in str(one_message.value)
    assert "regenerate" in str(one_message.value)
    assert "3 of the tenant's 3 stored vectors (messages m-1, m-2, m-3)" in str(wrong_key.value)
    assert "not the key that sealed them" in str(wrong_key.value)


# -- regenerate over uploads that do not open -------------------------------------------


def test_regenerate_falls_back_past_changed_uploads_but_not_past_a_missing_worker_key(
    deployment: Deployment,
) -> None:
    deployment.collection("sealed")
    worker = deployment.worker()
    embed_upload(worker, deployment.upload("m-1", "m-2"))
    # Newer uploads that never opened: one to a worker key no worker holds, one changed.
    stranger = generate_worker_key().public_key
    deployment.upload("m-1", "m-3", public_key=stranger, version="-v2")
    changed = deployment.upload("m-2", version="-v2", put=False)
    [message] = changed.messages
    flipped = message.sealed[:-1] + bytes([message.sealed[-1] ^ 1])
    deployment.put(replace(changed, messages=(replace(message, sealed=flipped),)))

    done = regenerate(
        worker,
        tenant=TENANT,
        message_ids=["m-3", "m-1", "m-9", "m-2"],
        vector_key=deployment.grant(),
    )

    # m-2's newest upload never opens: its older one is used. m-1's newest may be a newer
    # text sealed to a key this worker lacks yet: the older text must not replace it.
    assert [r["message_id"] for r in done.results] == ["m-2"]
    assert deployment.stored_text("m-2") == text_of("m-2")
    assert done.unopened_message_ids == {"m-3": "UNKNOWN_KEY_ID", "m-1": "UNKNOWN_KEY_ID"}
    assert done.unknown_message_ids == ["m-9"]


def test_regenerate_reports_changed_uploads_and_retries_only_a_missing_worker_key(
    deployment: Deployment,
) -> None:
    deployment.collection("sealed")
    worker = deployment.worker()
    changed = deployment.upload("m-1", put=False)
    deployment.put(replace(changed, wrapped_key=deployment.upload("m-0", put=False).wrapped_key))
    deployment.upload("m-2", public_key=generate_worker_key().public_key)

    nothing_opens = regenerate(
        worker, tenant=TENANT, message_ids=["m-1"], vector_key=deployment.grant()
    )
    with pytest.raises(errors.UnknownKeyId) as rotating:
        regenerate(worker, tenant=TENANT, message_ids=["m-1", "m-2"], vector_key=deployment.grant())

    # A changed upload is final: reported, and the request succeeds with nothing embedded.
    assert nothing_opens.results == []
    assert nothing_opens.unopened_message_ids == {"m-1": "DECRYPTION_FAILED"}
    # A missing worker key may be loaded by the next attempt: the job is retried, the ids named
    # once, the reason not repeated.
    assert str(rotating.value).startswith("UNKNOWN_KEY_ID: no upload of messages m-1, m-2 opens")
    assert str(rotating.value).count("UNKNOWN_KEY_ID") == 1
    assert deployment.server.requests == []
