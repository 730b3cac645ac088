"""The HTTP API on Lambda, behind an API Gateway HTTP API (payload format 2.0).

``vaultq.api.aws_lambda.api_handler`` serves the same FastAPI app as ``vaultq up``, through
Mangum (ASGI <-> Lambda events). Its services are built once per execution environment from the
settings (``VAULTQ_URL`` names SQS, the job table and the state table; ``VAULTQ_AUTH_*`` the
token keys, which must be set: there is no development secret on Lambda). What differs from
``vaultq up``, and why:

- No outbox pump thread: Lambda freezes an environment between invocations, so a thread
  would run at random and die unannounced. A request sends its job's message at once, as
  everywhere; a send the queue refused stays in the outbox, and ``outbox_handler``, which
  the template runs every minute, drains it.
- No metrics store, Prometheus exposition or alarm evaluator: on AWS, metrics and alarms
  are CloudWatch's (Lambda, API Gateway and SQS metrics, alarms in the template).
- Queues and buckets are not provisioned: the template made them, and the API's role may
  only send to queues and read and write job files.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from mangum import Mangum
from mangum.adapter import DEFAULT_TEXT_MIME_TYPES

from vaultq import errors, wiring
from vaultq.api.app import create_api
from vaultq.api.auth import AuthSettings, TokenVerifier
from vaultq.api.services import ApiServices, ApiSettings, deliver
from vaultq.app import load_app

if TYPE_CHECKING:
    from vaultq.outbox.protocol import Outbox, PendingSend
    from vaultq.queues.protocol import QueueBackend
    from vaultq.settings import Settings

log = logging.getLogger(__name__)

#: The app (``module:attribute``), as for every function of a deployed app.
APP_VARIABLE = "VAULTQ_APP"
DRAIN_BATCH = 100
#: A claimed send is not tried again for this long: one SQS send takes far less.
DRAIN_CLAIM_SECONDS = 30.0
#: The drain stops claiming when less than this is left of its invocation.
DRAIN_MARGIN_MS = 10_000


def api_handler(event: Any, context: Any) -> Any:
    """Answer one API Gateway HTTP API request for the app ``VAULTQ_APP``."""
    return _adapter(_app_path())(event, context)


def outbox_handler(event: Any, context: Any) -> dict[str, int]:
    """Send what the outbox holds (a scheduled event; the event itself is not read), batch
    by batch until it is empty, a send is refused, or the invocation is about to end. A
    refused send stays for a later run. Needs only ``VAULTQ_URL``: a send names its queue."""
    sent = kept = 0
    if not wiring.load_settings().queue_enabled:
        return {"sent": sent, "kept": kept}
    queues, outbox = _drain_stores()
    while context.get_remaining_time_in_millis() > DRAIN_MARGIN_MS:
        batch = outbox.claim_due(limit=DRAIN_BATCH, claim_seconds=DRAIN_CLAIM_SECONDS)
        for send in batch:
            if _send(queues, outbox, send):
                sent += 1
            else:
                kept += 1
        if len(batch) < DRAIN_BATCH or kept:
            break
    return {"sent": sent, "kept": kept}


def _send(queues: QueueBackend, outbox: Outbox, send: PendingSend) -> bool:
    try:
        deliver(queues, send)
    except errors.VaultqError as exc:
        # Whatever the reason (queue down, deleted, message refused), one send must not
        # hold up the others; it stays claimed for a while, then a later run tries again.
        log.warning("outbox send %s kept: %s", send.id, exc.code)
        return False
    outbox.remove(send.id)
    return True


@functools.cache
def _drain_stores() -> tuple[QueueBackend, Outbox]:
    url = _aws_url(wiring.load_settings())
    return wiring.open_queues(url), wiring.open_outbox(url)


@functools.cache
def _adapter(app_path: str) -> Mangum:
    # lifespan off: the app's start-up would start the pump thread (see the module's docs).
    # Problem details are text too; Mangum would base64 them (API Gateway decodes either).
    text_types = [*DEFAULT_TEXT_MIME_TYPES, "application/problem+json"]
    return Mangum(create_api(lambda_services(app_path)), lifespan="off", text_mime_types=text_types)


@functools.cache
def lambda_services(app_path: str) -> ApiServices:
    """The API's services on AWS, made once per execution environment."""
    started = time.monotonic()
    settings = wiring.load_settings()
    _aws_url(settings)
    app = load_app(app_path)
    queues = wiring.open_queues(settings.url)
    api_settings = ApiSettings.from_settings(settings)
    services = ApiServices(
        app=app,
        queues=queues,
        jobs=wiring.open_jobs(settings.url),
        outbox=wiring.open_outbox(settings.url),
        blobs=wiring.open_blobs(settings.url) if app.buckets else None,
        idempotency=wiring.open_idempotency_store(settings.url),
        limiter=wiring.open_rate_limiter(settings.url, default=api_settings.request_bucket),
        verifier=TokenVerifier(AuthSettings.from_env()),
        settings=api_settings,
    )
    log.info("API services ready in %.0f ms", (time.monotonic() - started) * 1000)
    return services


def _aws_url(settings: Settings) -> str:
    if not settings.url.startswith("aws://"):
        raise errors.InvalidSettings("on Lambda, VAULTQ_URL is an aws:// URL")
    return settings.url


def _app_path() -> str:
    value = os.environ.get(APP_VARIABLE)
    if not value:
        raise errors.InvalidSettings(f"{APP_VARIABLE} is not set: the function's template sets it")
    return value
