"""Idempotency keys and results: canonical JSON, SQS payloads, SHA-256.

A key is ``<module>.<qualname>#<sha256 of the canonical JSON of the key value>``: the hash
keeps the key's value (an order id, a message body) out of the store and out of logs, and
the prefix keeps two functions with equal payloads apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from vaultq import errors

_SQS = "aws:sqs"


def namespace(function: object) -> str:
    module = getattr(function, "__module__", None) or "?"
    qualname = getattr(function, "__qualname__", None) or repr(function)
    return f"{module}.{qualname}".replace(" ", "_")


def hashed_key(prefix: str, value: object) -> str:
    if value is None:
        raise errors.IdempotencyKeyError("the idempotency key is None: nothing to key on")
    digest = hashlib.sha256(canonical_json(value).encode()).hexdigest()
    return f"{prefix}#{digest}"


def canonical_json(value: object) -> str:
    """Sorted keys, no spaces, UTF-8: equal values give equal text."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise errors.IdempotencyKeyError(f"an idempotency key must be JSON: {exc}") from None


def event_payload(event: object) -> object:
    """What identifies an event's work: for SQS, each record's body and message attributes.

    Receipt handles, message ids, receive counts and timestamps change when a message is
    delivered again or sent twice, so they are left out; any other event is kept whole.
    """
    if isinstance(event, Mapping):
        records = event.get("Records")
        if isinstance(records, list) and records and all(map(_is_sqs_record, records)):
            return [_record_payload(record) for record in records]
        if _is_sqs_record(event):
            return _record_payload(event)
    return event


def _is_sqs_record(record: object) -> bool:
    return isinstance(record, Mapping) and record.get("eventSource") == _SQS


def _record_payload(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "body": record.get("body"),
        "messageAttributes": record.get("messageAttributes") or {},
    }


def encode_result(result: object) -> str:
    """Compact JSON of a result that reads back equal, or ``IdempotencyResultNotStorable``."""
    try:
        text = json.dumps(result, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        faithful = json.loads(text) == result
    except (TypeError, ValueError, RecursionError):
        faithful = False
    if not faithful:
        raise errors.IdempotencyResultNotStorable(
            f"the result ({type(result).__name__}) is not JSON that reads back equal; "
            "tuples, sets, bytes, NaN and non-str keys cannot be stored for duplicates"
        )
    return text
