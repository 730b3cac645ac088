"""Fixtures of the blob contract suite: one ``blobs`` fixture per backend.

Imported by the blob test modules (the shared ``conftest.py`` stays about queues). Backends
are built with a small maximum object size so that the limit is cheap to test.

``s3`` runs on moto's HTTP server, shared by the tests of one process. S3 bucket names are
global and the contract uses fixed ones, so ``s3_blobs`` removes, when its test ends, every
bucket the test created: a test that runs again finds the same empty account.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from vaultq.blobs.local import LocalBlobs
from vaultq.blobs.s3 import S3Blobs

from ..aws_server import REGION

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from vaultq.blobs import BlobStore

    from .conftest import Clock

BLOB_BACKENDS = ["local", "s3"]
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


@pytest.fixture(scope="session")
def aws_session(aws_endpoint: str) -> boto3.Session:
    """One boto3 session per process: a new one loads its service models again (~0.3 s)."""
    return boto3.Session(region_name=REGION)


def remove_buckets(client: Any, names: set[str]) -> None:
    """Empty and delete ``names``: how a test gives back the bucket names it took."""
    for name in names:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for entry in page.get("Contents", ()):
                client.delete_object(Bucket=name, Key=entry["Key"])
        client.delete_bucket(Bucket=name)


def bucket_names(client: Any) -> set[str]:
    return {entry["Name"] for entry in client.list_buckets()["Buckets"]}


@pytest.fixture
def s3_blobs(aws_endpoint: str, aws_session: boto3.Session, clock: Clock) -> Iterator[S3Blobs]:
    client = aws_session.client("s3", endpoint_url=aws_endpoint)
    before = bucket_names(client)
    store = S3Blobs(
        region=REGION,
        endpoint_url=aws_endpoint,
        session=aws_session,
        clock=clock,
        max_object_size_bytes=MAX_OBJECT_SIZE_BYTES,
    )
    yield store
    store.close()
    remove_buckets(client, bucket_names(client) - before)
    client.close()


@pytest.fixture(params=BLOB_BACKENDS)
def blobs(request: pytest.FixtureRequest) -> BlobStore:
    store: BlobStore = request.getfixturevalue(f"{request.param}_blobs")
    return store


@pytest.fixture
def bucket(blobs: BlobStore) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    blobs.create_bucket(name)
    return name
