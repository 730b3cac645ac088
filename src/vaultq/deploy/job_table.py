"""The DynamoDB job table as the template declares it: the schema of ``vaultq.jobs.dynamodb``.

Items are keyed ``pk = tenant#client#job``; three GSIs (by tenant+status, tenant+client,
tenant+UTC creation day) sort on ``created_key`` and project only their keys and
``expires_at_ms``; ``expires_at`` (epoch seconds) is the TTL attribute. Only
``vaultq.wiring`` may name an adapter, so this module restates the adapter's ``table_spec``
instead of importing it; ``tests/deploy`` asserts the two are the same table.
"""

from __future__ import annotations

from typing import Any

PARTITION_KEY = "pk"
SORT_KEY = "created_key"
TTL_ATTRIBUTE = "expires_at"
#: GSI name -> its partition key attribute.
INDEXES = {"by-status": "tenant_status", "by-client": "tenant_client", "by-day": "tenant_day"}
_PROJECTED = ["expires_at_ms"]


def table_properties() -> dict[str, Any]:
    """The ``AWS::DynamoDB::Table`` properties, encrypted and with point-in-time recovery."""
    key_attributes = [PARTITION_KEY, SORT_KEY, *INDEXES.values()]
    return {
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"} for name in key_attributes
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": name,
                "KeySchema": [
                    {"AttributeName": partition, "KeyType": "HASH"},
                    {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": _PROJECTED},
            }
            for name, partition in INDEXES.items()
        ],
        "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
        "SSESpecification": {"SSEEnabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
    }
