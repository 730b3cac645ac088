"""Where an aws URL keeps the API's state: the DynamoDB state table, or a local SQLite file
when the URL opts in with ``state=``."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from vaultq import errors, wiring
from vaultq.idempotency.dynamodb import DynamoIdempotency
from vaultq.outbox import PendingSend
from vaultq.outbox.dynamodb import DynamoOutbox
from vaultq.outbox.sqlite import SqliteOutbox
from vaultq.ratelimits.dynamodb import DynamoRateLimiter
from vaultq.runtime.rate_limit import TokenBucket

from ..state_fixtures import REGION, dynamodb_client_fixture, state_table_fixture  # noqa: F401

if TYPE_CHECKING:
    from pathlib import Path

BUCKET = TokenBucket(rate_per_second=1, burst=1)


def test_an_aws_url_keeps_outbox_limits_and_idempotency_in_its_state_table(
    aws_url: str, state_table: str, dynamodb_client: Any
) -> None:
    url = f"{aws_url}&state_table={state_table}"
    outbox = wiring.open_outbox(url)
    limiter = wiring.open_rate_limiter(url, default=BUCKET)
    idempotency = wiring.open_idempotency_store(url)

    outbox.add(PendingSend(id=uuid.uuid4().hex, queue="q", body="{}"), claim_seconds=5)
    assert limiter.acquire("api:acme").allowed
    idempotency.claim("k", claim_id="c", in_progress_ms=1000)

    # Another process opening the table directly sees all three.
    here = {"region": REGION, "table": state_table, "client": dynamodb_client}
    assert DynamoOutbox(**here).count() == 1
    assert not DynamoRateLimiter(**here, default=BUCKET).acquire("api:acme").allowed
    record = DynamoIdempotency(**here).get("k")
    assert record is not None
    assert record.claim_id == "c"
    for store in (outbox, limiter, idempotency):
        store.close()


def test_state_opts_into_a_local_sqlite_file(aws_url: str, tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    outbox = wiring.open_outbox(f"{aws_url}&state=sqlite:///{database}")

    assert isinstance(outbox, SqliteOutbox)
    assert database.exists()
    outbox.close()


def test_a_malformed_state_table_name_is_refused(aws_url: str) -> None:
    with pytest.raises(errors.InvalidSettings, match="table name"):
        wiring.open_outbox(f"{aws_url}&state_table=a b")
