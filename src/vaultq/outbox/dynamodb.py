"""``Outbox`` on the DynamoDB state table (see ``vaultq._dynamodb``).

One item per send, ``pk = outbox#<id>``, so the API's adds and removes spread over the
table's partitions. The sparse GSI ``outbox-due`` lists sends by ``outbox_shard`` (one of
``OUTBOX_SHARDS``, from the id) sorted by ``outbox_order = <created_at_ms>#<id>``: a drain
queries every shard oldest first, keeps what is due (``claimed_until_ms`` <= now, projected
into the index), merges, and claims each with an update conditional on the send still being
due. The index lags the table, so it only proposes; the conditional update decides, and two
drains never claim one send at once. Puts are durable once acknowledged (DynamoDB replicates
every write to three zones before answering), as the embedded outbox's FULL commits are.
"""

from __future__ import annotations

import heapq
import json
import time
import zlib
from typing import TYPE_CHECKING, Any

from vaultq import errors
from vaultq._dynamodb import DEFAULT_TABLE, OUTBOX_INDEX, OUTBOX_SHARDS, StateTable, n, s
from vaultq.outbox.protocol import PendingSend

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from vaultq.outbox.protocol import Outbox

_SK = "send"


class DynamoOutbox:
    """``Outbox`` on a state table. ``clock`` returns seconds since the epoch."""

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

    def add(self, send: PendingSend, *, claim_seconds: float) -> None:
        now = self._now_ms()
        item = {
            **_key(send.id),
            "outbox_shard": s(_shard(send.id)),
            "outbox_order": s(f"{now:020d}#{send.id}"),
            "queue": s(send.queue),
            "body": s(send.body),
            "attributes": s(json.dumps(dict(send.attributes))),
            "claimed_until_ms": n(now + int(claim_seconds * 1000)),
            "attempts": n(1),
        }
        optional = {"group_id": send.group_id, "deduplication_id": send.deduplication_id}
        item.update({name: s(value) for name, value in optional.items() if value is not None})
        self._table.call("put_item", Item=item)

    def claim_due(self, *, limit: int, claim_seconds: float) -> list[PendingSend]:
        now = self._now_ms()
        due = heapq.merge(*(self._due(shard, now) for shard in _shards()))
        claimed: list[PendingSend] = []
        for _order, send_id in due:
            if len(claimed) >= limit:
                break
            send = self._claim(send_id, now=now, until=now + int(claim_seconds * 1000))
            if send is not None:
                claimed.append(send)
        return claimed

    def remove(self, send_id: str) -> None:
        self._table.call("delete_item", Key=_key(send_id))

    def count(self) -> int:
        return sum(
            response["Count"]
            for shard in _shards()
            for response in self._query(shard, Select="COUNT")
        )

    def create_table(self) -> None:
        """Create the state table unless it exists (deployments declare it instead)."""
        self._table.create()

    def close(self) -> None:
        self._table.close()

    def _due(self, shard: str, now: int) -> Iterator[tuple[str, str]]:
        """``(order, id)`` of the due sends the index lists in ``shard``, oldest first."""
        for response in self._query(
            shard,
            FilterExpression="claimed_until_ms <= :now",
            ExpressionAttributeValues={":shard": s(shard), ":now": n(now)},
        ):
            for entry in response["Items"]:
                order = entry["outbox_order"]["S"]
                yield order, order.split("#", 1)[1]

    def _query(self, shard: str, **params: Any) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {
            "IndexName": OUTBOX_INDEX,
            "KeyConditionExpression": "outbox_shard = :shard",
            "ExpressionAttributeValues": {":shard": s(shard)},
            **params,
        }
        while True:
            response = self._table.call("query", **request)
            yield response
            if "LastEvaluatedKey" not in response:
                return
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _claim(self, send_id: str, *, now: int, until: int) -> PendingSend | None:
        try:
            item = self._table.call(
                "update_item",
                Key=_key(send_id),
                UpdateExpression="SET claimed_until_ms = :until ADD attempts :one",
                ConditionExpression="attribute_exists(pk) AND claimed_until_ms <= :now",
                ExpressionAttributeValues={":until": n(until), ":now": n(now), ":one": n(1)},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except errors.ConditionalCheckFailed:
            return None  # sent and removed, or claimed by another drain, since the query
        return _send(send_id, item)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _shard(send_id: str) -> str:
    return f"outbox#{zlib.crc32(send_id.encode()) % OUTBOX_SHARDS}"


def _shards() -> Iterator[str]:
    return (f"outbox#{index}" for index in range(OUTBOX_SHARDS))


def _key(send_id: str) -> dict[str, Any]:
    return {"pk": s(f"outbox#{send_id}"), "sk": s(_SK)}


def _send(send_id: str, item: Mapping[str, Any]) -> PendingSend:
    def text(name: str) -> str | None:
        value = item.get(name)
        return None if value is None else str(value["S"])

    return PendingSend(
        id=send_id,
        queue=item["queue"]["S"],
        body=item["body"]["S"],
        attributes=json.loads(item["attributes"]["S"]),
        group_id=text("group_id"),
        deduplication_id=text("deduplication_id"),
        attempts=int(item["attempts"]["N"]),
    )


if TYPE_CHECKING:
    _fits: type[Outbox] = DynamoOutbox
