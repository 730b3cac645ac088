"""A smoke run of ``vaultq bench api``: a real `vaultq up`, both endpoints, positive figures."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vaultq.bench import bench_app


@pytest.mark.slow
def test_tiny_api_bench_reports_throughput_and_latency_for_submits_and_health_checks() -> None:
    # Given a tiny run: 4 clients for 2 seconds per endpoint
    # When the benchmark prints its figures as JSON
    result = CliRunner().invoke(bench_app, ["api", "--seconds", "2", "--clients", "4", "--json"])

    # Then both endpoints answered every request, with a positive rate and latencies
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for endpoint in ("submit", "health"):
        figures = report[endpoint]
        assert figures["requests"] > 0
        assert figures["errors"] == 0, figures["statuses"]
        assert figures["requests_per_second"] > 0
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
    assert report["submit"]["statuses"].keys() == {"202"}
    assert report["health"]["statuses"].keys() == {"200"}
    assert all(value > 0 for value in report["ratios"].values())
