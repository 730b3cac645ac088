"""A durable list of sends that have yet to reach their queue.

The API writes a send here before it creates the job the send belongs to, then sends at
once and removes the row. When the queue backend is down (or disabled), the row stays and a
pump sends it when the backend is back. Rows are claimed for a while before each attempt,
so the request path and the pump never send one row at the same time; a crash between a
send and its row's removal can still send twice, which the worker absorbs (a finished job's
message is deleted without running).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingSend:
    id: str
    queue: str
    body: str
    #: String message attributes (name -> value).
    attributes: Mapping[str, str] = field(default_factory=dict)
    group_id: str | None = None
    deduplication_id: str | None = None
    attempts: int = 0


class Outbox(Protocol):
    def add(self, send: PendingSend, *, claim_seconds: float) -> None:
        """Store ``send`` durably, claimed by the caller for ``claim_seconds``."""
        ...

    def claim_due(self, *, limit: int, claim_seconds: float) -> list[PendingSend]:
        """Claim up to ``limit`` unclaimed sends, oldest first, counting an attempt."""
        ...

    def remove(self, send_id: str) -> None:
        """The send reached its queue. Idempotent."""
        ...

    def count(self) -> int: ...

    def close(self) -> None: ...
