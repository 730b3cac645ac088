"""The queue benchmark's report as Rich tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from vaultq.bench.queue import BODY_BYTES

if TYPE_CHECKING:
    from rich.console import Console

    from vaultq.bench.queue import BenchReport, ScenarioResult

_RATIO_LABELS = {
    "concurrent_single_sends_per_fsync_full": "concurrent single sends/s ÷ fsync/s, full",
    "sequential_single_sends_per_fsync_full": "sequential single sends/s ÷ fsync/s, full",
    "concurrent_over_sequential_single_sends_full": "concurrent ÷ sequential single sends, full",
    "batched_over_concurrent_single_sends_full": "batched ÷ concurrent single sends, full",
    "process_over_full_sequential_single_sends": "sequential single sends, process ÷ full",
    "receive_delete_2_over_1_processes_full": "receive+delete, 2 ÷ 1 processes, full",
    "receive_delete_2_over_1_processes_process": "receive+delete, 2 ÷ 1 processes, process",
}
_RATIO_MEANINGS = {
    "concurrent_single_sends_per_fsync_full": "messages per fsync: > 1 is group commit at work",
    "sequential_single_sends_per_fsync_full": "at most 1: each send waits for its own fsync",
    "concurrent_over_sequential_single_sends_full": "what 64 threads gain over one",
    "batched_over_concurrent_single_sends_full": "what batches of 10 gain",
    "process_over_full_sequential_single_sends": "what skipping the fsync gains",
    "receive_delete_2_over_1_processes_full": "scaling across consumer processes",
    "receive_delete_2_over_1_processes_process": "scaling across consumer processes",
}


#: Wide enough for one line per row when the output is not a terminal (a file, a pipe).
REPORT_WIDTH_CHARS = 170


def render_report(report: BenchReport, console: Console) -> None:
    console.print(_results_table(report))
    console.print(_ratios_table(report))


def _results_table(report: BenchReport) -> Table:
    probes = ", ".join(f"{probe:,.0f}" for probe in report.fsync_probes_per_second)
    env = report.environment
    table = Table(
        title="vaultq bench queue",
        caption=(
            f"Each scenario on a fresh database; {BODY_BYTES}-byte bodies. "
            f"Disk: {report.fsync_per_second:,.0f} fsync/s, the median of probes {probes} "
            f"(4 KiB append + fsync in {report.directory}). {env.get('cpus')} CPUs, 1-minute "
            f"load average {_number(env.get('load_average_1min_before'))} before, "
            f"{_number(env.get('load_average_1min_after'))} after; Python {env.get('python')}, "
            f"SQLite {env.get('sqlite')}."
        ),
    )
    for name in ("scenario", "setup", "durability"):
        table.add_column(name)
    for name in ("msgs", "seconds", "msgs/s", "target msgs/s"):
        table.add_column(name, justify="right")
    table.add_column("met", justify="center")
    table.add_column("msgs/s ÷ fsync/s", justify="right")
    for result in report.results:
        table.add_row(
            result.label,
            result.setup,
            result.durability,
            f"{result.messages:,}",
            f"{result.seconds:.2f}",
            f"{result.msgs_per_second:,.0f}",
            _target(result),
            _met(result),
            f"{result.msgs_per_fsync:.2f}",
        )
    return table


def _number(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _target(result: ScenarioResult) -> str:
    if result.target_msgs_per_second is None:
        return "-"
    return f">= {result.target_msgs_per_second:,.0f}"


def _met(result: ScenarioResult) -> str:
    if result.target_met is None:
        return "-"
    return "[green]yes[/green]" if result.target_met else "[red]NO[/red]"


def _ratios_table(report: BenchReport) -> Table:
    table = Table(title="ratios")
    table.add_column("ratio")
    table.add_column("value", justify="right")
    table.add_column("reads as")
    for key, value in report.ratios.items():
        table.add_row(_RATIO_LABELS.get(key, key), f"{value:.2f}", _RATIO_MEANINGS.get(key, ""))
    return table
