"""Fixtures of the stores on the DynamoDB state table: a fresh table per test on moto.

A test module imports the ``*_fixture`` functions; each registers under the name without the
suffix. The client is the job suite's ``OneRequestAtATime`` one (moto's conditional writes
are not atomic under concurrency, DynamoDB's are).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from vaultq._dynamodb import StateTable

from .aws_server import REGION
from .contract.jobs_fixtures import dynamodb_client_fixture

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["REGION", "dynamodb_client_fixture", "state_table_fixture"]


@pytest.fixture(name="state_table")
def state_table_fixture(dynamodb_client: Any) -> Iterator[str]:
    name = f"vaultq-state-{uuid.uuid4().hex[:12]}"
    StateTable(region=REGION, table=name, client=dynamodb_client).create()
    yield name
    dynamodb_client.delete_table(TableName=name)
