"""What the API's routes work with, gathered once at start-up and shared by every request."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from vaultq import errors
from vaultq.queues.protocol import MessageAttribute, OutgoingMessage
from vaultq.runtime.rate_limit import TokenBucket

if TYPE_CHECKING:
    from collections.abc import Callable

    from vaultq.api.auth import TokenVerifier
    from vaultq.app import App
    from vaultq.blobs.protocol import BlobStore
    from vaultq.idempotency.protocol import IdempotencyStore
    from vaultq.jobs.protocol import JobStore
    from vaultq.observe.alarm_evaluator import AlarmEvaluator
    from vaultq.observe.alarms import AlarmStore
    from vaultq.observe.protocol import MetricsStore
    from vaultq.outbox.protocol import Outbox, PendingSend
    from vaultq.queues.protocol import QueueBackend
    from vaultq.runtime.rate_limit import RateLimiter
    from vaultq.settings import Settings

log = logging.getLogger(__name__)
_PUMP_INTERVAL_SECONDS = 1.0
_CLAIM_SECONDS = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiSettings:
    #: With the queue disabled, accepted jobs wait in the outbox, ``queued``.
    queue_enabled: bool = True
    max_request_bytes: int = 2 * 1024 * 1024
    max_blob_bytes: int = 64 * 1024 * 1024
    download_url_seconds: int = 900
    rate_limit_per_second: float = 50.0
    rate_limit_burst: int = 100
    cors_origins: tuple[str, ...] = ()
    operator_tenant: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiSettings:
        return cls(
            queue_enabled=settings.queue_enabled,
            max_request_bytes=settings.max_request_bytes,
            max_blob_bytes=settings.max_blob_bytes,
            download_url_seconds=settings.download_url_seconds,
            rate_limit_per_second=settings.rate_limit_per_second,
            rate_limit_burst=settings.rate_limit_burst,
            cors_origins=settings.cors_origins,
            operator_tenant=settings.operator_tenant,
        )

    @property
    def request_bucket(self) -> TokenBucket:
        """Each tenant's allowance of requests."""
        return TokenBucket(rate_per_second=self.rate_limit_per_second, burst=self.rate_limit_burst)


@dataclass(slots=True, kw_only=True)
class ApiServices:
    app: App
    queues: QueueBackend
    jobs: JobStore
    outbox: Outbox
    verifier: TokenVerifier
    blobs: BlobStore | None = None
    #: Where job routes remember submissions to answer duplicates with their first job.
    idempotency: IdempotencyStore | None = None
    settings: ApiSettings = field(default_factory=ApiSettings)
    #: Shared per-tenant request limits (a ``RateLimiter``); none means unlimited.
    limiter: RateLimiter | None = None
    #: Where request metrics go (a ``MetricsStore``).
    metrics_store: MetricsStore | None = None
    #: Renders the Prometheus exposition: ``() -> (body, content type)``.
    metrics: Callable[[], tuple[bytes, str]] | None = None
    #: Alarm states and history (an ``AlarmStore``), and what evaluates the app's alarms
    #: while the API is up.
    alarms: AlarmStore | None = None
    alarm_evaluator: AlarmEvaluator | None = None
    #: Where outbox sends go, if not ``queues``: on the embedded backend, the same queues
    #: opened with ``durability="process"``. A send's outbox row is already durable in the
    #: same file and its removal commits after the send, so a power cut can only lose the
    #: send together with the removal, and the pump sends the row again.
    delivery: QueueBackend | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _pump: threading.Thread | None = None

    def check_rate(self, tenant: str) -> None:
        """Spend one request of ``tenant``'s allowance, or raise ``Throttled``."""
        if self.limiter is None:
            return
        decision = self.limiter.acquire(f"api:{tenant}")
        if not decision.allowed:
            raise errors.Throttled(
                "too many requests for this tenant",
                retry_after_seconds=decision.retry_after_seconds,
            )

    def send_or_keep(self, send: PendingSend) -> bool:
        """Send a stored outbox entry now; keep it for the pump if the queue is not there."""
        if not self.settings.queue_enabled:
            return False
        try:
            deliver(self.delivery or self.queues, send)
        except errors.BackendUnavailable as exc:
            log.warning("queue unavailable, job kept in the outbox: %s", exc.code)
            return False
        self.outbox.remove(send.id)
        return True

    def start_pump(self) -> None:
        self._pump = threading.Thread(target=self._run_pump, name="vaultq-outbox", daemon=True)
        self._pump.start()

    def stop_pump(self) -> None:
        self._stop.set()
        if self._pump is not None:
            self._pump.join(timeout=10)

    def _run_pump(self) -> None:
        while not self._stop.wait(_PUMP_INTERVAL_SECONDS):
            if not self.settings.queue_enabled:
                continue
            try:
                due = self.outbox.claim_due(limit=100, claim_seconds=_CLAIM_SECONDS)
            except errors.VaultqError as exc:
                log.warning("outbox pump: %s", exc.code)
                continue
            for send in due:
                try:
                    self.send_or_keep(send)
                except errors.VaultqError as exc:
                    # A send its queue refuses (deleted, message refused) must not hold up
                    # the others: it stays in the outbox and is tried again later.
                    log.warning("outbox send %s kept: %s", send.id, exc.code)


def deliver(queues: QueueBackend, send: PendingSend) -> None:
    queues.send(
        send.queue,
        OutgoingMessage(
            body=send.body,
            attributes={
                name: MessageAttribute(data_type="String", value=value)
                for name, value in send.attributes.items()
            },
            group_id=send.group_id,
            deduplication_id=send.deduplication_id,
        ),
    )


async def services(request: Request) -> ApiServices:
    """The app's services; async, so that FastAPI reads them on the event loop rather than
    sending every request to a worker thread for an attribute lookup."""
    found: ApiServices = request.app.state.services
    return found


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
