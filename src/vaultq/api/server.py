"""``vaultq up``: the HTTP API and the workers of an app, on one machine, until Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import uvicorn

from vaultq import wiring
from vaultq.api.app import create_api
from vaultq.api.auth import AuthSettings, TokenVerifier
from vaultq.api.services import ApiServices, ApiSettings
from vaultq.app import load_app
from vaultq.observe.alarm_evaluator import AlarmEvaluator
from vaultq.observe.alarms import Webhook
from vaultq.observe.metrics import CONTENT_TYPE, VaultqCollector, new_registry, render

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    from vaultq.app import App
    from vaultq.observe.alarms import AlarmStore
    from vaultq.observe.protocol import MetricsStore
    from vaultq.queues.protocol import QueueBackend
    from vaultq.settings import Settings

log = logging.getLogger(__name__)
_AUTH_KEYS = ("VAULTQ_AUTH_HS256_SECRET", "VAULTQ_AUTH_PUBLIC_KEYS", "VAULTQ_AUTH_JWKS_PATH")
_WORKER_STOP_SECONDS = 60


def development_secret(url: str | None = None) -> bytes:
    """The HS256 secret of a machine with no auth configured: random, kept beside the data,
    used by ``vaultq up`` and ``vaultq token`` alike."""
    return wiring.local_secret(wiring.data_dir(url), "dev-hs256").hex().encode()


def auth_settings(url: str | None = None) -> tuple[AuthSettings, bool]:
    """The configured auth settings, or development ones; the flag says which."""
    if any(os.environ.get(name) for name in _AUTH_KEYS):
        return AuthSettings.from_env(), False
    return AuthSettings(hs256_secret=development_secret(url)), True


def build_services(app_path: str, settings: Settings) -> ApiServices:
    app = load_app(app_path)
    queues = wiring.open_queues(settings.url)
    blobs = wiring.open_blobs(settings.url, notifier=app.notifier(queues)) if app.buckets else None
    app.provision(queues, blobs)
    auth, _ = auth_settings(settings.url)
    metrics_store = wiring.open_metrics(settings.url)
    jobs = wiring.open_jobs(settings.url)
    registry = new_registry(
        VaultqCollector(
            queues=queues,
            metrics=metrics_store,
            job_counts=lambda: {status.value: n for status, n in jobs.count_by_status().items()},
        )
    )
    alarms = wiring.open_alarms(settings.url)
    api_settings = ApiSettings.from_settings(settings)
    # Embedded, the outbox, the jobs and the queues share one file: a submission's job
    # creation (synchronous=FULL) makes its outbox row durable, and that row its message.
    embedded = urlsplit(settings.url).scheme == "sqlite"
    return ApiServices(
        app=app,
        queues=queues,
        jobs=jobs,
        limiter=wiring.open_rate_limiter(settings.url, default=api_settings.request_bucket),
        metrics_store=metrics_store,
        metrics=lambda: (render(registry), CONTENT_TYPE),
        alarms=alarms,
        alarm_evaluator=_alarm_evaluator(app, settings, alarms, queues, metrics_store),
        outbox=wiring.open_outbox(settings.url, durable_adds=not embedded),
        delivery=wiring.open_queues(settings.url, durability="process") if embedded else None,
        blobs=blobs,
        idempotency=wiring.open_idempotency_store(settings.url),
        verifier=TokenVerifier(auth),
        settings=api_settings,
    )


def _alarm_evaluator(
    app: App, settings: Settings, store: AlarmStore, queues: QueueBackend, metrics: MetricsStore
) -> AlarmEvaluator | None:
    if not app.alarms:
        return None
    url = settings.alarm_webhook_url
    return AlarmEvaluator(
        app.alarms.values(),
        app_name=app.name,
        store=store,
        queues=queues,
        metrics=metrics,
        interval_seconds=settings.alarm_interval_seconds,
        webhooks=() if url is None else (Webhook(url=url.get_secret_value()),),
    )


def serve(
    app_path: str,
    *,
    host: str,
    port: int,
    workers: int,
    settings: Settings,
    announce: Callable[[str], None],
) -> None:
    """Serve until SIGINT or SIGTERM, then stop the workers gracefully (they drain)."""
    services = build_services(app_path, settings)
    # uvicorn handles SIGTERM as it does Ctrl-C, then raises it again once it has stopped;
    # with the default handler that second SIGTERM would end this process on the spot,
    # before the `finally` below stops the workers, which would run on, orphaned.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    processes = [_start_worker(app_path, settings.url) for _ in range(workers)]
    try:
        _, development = auth_settings(settings.url)
        announce(_banner(services.app, app_path, host, port, workers, development=development))
        config = uvicorn.Config(
            create_api(services), host=host, port=port, log_level="info", access_log=False
        )
        uvicorn.Server(config).run()
    finally:
        _stop_workers(processes)
        for store in (
            services.queues,
            services.delivery,
            services.jobs,
            services.outbox,
            services.blobs,
            services.metrics_store,
            services.alarms,
            services.limiter,
            services.idempotency,
        ):
            if store is not None:
                store.close()


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _start_worker(app_path: str, url: str) -> subprocess.Popen[bytes]:
    # This interpreter, this package and the app path the user gave: nothing else.
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "vaultq", "worker", app_path, "--url", url]
    )


def _stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()  # SIGTERM: the worker drains
    for process in processes:
        try:
            process.wait(timeout=_WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()


def _banner(
    app: App, app_path: str, host: str, port: int, workers: int, *, development: bool
) -> str:
    base = f"http://{host}:{port}"
    lines = [
        f"vaultq up: {app_path} at {base} with {workers} worker process(es)",
        f"  API docs: {base}/docs   health: {base}/healthz   metrics: {base}/metrics",
    ]
    if app.job_routes:
        lines += ["  submit a job:", "    TOKEN=$(vaultq token --tenant demo --role producer)"]
    for path, route in app.job_routes.items():
        if route.body is None and not route.files:
            lines.append(
                f'    curl -s -H "Authorization: Bearer $TOKEN" '
                f"-H 'Content-Type: application/json' "
                f'-d \'{{"payload": {{"hello": "world"}}}}\' {base}{path}'
            )
        else:
            lines.append(f"    POST {base}{path}  (its body: {base}/docs)")
    if app.job_routes:
        lines.append(f'    curl -s -H "Authorization: Bearer $TOKEN" {base}/jobs/JOB_ID')
    if development:
        lines.append(
            "  auth: development secret (set VAULTQ_AUTH_HS256_SECRET or keys for real use)"
        )
    return "\n".join(lines)
