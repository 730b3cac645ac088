"""The lease heartbeat: while a handler runs, its messages stay invisible.

Every tracked message's visibility is extended before it lapses, up to SQS's 12-hour cap
from its receipt, and extension stops the moment the batch is settled. A lease that was lost
anyway (the message was received again elsewhere) is dropped, not fought over.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vaultq import errors
from vaultq.queues.protocol import (
    MAX_BATCH_ENTRIES,
    MAX_VISIBILITY_TIMEOUT_SECONDS,
    VisibilityEntry,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from vaultq.queues.protocol import QueueBackend, ReceivedMessage

log = logging.getLogger(__name__)
_TICK_SECONDS = 0.5


@dataclass(slots=True)
class _Lease:
    queue: str
    receipt_handle: str
    visibility_timeout_seconds: int
    received_at: float
    expires_at: float


class LeaseKeeper:
    """Extends the visibility of tracked messages from a background thread."""

    def __init__(self, queues: QueueBackend) -> None:
        self._queues = queues
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vaultq-leases", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def track(
        self, queue: str, messages: Iterable[ReceivedMessage], visibility_timeout_seconds: int
    ) -> None:
        now = time.monotonic()
        with self._lock:
            for message in messages:
                self._leases[message.receipt_handle] = _Lease(
                    queue,
                    message.receipt_handle,
                    visibility_timeout_seconds,
                    now,
                    now + visibility_timeout_seconds,
                )

    def untrack(self, messages: Iterable[ReceivedMessage]) -> None:
        with self._lock:
            for message in messages:
                self._leases.pop(message.receipt_handle, None)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(_TICK_SECONDS):
            try:
                self.extend_due()
            except errors.VaultqError as exc:
                log.warning("lease heartbeat failed: %s", exc.code)

    def extend_due(self) -> None:
        """Extend every lease that would lapse within half its visibility timeout, or within
        two ticks: a short lease is never left to the next tick, which may come too late."""
        now = time.monotonic()
        with self._lock:
            due = [
                lease
                for lease in self._leases.values()
                if lease.expires_at - now
                < max(lease.visibility_timeout_seconds / 2, 2 * _TICK_SECONDS)
            ]
        by_queue: dict[str, list[_Lease]] = {}
        for lease in due:
            by_queue.setdefault(lease.queue, []).append(lease)
        for queue, leases in by_queue.items():
            for start in range(0, len(leases), MAX_BATCH_ENTRIES):
                self._extend(queue, leases[start : start + MAX_BATCH_ENTRIES], now)

    def _extend(self, queue: str, leases: list[_Lease], now: float) -> None:
        entries = []
        for index, lease in enumerate(leases):
            left_seconds = int(lease.received_at + MAX_VISIBILITY_TIMEOUT_SECONDS - now) - 1
            timeout = min(lease.visibility_timeout_seconds, left_seconds)
            if timeout > 0:
                entries.append(
                    VisibilityEntry(
                        id=str(index),
                        receipt_handle=lease.receipt_handle,
                        visibility_timeout_seconds=timeout,
                    )
                )
        if not entries:
            return
        result = self._queues.change_visibility_batch(queue, entries)
        with self._lock:
            for entry in entries:
                lease = leases[int(entry.id)]
                if entry.id in result.successful:
                    lease.expires_at = now + entry.visibility_timeout_seconds
                else:
                    self._leases.pop(lease.receipt_handle, None)
