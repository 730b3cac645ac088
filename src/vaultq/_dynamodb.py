"""The state table: one DynamoDB table for a deployment's per-deployment state on AWS.

The outbox (``vaultq.outbox.dynamodb``), the shared rate limits
(``vaultq.ratelimits.dynamodb``) and the idempotency records
(``vaultq.idempotency.dynamodb``) keep their items here, each under its own ``pk`` prefix
(``outbox#``, ``ratelimit#``, ``idempotency#``) with a fixed ``sk``, so one table, one IAM
resource and one backup cover them all. ``expires_at`` (epoch seconds, rounded up) is the TTL
attribute; DynamoDB deletes expired items only days later, so every store checks
``expires_at_ms`` itself on each read. Outbox items carry no TTL: a pending send must never
vanish. One sparse GSI, ``outbox-due``, lists pending sends oldest first, spread over
``OUTBOX_SHARDS`` partitions so that no index key takes every API write.

This module holds what every DynamoDB adapter shares (the job table's too): the client,
table creation, and the one place where botocore errors become vaultq errors.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from vaultq import errors

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_TABLE = "vaultq-state"
TTL_ATTRIBUTE = "expires_at"
OUTBOX_INDEX = "outbox-due"
#: Index partitions of the outbox: each takes 1/8 of the sends, well under DynamoDB's
#: 1,000 writes per second per partition key at any rate one API deployment reaches.
OUTBOX_SHARDS = 8
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_ACTIVE_POLL_SECONDS = 1.0


def state_table_spec(table: str) -> dict[str, Any]:
    """The ``CreateTable`` request: on-demand, ``pk``/``sk`` keys, the outbox GSI."""
    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"}
            for name in ("pk", "sk", "outbox_shard", "outbox_order")
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": OUTBOX_INDEX,
                "KeySchema": [
                    {"AttributeName": "outbox_shard", "KeyType": "HASH"},
                    {"AttributeName": "outbox_order", "KeyType": "RANGE"},
                ],
                "Projection": {
                    "ProjectionType": "INCLUDE",
                    "NonKeyAttributes": ["claimed_until_ms"],
                },
            }
        ],
    }


class StateTable:
    """A client bound to one state table, translating every error at this edge."""

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        table: str = DEFAULT_TABLE,
        client: Any | None = None,
    ) -> None:
        self.name = check_table_name(table)
        self._owns_client = client is None
        self._client = client if client is not None else new_client(region, endpoint_url)

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """``operation`` on this table; ``ConditionalCheckFailed`` when its condition fails,
        ``BackendUnavailable`` for everything else DynamoDB or the network refuses."""
        try:
            response: dict[str, Any] = getattr(self._client, operation)(
                TableName=self.name, **params
            )
        except (ClientError, BotoCoreError) as exc:
            raise translated(exc, operation) from exc
        return response

    def create(self, *, timeout_seconds: float = 600.0) -> None:
        """Create the table unless it exists (the API needs no ``CreateTable`` permission:
        the template makes it)."""
        ensure_table(self._client, state_table_spec(self.name), timeout_seconds=timeout_seconds)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def ttl_seconds(expires_at_ms: int) -> dict[str, str]:
    """The TTL value, rounded up: DynamoDB must never delete an item vaultq still reads."""
    return n(-(-expires_at_ms // 1000))


def s(text: str) -> dict[str, str]:
    return {"S": text}


def n(number: int) -> dict[str, str]:
    return {"N": str(number)}


def check_table_name(name: object) -> str:
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        raise errors.InvalidSettings(f"not a DynamoDB table name: {name!r}")
    return name


def new_client(region: str, endpoint_url: str | None) -> Any:
    config = Config(retries={"mode": "standard"}, connect_timeout=5, read_timeout=30)
    try:
        return boto3.session.Session().client(
            "dynamodb", region_name=region, endpoint_url=endpoint_url, config=config
        )
    except (BotoCoreError, ValueError) as exc:
        raise errors.InvalidSettings(f"cannot open DynamoDB in {region!r}: {exc}") from None


def ensure_table(client: Any, spec: dict[str, Any], *, timeout_seconds: float) -> None:
    """Create the table ``spec`` (a ``CreateTable`` request) describes unless it exists,
    return once it and its indexes are ACTIVE, and turn TTL on (``TTL_ATTRIBUTE``).
    Idempotent and safe to race; an existing table without the spec's indexes, or expiring
    items by another attribute, raises ``InvalidSettings``."""
    name = spec["TableName"]

    def call(operation: str, **params: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = getattr(client, operation)(TableName=name, **params)
        except (ClientError, BotoCoreError) as exc:
            raise translated(exc, operation) from exc
        return response

    try:
        client.create_table(**spec)
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":  # else there already, or being made
            raise translated(exc, "create_table") from exc
    except BotoCoreError as exc:
        raise translated(exc, "create_table") from exc
    indexes = _wait_until_active(call, name, timeout_seconds)
    missing = {index["IndexName"] for index in spec.get("GlobalSecondaryIndexes", [])} - indexes
    if missing:
        raise errors.InvalidSettings(f"table {name} exists without the indexes {sorted(missing)}")
    if not _ttl_is_on(call, name):
        try:
            call(
                "update_time_to_live",
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
            )
        except errors.BackendUnavailable:
            if not _ttl_is_on(call, name):  # else another process turned it on meanwhile
                raise


def translated(
    exc: Exception,
    operation: str,
    *,
    too_large: type[errors.InvalidParameterValue] = errors.InvalidParameterValue,
) -> errors.VaultqError:
    """A vaultq error naming DynamoDB's error code, never its message, which may quote
    item values (job payloads, idempotency results, message bodies)."""
    if isinstance(exc, BotoCoreError):
        return errors.BackendUnavailable(f"DynamoDB {operation} failed: {type(exc).__name__}")
    code = error_code(exc)
    if code == "ConditionalCheckFailedException":
        return errors.ConditionalCheckFailed(f"DynamoDB {operation}: the condition failed")
    if code == "ValidationException" and "exceeded the maximum allowed size" in _message(exc):
        return too_large(f"DynamoDB {operation}: the item is over DynamoDB's 400 KB limit")
    if code == "ResourceNotFoundException":
        return errors.BackendUnavailable(
            f"DynamoDB {operation}: the table does not exist (its create_table() or the SAM "
            "template makes it)"
        )
    return errors.BackendUnavailable(f"DynamoDB {operation} failed: {code}")


def error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _message(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))


def _wait_until_active(
    call: Callable[..., dict[str, Any]], name: str, timeout_seconds: float
) -> set[str]:
    """The table's index names, once the table and its indexes are ACTIVE. Real time, not
    a store's clock: a test's clock may stand still."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        table = call("describe_table")["Table"]
        indexes = table.get("GlobalSecondaryIndexes", [])
        statuses = {table["TableStatus"]} | {index["IndexStatus"] for index in indexes}
        if statuses == {"ACTIVE"}:
            return {index["IndexName"] for index in indexes}
        if time.monotonic() > deadline:
            raise errors.BackendUnavailable(f"table {name} is not ACTIVE: {sorted(statuses)}")
        time.sleep(_ACTIVE_POLL_SECONDS)


def _ttl_is_on(call: Callable[..., dict[str, Any]], name: str) -> bool:
    ttl = call("describe_time_to_live")["TimeToLiveDescription"]
    if ttl["TimeToLiveStatus"] not in {"ENABLED", "ENABLING"}:
        return False
    if ttl.get("AttributeName") != TTL_ATTRIBUTE:
        raise errors.InvalidSettings(
            f"table {name} expires items by {ttl.get('AttributeName')!r}, not {TTL_ATTRIBUTE!r}"
        )
    return True
