"""Observability: metrics that survive processes (alarms, dashboards and logs come later).

Workers and the HTTP API write to a ``MetricsStore``; Prometheus scrapes read it through
``vaultq.observe.metrics.VaultqCollector`` (which needs ``prometheus_client``, so it is not
imported here), and alarms read windows of it. ``vaultq.observe.sqlite_metrics.SqliteMetrics``
is the embedded store.
"""

from __future__ import annotations

from vaultq.observe.protocol import (
    API_REQUESTS,
    HANDLER_INVOCATIONS,
    HANDLER_MESSAGES,
    UNMATCHED_ROUTE,
    InvocationOutcome,
    MessageResult,
    MetricsStore,
    Series,
    SeriesTotal,
    invocation_outcome,
)

__all__ = [
    "API_REQUESTS",
    "HANDLER_INVOCATIONS",
    "HANDLER_MESSAGES",
    "UNMATCHED_ROUTE",
    "InvocationOutcome",
    "MessageResult",
    "MetricsStore",
    "Series",
    "SeriesTotal",
    "invocation_outcome",
]
