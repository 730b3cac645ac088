"""The idempotency store: one record per idempotency key, claimed before a handler runs.

A record is live while ``expires_at_ms`` (milliseconds since the epoch) is in the future. An
expired record is gone for every read and may be claimed again before any sweep deletes it,
so a crashed attempt's claim lapses at its invocation's deadline without anyone cleaning up.
Policy (how keys are made, what a duplicate sees, which results are storable) lives above
this Protocol, in ``vaultq.idempotency``; a store only needs one atomic step, ``claim``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from vaultq import errors

#: DynamoDB's item limit, so that a result one backend keeps fits every backend.
MAX_RESULT_BYTES = 400 * 1024
MAX_KEY_LENGTH = 512
#: The longest a Lambda (and so a vaultq handler) may run: 15 minutes.
MAX_IN_PROGRESS_MS = 15 * 60 * 1000
#: How long a result may be kept: one year (DynamoDB's TTL takes any time; SQLite too).
MAX_EXPIRES_AFTER_SECONDS = 366 * 24 * 60 * 60

_KEY = re.compile(r"[!-~]+")  # printable ASCII, no spaces


class IdempotencyStatus(StrEnum):
    """What a live record says about its key."""

    #: An attempt claimed the key and has not finished; duplicates wait until it finishes or
    #: until the claim lapses at that attempt's deadline (it crashed or was killed).
    IN_PROGRESS = "IN_PROGRESS"
    #: The handler returned; its JSON result answers duplicates until the record expires.
    COMPLETED = "COMPLETED"


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyRecord:
    key: str
    status: IdempotencyStatus
    #: Which claim wrote the record: a fencing token, fresh for every claim.
    claim_id: str
    #: IN_PROGRESS: when the claim lapses (the attempt's deadline); COMPLETED: when the
    #: stored result lapses and the key may run again.
    expires_at_ms: int
    #: The handler's result as compact JSON; None while in progress.
    result_json: str | None = None


class IdempotencyStore(Protocol):
    """Records of idempotent invocations, keyed by an opaque key (``validate_key``'s form).

    Every method reads the time from the store's own clock, so all processes sharing a store
    agree on which records are expired.
    """

    def claim(self, key: str, *, claim_id: str, in_progress_ms: int) -> IdempotencyRecord:
        """Atomically claim ``key`` unless a live record holds it.

        With no live record, write ``IN_PROGRESS`` with ``claim_id`` lapsing ``in_progress_ms``
        from now, and return it. Otherwise return the live record untouched: the caller won
        exactly when the returned ``claim_id`` is its own. Two claims racing for one key, from
        any threads or processes, never both win."""
        ...

    def complete(
        self, key: str, *, claim_id: str, result_json: str, expires_after_seconds: int
    ) -> bool:
        """Turn the caller's ``IN_PROGRESS`` claim into ``COMPLETED`` with ``result_json``,
        live for ``expires_after_seconds`` from now. Returns False, changing nothing, when
        the claim is no longer the caller's (it lapsed and another attempt claimed the key)."""
        ...

    def release(self, key: str, *, claim_id: str) -> None:
        """Delete the caller's ``IN_PROGRESS`` claim so that a retry may run; nothing happens
        when the claim is no longer the caller's. Idempotent."""
        ...

    def get(self, key: str) -> IdempotencyRecord | None:
        """The live record of ``key``, or None (never claimed, released, or expired)."""
        ...

    def close(self) -> None: ...


def validate_key(key: str) -> str:
    """Keys are 1-512 printable ASCII characters without spaces."""
    if len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise errors.IdempotencyKeyError(
            f"an idempotency key is 1-{MAX_KEY_LENGTH} printable ASCII characters"
        )
    return key


def validate_claim(claim_id: str, *, in_progress_ms: int) -> None:
    if not claim_id or len(claim_id) > MAX_KEY_LENGTH:
        raise errors.InvalidParameterValue("a claim id is 1-512 characters")
    if isinstance(in_progress_ms, bool) or not 1 <= in_progress_ms <= MAX_IN_PROGRESS_MS:
        raise errors.InvalidParameterValue(f"in_progress_ms must be 1..{MAX_IN_PROGRESS_MS}")


def validate_completion(result_json: str, *, expires_after_seconds: int) -> None:
    if len(result_json.encode()) > MAX_RESULT_BYTES:
        raise errors.IdempotencyResultNotStorable(
            f"an idempotent result is at most {MAX_RESULT_BYTES} bytes of JSON"
        )
    validate_expires_after(expires_after_seconds)


def validate_expires_after(expires_after_seconds: int) -> None:
    if isinstance(expires_after_seconds, bool) or not (
        1 <= expires_after_seconds <= MAX_EXPIRES_AFTER_SECONDS
    ):
        raise errors.InvalidParameterValue(
            f"expires_after_seconds must be 1..{MAX_EXPIRES_AFTER_SECONDS}"
        )
