"""Fixtures of the blob contract suite: one ``blobs`` fixture per backend.

Imported by the blob test modules (the shared ``conftest.py`` stays about queues). Backends
are built with a small maximum object size so that the limit is cheap to test.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from vaultq.blobs.local import LocalBlobs

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from vaultq.blobs import BlobStore

    from .conftest import Clock

BLOB_BACKENDS = ["local"]
SIGNING_SECRET = b"contract-suite-secret-of-32-bytes"
MAX_OBJECT_SIZE_BYTES = 64 * 1024


@pytest.fixture
def local_blobs(tmp_path: Path, clock: Clock) -> Iterator[LocalBlobs]:
    store = LocalBlobs(
        tmp_path / "blobs",
        signing_secret=SIGNING_SECRET,
        clock=clock,
        max_object_size_bytes=MAX_OBJECT_SIZE_BYTES,
    )
    yield store
    store.close()


@pytest.fixture(params=BLOB_BACKENDS)
def blobs(request: pytest.FixtureRequest) -> BlobStore:
    store: BlobStore = request.getfixturevalue(f"{request.param}_blobs")
    return store


@pytest.fixture
def bucket(blobs: BlobStore) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    blobs.create_bucket(name)
    return name
