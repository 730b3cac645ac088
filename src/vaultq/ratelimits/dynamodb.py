"""``RateLimiter`` on the DynamoDB state table (see ``vaultq._dynamodb``): limits shared by
every Lambda container and process of a deployment.

One item per key, ``pk = ratelimit#<key>``, holding the bucket's state and a ``version``. A
decision is a consistent read, ``TokenBucket.take``, and a put conditional on the version
read (or on no item), retried when another process wrote in between: two processes never
both spend the same tokens. Tokens are stored as their ``repr`` so that they read back
exactly. A bucket's item expires (TTL) once the bucket would be full again, when having no
item means the same. As in the embedded limiter, the last state this process wrote answers
most refusals without a round trip (``LastKnownStates``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from vaultq import errors
from vaultq._dynamodb import DEFAULT_TABLE, StateTable, n, s, ttl_seconds
from vaultq.runtime.rate_limit import BucketState, BucketTable, LastKnownStates

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from vaultq.runtime.rate_limit import Decision, RateLimiter, TokenBucket

_SK = "bucket"
# Each lost race means another process was allowed or refused meanwhile.
_MAX_RACES = 20


class DynamoRateLimiter:
    """``RateLimiter`` on a state table; same arguments as ``SqliteRateLimiter``."""

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        table: str = DEFAULT_TABLE,
        client: Any | None = None,
        default: TokenBucket | None = None,
        by_prefix: Mapping[str, TokenBucket] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._buckets = BucketTable(default=default, by_prefix=by_prefix)
        self._table = StateTable(
            region=region, endpoint_url=endpoint_url, table=table, client=client
        )
        self._clock = clock
        self._known = LastKnownStates()

    def acquire(self, key: str, *, cost: float = 1.0) -> Decision:
        bucket = self._buckets.for_key(key)
        bucket.check_cost(cost)
        refused = self._known.refusal(key, bucket, now_ms=self._now_ms(), cost=cost)
        if refused is not None:
            return refused
        for _ in range(_MAX_RACES):
            item = self._table.call("get_item", Key=_key(key), ConsistentRead=True).get("Item")
            stored, version = _state(item, self._now_ms())
            now_ms = self._now_ms()
            decision, state = bucket.take(stored, now_ms=now_ms, cost=cost)
            if state is not stored and not self._put(key, state, bucket, version):
                continue
            self._known.remember(key, state)
            return decision
        raise errors.BackendUnavailable(f"rate limit {key!r} changed under {_MAX_RACES} attempts")

    def _put(self, key: str, state: BucketState, bucket: TokenBucket, version: int) -> bool:
        """Write ``state`` unless another process wrote since ``version`` was read."""
        full_at_ms = bucket.full_at_ms(state)
        condition: dict[str, Any] = (
            {"ConditionExpression": "attribute_not_exists(pk)"}
            if version == 0
            else {
                "ConditionExpression": "version = :version",
                "ExpressionAttributeValues": {":version": n(version)},
            }
        )
        try:
            self._table.call(
                "put_item",
                Item={
                    **_key(key),
                    "tokens": s(repr(state.tokens)),
                    "updated_at_ms": n(state.updated_at_ms),
                    "full_at_ms": n(full_at_ms),
                    "expires_at": ttl_seconds(full_at_ms),
                    "version": n(version + 1),
                },
                **condition,
            )
        except errors.ConditionalCheckFailed:
            return False
        return True

    def close(self) -> None:
        self._table.close()

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)


def _key(key: str) -> dict[str, Any]:
    return {"pk": s(f"ratelimit#{key}"), "sk": s(_SK)}


def _state(item: Mapping[str, Any] | None, now_ms: int) -> tuple[BucketState | None, int]:
    """The stored state (None once the bucket refilled: TTL may not have run yet) and the
    version to write over (0: no item)."""
    if item is None:
        return None, 0
    version = int(item["version"]["N"])
    if int(item["full_at_ms"]["N"]) <= now_ms:
        return None, version
    state = BucketState(
        tokens=float(item["tokens"]["S"]), updated_at_ms=int(item["updated_at_ms"]["N"])
    )
    return state, version


if TYPE_CHECKING:

    def _satisfies_protocol(limiter: DynamoRateLimiter) -> RateLimiter:
        """mypy proves here that ``DynamoRateLimiter`` is a ``RateLimiter``."""
        return limiter
