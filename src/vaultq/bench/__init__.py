"""``vaultq bench``: throughput benchmarks, never part of the default test run."""

from __future__ import annotations

import json
from pathlib import Path  # noqa: TC003 (Typer reads the annotations at run time)
from typing import Annotated

import typer
from rich.console import Console

from vaultq.bench._render import REPORT_WIDTH_CHARS, render_report
from vaultq.bench.queue import (
    CONCURRENT_SENDER_THREADS,
    DEFAULT_BATCH_THREADS,
    DEFAULT_MESSAGES,
    FSYNC_PROBE_SECONDS,
    QUICK_FSYNC_PROBE_SECONDS,
    QUICK_MESSAGES,
    BenchSettings,
    run_queue_bench,
)

__all__ = ["bench_app"]

bench_app = typer.Typer(help="Benchmarks of vaultq's backends.", no_args_is_help=True)


@bench_app.callback()
def _bench() -> None:
    """Benchmarks of vaultq's backends."""


@bench_app.command("queue")
def queue_command(
    messages: Annotated[
        int | None,
        typer.Option(
            min=CONCURRENT_SENDER_THREADS,
            help=f"Messages per scenario [default: {DEFAULT_MESSAGES:,}; "
            f"{QUICK_MESSAGES} with --quick].",
            show_default=False,
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="A tiny smoke run of every scenario, in a few seconds.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            file_okay=False,
            help="Where the scenario databases go (a fresh folder per run) [default: a temp dir].",
        ),
    ] = None,
    batch_threads: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Threads sending batches in the batched-sends scenario.",
        ),
    ] = DEFAULT_BATCH_THREADS,
) -> None:
    """Queue throughput in both durability modes, beside the disk's own fsync rate."""
    settings = BenchSettings(
        messages=messages or (QUICK_MESSAGES if quick else DEFAULT_MESSAGES),
        batch_threads=batch_threads,
        fsync_probe_seconds=QUICK_FSYNC_PROBE_SECONDS if quick else FSYNC_PROBE_SECONDS,
        directory=directory,
    )
    progress = Console(stderr=True)
    report = run_queue_bench(settings, on_start=progress.log)
    if as_json:
        Console().out(json.dumps(report.to_json(), indent=2), highlight=False)
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=REPORT_WIDTH_CHARS)
        render_report(report, console)
