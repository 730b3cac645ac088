"""A collection holds one model's vectors and knows which: a worker configured with another
model of the same dimension, or the local model in an endpoint's place, fails its job before
anything is embedded or stored; a collection made before models were recorded takes the
first job's model; a fallback's batches still go into its primary's collection.

The endpoint is a real OpenAI-compatible HTTP server on 127.0.0.1 whose vectors are
deterministic per text, so no model is loaded.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.runtime.openai_embeddings_server import EmbeddingsServer, embeddings_server
from vaultq import errors, wiring
from vaultq.client import seal_messages, seal_query
from vaultq.embeddings.fallback import FallbackProvider
from vaultq.embeddings.openai_compat import OpenAICompatibleProvider, RetrySettings
from vaultq.embeddings.pipeline import (
    EmbeddingServices,
    embed_upload,
    ensure_collection,
    search_query,
)
from vaultq.privacy.keys import KeyRing, generate_worker_key
from vaultq.vectors.embedded import EmbeddedVectors

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from vaultq.blobs.protocol import BlobStore
    from vaultq.client import SealedUpload
    from vaultq.embeddings.protocol import EmbeddingProvider
    from vaultq.privacy.keys import WorkerKey

DIMENSION = 8
COLLECTION = "notes"
TENANT = "tenant-m"
LOCAL = "all-MiniLM-L6-v2"


def served_vectors(texts: Sequence[str]) -> Any:
    """What the endpoint's model gives: one fixed unit vector per text."""
    rows = [
        np.random.default_rng(
            int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big")
        ).standard_normal(DIMENSION)
        for t in texts
    ]
    matrix = np.asarray(rows, dtype=np.float64).reshape(len(rows), DIMENSION)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


class LocalStandIn:
    """The local model's place in a deployment, embedding into the endpoint's very space:
    only its name tells them apart."""

    name = LOCAL
    dimension = DIMENSION

    def embed(self, texts: Sequence[str]) -> Any:
        return np.ascontiguousarray(served_vectors(texts), dtype=np.float32)


class Deployment:
    """One data directory's blobs and vector store; ``worker`` builds a worker's services
    around a provider, on a store of its own as another process would have."""

    def __init__(self, root: Path, server: EmbeddingsServer) -> None:
        self.root = root
        self.server = server
        self.key: WorkerKey = generate_worker_key()
        self.blobs: BlobStore = wiring.open_blobs(f"sqlite:///{root}/vaultq.db")
        self.opened: list[Any] = [self.blobs]

    def endpoint(self, model: str) -> OpenAICompatibleProvider:
        provider = OpenAICompatibleProvider(
            self.server.url, model=model, dimension=DIMENSION, retry=RetrySettings(max_attempts=1)
        )
        self.opened.append(provider)
        return provider

    def vectors(self) -> EmbeddedVectors:
        store = EmbeddedVectors(self.root / "vectors.db")
        self.opened.append(store)
        return store

    def worker(self, provider: EmbeddingProvider) -> EmbeddingServices:
        return EmbeddingServices(
            blobs=self.blobs,
            key_ring=KeyRing([self.key.private_key]),
            provider=provider,
            vectors=self.vectors(),
            collection=COLLECTION,
        )

    def upload(self, *message_ids: str) -> SealedUpload:
        messages = [(message_id, f"a note called {message_id}") for message_id in message_ids]
        return seal_messages(messages, public_key=self.key.public_key, tenant=TENANT)

    def stored_models(self) -> dict[str, str]:
        """Each stored message's ``model`` metadata, found by searching with its vector."""
        vectors = self.vectors()
        found: dict[str, str] = {}
        for message_id in ("m-1", "m-2", "m-3", "m-4"):
            query = served_vectors([f"a note called {message_id}"])[0].tolist()
            hits = vectors.search(COLLECTION, tenant=TENANT, query_vector=query, k=1)
            if hits and hits[0].message_id == message_id:
                found[message_id] = str(hits[0].metadata["model"])
        return found


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with embeddings_server(served_vectors, dimension=DIMENSION) as server:
        deployed = Deployment(tmp_path, server)
        try:
            yield deployed
        finally:
            for resource in deployed.opened:
                resource.close()


