"""A smoke run of ``vaultq bench queue --quick``: every scenario runs and reports a rate."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from typer.testing import CliRunner

from vaultq.bench import bench_app
from vaultq.bench.queue import DURABILITIES, SCENARIOS

if TYPE_CHECKING:
    from pathlib import Path


def test_quick_queue_bench_reports_every_scenario_in_both_modes_with_positive_rates(
    tmp_path: Path,
) -> None:
    # Given a quick run in a directory of the test's own
    # When the benchmark prints its figures as JSON
    result = CliRunner().invoke(bench_app, ["queue", "--quick", "--json", "--dir", str(tmp_path)])

    # Then every scenario ran in both durability modes, each with a positive rate
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rates = {(r["scenario"], r["durability"]): r["msgs_per_second"] for r in report["results"]}
    assert set(rates) == {(s.key, d) for s in SCENARIOS for d in DURABILITIES}
    assert all(rate > 0 for rate in rates.values())
    assert report["fsync_per_second"] > 0
    assert all(value > 0 for value in report["ratios"].values())
    assert list(tmp_path.iterdir()) == []  # the scenario databases are cleaned up
