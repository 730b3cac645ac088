"""``IdempotencyStore`` on the DynamoDB state table (see ``vaultq._dynamodb``).

One item per key, ``pk = idempotency#<key>``. A claim is one put conditional on the key
being free or its record expired, so two claims never both win (DynamoDB's conditional
writes are atomic); completing and releasing are conditional on the claim id, the fencing
token. Time is this process's wall clock: DynamoDB has none to offer, so the processes of a
deployment agree on expiry as far as their clocks agree (NTP on Lambda: milliseconds).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from vaultq import errors
from vaultq._dynamodb import DEFAULT_TABLE, StateTable, n, s, ttl_seconds
from vaultq.idempotency.protocol import (
    IdempotencyRecord,
    IdempotencyStatus,
    validate_claim,
    validate_completion,
    validate_key,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from vaultq.idempotency.protocol import IdempotencyStore

_SK = "record"
# A lost claim re-reads the record; it is gone again only if it expired in between.
_MAX_RACES = 5


class DynamoIdempotency:
    """``IdempotencyStore`` on a state table. ``clock`` returns seconds since the epoch."""

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        table: str = DEFAULT_TABLE,
        client: Any | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = StateTable(
            region=region, endpoint_url=endpoint_url, table=table, client=client
        )
        self._clock = clock

    def claim(self, key: str, *, claim_id: str, in_progress_ms: int) -> IdempotencyRecord:
        validate_key(key)
        validate_claim(claim_id, in_progress_ms=in_progress_ms)
        for _ in range(_MAX_RACES):
            now = self._now_ms()
            mine = IdempotencyRecord(
                key=key,
                status=IdempotencyStatus.IN_PROGRESS,
                claim_id=claim_id,
                expires_at_ms=now + in_progress_ms,
            )
            try:
                self._table.call(
                    "put_item",
                    Item=_item(mine),
                    ConditionExpression="attribute_not_exists(pk) OR expires_at_ms <= :now",
                    ExpressionAttributeValues={":now": n(now)},
                )
            except errors.ConditionalCheckFailed:
                held = self.get(key)
                if held is not None:
                    return held
                continue
            return mine
        raise errors.BackendUnavailable("an idempotency key kept expiring under its claims")

    def complete(
        self, key: str, *, claim_id: str, result_json: str, expires_after_seconds: int
    ) -> bool:
        validate_key(key)
        validate_completion(result_json, expires_after_seconds=expires_after_seconds)
        expires_at_ms = self._now_ms() + expires_after_seconds * 1000
        try:
            self._table.call(
                "update_item",
                Key=_key(key),
                UpdateExpression="SET #status = :done, expires_at_ms = :until, #ttl = :ttl,"
                " result_json = :result",
                ConditionExpression="claim_id = :claim AND #status = :running",
                ExpressionAttributeNames={"#status": "status", "#ttl": "expires_at"},
                ExpressionAttributeValues={
                    ":done": s(IdempotencyStatus.COMPLETED.value),
                    ":running": s(IdempotencyStatus.IN_PROGRESS.value),
                    ":until": n(expires_at_ms),
                    ":ttl": ttl_seconds(expires_at_ms),
                    ":result": s(result_json),
                    ":claim": s(claim_id),
                },
            )
        except errors.ConditionalCheckFailed:
            return False
        except errors.InvalidParameterValue:
            # The result fits MAX_RESULT_BYTES but not beside the record's other attributes.
            raise errors.IdempotencyResultNotStorable(
                "the result and its record are over DynamoDB's 400 KB item limit"
            ) from None
        return True

    def release(self, key: str, *, claim_id: str) -> None:
        validate_key(key)
        try:
            self._table.call(
                "delete_item",
                Key=_key(key),
                ConditionExpression="claim_id = :claim AND #status = :running",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":running": s(IdempotencyStatus.IN_PROGRESS.value),
                    ":claim": s(claim_id),
                },
            )
        except errors.ConditionalCheckFailed:
            return  # the claim is no longer ours: the record is someone else's now

    def get(self, key: str) -> IdempotencyRecord | None:
        validate_key(key)
        item = self._table.call("get_item", Key=_key(key), ConsistentRead=True).get("Item")
        if item is None or int(item["expires_at_ms"]["N"]) <= self._now_ms():
            return None
        return _record(key, item)

    def create_table(self) -> None:
        """Create the state table unless it exists (deployments declare it instead)."""
        self._table.create()

    def close(self) -> None:
        self._table.close()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _key(key: str) -> dict[str, Any]:
    return {"pk": s(f"idempotency#{key}"), "sk": s(_SK)}


def _item(record: IdempotencyRecord) -> dict[str, Any]:
    return {
        **_key(record.key),
        "status": s(record.status.value),
        "claim_id": s(record.claim_id),
        "expires_at_ms": n(record.expires_at_ms),
        "expires_at": ttl_seconds(record.expires_at_ms),
    }


def _record(key: str, item: Mapping[str, Any]) -> IdempotencyRecord:
    result = item.get("result_json")
    return IdempotencyRecord(
        key=key,
        status=IdempotencyStatus(item["status"]["S"]),
        claim_id=item["claim_id"]["S"],
        expires_at_ms=int(item["expires_at_ms"]["N"]),
        result_json=None if result is None else result["S"],
    )


if TYPE_CHECKING:

    def _satisfies_protocol(store: DynamoIdempotency) -> IdempotencyStore:
        """mypy proves here that ``DynamoIdempotency`` is an ``IdempotencyStore``."""
        return store