@pytest.mark.parametrize(
    ("swapped", "named"),
    [("endpoint", "openai-compatible:embed-b"), ("local", LOCAL)],
)
def test_a_worker_configured_with_another_model_of_the_same_dimension_fails_before_embedding(
    deployment: Deployment, swapped: str, named: str
) -> None:
    # Given a collection the endpoint's model embedded into
    first = deployment.worker(deployment.endpoint("embed-a"))
    ensure_collection(first.vectors, COLLECTION, provider=first.provider, mode="indexed")
    embed_upload(first, deployment.upload("m-1", "m-2"))
    requests_before = len(deployment.server.requests)
    # When a worker comes up with another model of the same dimension
    provider = deployment.endpoint("embed-b") if swapped == "endpoint" else LocalStandIn()
    second = deployment.worker(provider)

    with pytest.raises(errors.InvalidSettings) as at_start:
        ensure_collection(second.vectors, COLLECTION, provider=provider, mode="indexed")
    with pytest.raises(errors.InvalidSettings) as per_job:
        embed_upload(second, deployment.upload("m-3"))

    # Then its job fails saying what is wrong and what to do, and nothing was embedded
    for raised in (at_start, per_job):
        message = str(raised.value)
        assert "openai-compatible:embed-a" in message and named in message
        assert "another collection" in message
    assert len(deployment.server.requests) == requests_before
    assert second.vectors.count(COLLECTION, tenant=TENANT) == 2
    assert second.vectors.collection(COLLECTION).model == "openai-compatible:embed-a"


def test_a_collection_made_before_models_were_recorded_takes_the_first_jobs_model(
    deployment: Deployment,
) -> None:
    deployment.vectors().create_collection(COLLECTION, dimension=DIMENSION, mode="indexed")
    first = deployment.worker(deployment.endpoint("embed-a"))

    embed_upload(first, deployment.upload("m-1"))

    assert deployment.vectors().collection(COLLECTION).model == "openai-compatible:embed-a"
    other = deployment.worker(deployment.endpoint("embed-b"))
    with pytest.raises(errors.InvalidSettings):
        embed_upload(other, deployment.upload("m-2"))
    assert deployment.stored_models() == {"m-1": "openai-compatible:embed-a"}


def test_a_search_records_no_model_on_a_collection_that_has_none(deployment: Deployment) -> None:
    # Only a job that stores vectors may claim the collection for its model.
    deployment.vectors().create_collection(COLLECTION, dimension=DIMENSION, mode="indexed")
    searcher = deployment.worker(deployment.endpoint("embed-b"))
    query = seal_query("a note", public_key=deployment.key.public_key, tenant=TENANT)

    search_query(searcher, tenant=TENANT, query=query, k=1)
    embed_upload(deployment.worker(deployment.endpoint("embed-a")), deployment.upload("m-1"))

    assert deployment.vectors().collection(COLLECTION).model == "openai-compatible:embed-a"


def test_batches_the_fallback_embeds_go_into_the_collection_of_the_checked_endpoint(
    deployment: Deployment,
) -> None:
    endpoint = deployment.endpoint("embed-a")
    provider = FallbackProvider(
        endpoint, LocalStandIn(), failures_before_fallback=1, verify_same_model=True
    )
    worker = deployment.worker(provider)
    collection = ensure_collection(worker.vectors, COLLECTION, provider=provider, mode="indexed")
    embed_upload(worker, deployment.upload("m-1", "m-2"))  # the endpoint's space is checked

    deployment.server.mode = "503"
    embed_upload(worker, deployment.upload("m-3", "m-4"))

    assert collection.model == "openai-compatible:embed-a"
    assert deployment.stored_models() == {
        "m-1": "openai-compatible:embed-a",
        "m-2": "openai-compatible:embed-a",
        "m-3": LOCAL,
        "m-4": LOCAL,
    }
