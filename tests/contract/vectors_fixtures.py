"""Fixtures of the vector-store contract suite: one ``vectors`` fixture per backend.

``open_vectors()`` opens another store on the same storage, as a second process or a
restart would. A pgvector backend joins by adding ``"pgvector"`` to ``VECTOR_BACKENDS`` and a
``pgvector_open_vectors`` fixture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from vaultq.vectors import VectorStore

VECTOR_BACKENDS = ["embedded"]


class OpenVectors(Protocol):
    def __call__(self) -> VectorStore: ...


@pytest.fixture(name="embedded_open_vectors")
def embedded_open_vectors_fixture(tmp_path: Path) -> Iterator[OpenVectors]:
    pytest.importorskip("numpy")
    from vaultq.vectors.embedded import EmbeddedVectors  # noqa: PLC0415 - needs numpy

    opened: list[VectorStore] = []

    def open_vectors() -> VectorStore:
        store = EmbeddedVectors(tmp_path / "vaultq.db")
        opened.append(store)
        return store

    yield open_vectors
    for store in opened:
        store.close()


@pytest.fixture(name="open_vectors", params=VECTOR_BACKENDS)
def open_vectors_fixture(request: pytest.FixtureRequest) -> OpenVectors:
    factory: OpenVectors = request.getfixturevalue(f"{request.param}_open_vectors")
    return factory


@pytest.fixture(name="vectors")
def vectors_fixture(open_vectors: OpenVectors) -> VectorStore:
    return open_vectors()


@pytest.fixture(name="indexed")
def indexed_fixture(vectors: VectorStore) -> str:
    vectors.create_collection("notes", dimension=4, mode="indexed")
    return "notes"


@pytest.fixture(name="sealed")
def sealed_fixture(vectors: VectorStore) -> str:
    vectors.create_collection("secrets", dimension=4, mode="sealed")
    return "secrets"
