"""The one flow every idempotent call takes: claim, run, then complete or release."""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from typing import TYPE_CHECKING, TypeAlias, TypeVar, cast

from vaultq import errors
from vaultq.idempotency._keys import encode_result
from vaultq.idempotency.protocol import (
    MAX_IN_PROGRESS_MS,
    IdempotencyStatus,
    validate_completion,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from vaultq.idempotency.protocol import IdempotencyRecord, IdempotencyStore

log = logging.getLogger("vaultq.idempotency")
R = TypeVar("R")
StoreOption: TypeAlias = "IdempotencyStore | Callable[[], IdempotencyStore] | None"


def run_once(
    store: IdempotencyStore,
    key: str,
    *,
    in_progress_ms: int,
    expires_after_seconds: int,
    call: Callable[[], R],
) -> R:
    """Run ``call`` unless ``key`` completed (its stored result is returned) or is running
    elsewhere (``IdempotencyAlreadyInProgress``). Exceptions of ``call`` release the claim
    and propagate unchanged."""
    claim_id = uuid.uuid4().hex
    record = store.claim(key, claim_id=claim_id, in_progress_ms=in_progress_ms)
    if record.claim_id != claim_id:
        # A stored result is JSON that read back equal to what ``call`` returned (checked
        # before storing), so it stands for an R.
        return cast("R", _answer_duplicate(record))
    log.debug("idempotency %s: claimed", key)
    try:
        result = call()
        result_json = encode_result(result)
        validate_completion(result_json, expires_after_seconds=expires_after_seconds)
    except Exception:
        _release(store, key, claim_id)
        raise
    # A failure to store the result leaves the claim to lapse at the deadline: releasing it
    # would let a retry repeat side effects that already happened.
    if not store.complete(
        key, claim_id=claim_id, result_json=result_json, expires_after_seconds=expires_after_seconds
    ):
        log.warning("idempotency %s: claim lapsed before completion; result not stored", key)
    return result


def _answer_duplicate(record: IdempotencyRecord) -> object:
    if record.status is IdempotencyStatus.COMPLETED and record.result_json is not None:
        log.info("idempotency %s: completed before; returning the stored result", record.key)
        stored: object = json.loads(record.result_json)
        return stored
    log.info("idempotency %s: another attempt is in progress", record.key)
    raise errors.IdempotencyAlreadyInProgress(
        f"an attempt with idempotency key {record.key} is in progress; retry after it ends "
        f"(its claim lapses at {record.expires_at_ms} ms)"
    )


def _release(store: IdempotencyStore, key: str, claim_id: str) -> None:
    try:
        store.release(key, claim_id=claim_id)
    except errors.VaultqError as exc:
        # The handler's own exception matters more; the claim lapses at its deadline anyway.
        log.warning("idempotency %s: could not release the claim: %s", key, exc.code)


def in_progress_ms(context: object) -> int:
    """How long a claim lasts: the invocation's remaining time, so a crashed attempt's
    claim lapses when the runtime would have stopped it anyway."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    millis = remaining() if callable(remaining) else None
    if isinstance(millis, int) and millis > 0:
        return min(millis, MAX_IN_PROGRESS_MS)
    # Unknown (no context) or already past: as long as any invocation may run.
    return MAX_IN_PROGRESS_MS


class StoreRef:
    """The store of one decorated function, opened at its first call in each process."""

    def __init__(self, store: StoreOption) -> None:
        self._given = store
        self._opened: IdempotencyStore | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> IdempotencyStore:
        given = self._given
        if given is not None and not callable(given):
            return given
        with self._lock:
            # A store opened before a fork belongs to the parent: its connections are not
            # safe to share, so a child opens its own.
            if self._opened is None or self._pid != os.getpid():
                self._opened = _open_default() if given is None else given()
                self._pid = os.getpid()
            return self._opened


def _open_default() -> IdempotencyStore:
    from vaultq import wiring  # noqa: PLC0415 - wiring names adapters; import at first use

    store: IdempotencyStore = wiring.open_idempotency_store()
    return store
