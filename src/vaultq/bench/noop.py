"""The app the runtime benchmark drains: no-op handlers, one per batching setup."""

from __future__ import annotations

from typing import Any

from vaultq.app import App

app = App("bench")
app.queue("bench-batch10", visibility_timeout_seconds=60)
app.queue("bench-batch100", visibility_timeout_seconds=60)


@app.handler(queue="bench-batch10", batch_size=10, max_concurrency=2)
def batch10(event: dict[str, Any], context: Any) -> None:
    """Lambda's default mapping: up to 10 records, no batching window."""


@app.handler(
    queue="bench-batch100", batch_size=100, batching_window_seconds=0.05, max_concurrency=2
)
def batch100(event: dict[str, Any], context: Any) -> None:
    """Up to 100 records gathered for at most 50 ms."""
