"""``vaultq bench``: throughput benchmarks, never part of the default test run."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path  # noqa: TC003 (Typer reads the annotations at run time)
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vaultq.bench import noop
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
from vaultq.bench.runtime import DEFAULT_BACKLOGS, TARGET_MSGS_PER_SECOND, run_runtime_bench

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
            help=f"Messages per scenario (default {DEFAULT_MESSAGES:,}; {QUICK_MESSAGES} with "
            "--quick). Sequential sends with full durability send a tenth of them.",
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
            help="Where the scenario databases go, a fresh folder per run (default: a temp dir).",
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
    progress = Console(stderr=True, log_path=False)
    report = run_queue_bench(settings, on_start=progress.log)
    if as_json:
        Console().out(json.dumps(report.to_json(), indent=2), highlight=False)
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=REPORT_WIDTH_CHARS)
        render_report(report, console)


@bench_app.command("runtime")
def runtime_command(
    backlog: Annotated[
        list[int] | None,
        typer.Option(
            min=10, help="Backlog sizes to drain (repeatable) [default: 10,000 and 100,000]."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Worker processes.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Worker processes draining a backlog through no-op handlers: msgs/s and peak RSS."""
    progress = Console(stderr=True, log_path=False)
    results = run_runtime_bench(
        backlogs=backlog or list(DEFAULT_BACKLOGS),
        workers=workers,
        handlers=list(noop.app.handlers),
        on_result=lambda r: progress.log(f"{r.handler}: {r.backlog:,} in {r.seconds:.2f} s"),
    )
    if as_json:
        Console().out(json.dumps([asdict(r) for r in results], indent=2), highlight=False)
        return
    table = Table(title=f"runtime: {workers} worker processes, no-op handler")
    for column in ("mapping", "backlog", "seconds", "msgs/s", "target", "met", "peak RSS MiB"):
        table.add_column(column, justify="left" if column == "mapping" else "right")
    for r in results:
        mapping = noop.app.handlers[r.handler].mapping
        setup = (
            f"batch {mapping.batch_size}, window {mapping.batching_window_seconds * 1000:.0f} ms"
        )
        met = r.msgs_per_second >= TARGET_MSGS_PER_SECOND
        table.add_row(
            setup,
            f"{r.backlog:,}",
            f"{r.seconds:.2f}",
            f"{r.msgs_per_second:,.0f}",
            f">= {TARGET_MSGS_PER_SECOND:,}",
            "yes" if met else "NO",
            f"{r.peak_rss_mib:,.0f}",
        )
    Console().print(table)


#: ``vaultq bench api`` defaults: seconds measured per endpoint, and concurrent clients.
API_DEFAULT_SECONDS = 10.0
API_DEFAULT_CLIENTS = 64


@bench_app.command("api")
def api_command(
    seconds: Annotated[
        float, typer.Option(min=0.5, help="Measured seconds per endpoint (after a warm-up).")
    ] = API_DEFAULT_SECONDS,
    clients: Annotated[
        int, typer.Option(min=1, max=1024, help="Concurrent clients, one connection each.")
    ] = API_DEFAULT_CLIENTS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """`vaultq up` under concurrent clients: POST /jobs beside GET /healthz, rps and latency."""
    from vaultq.bench import api  # noqa: PLC0415 - only this command needs it

    progress = Console(stderr=True, log_path=False)
    report = api.run_api_bench(seconds=seconds, clients=clients, on_start=progress.log)
    if as_json:
        Console().out(json.dumps(report.to_json(), indent=2), highlight=False)
        return
    console = Console()
    if not console.is_terminal:
        console = Console(width=REPORT_WIDTH_CHARS)
    api.render_report(report, console)


@bench_app.command("embeddings")
def embeddings_command(
    messages: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Chat messages to embed.")
    ] = 10_000,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Worker processes.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """The private-embeddings example end to end beside the bare model: msgs/s, ratio, RSS."""
    # Imported here: it loads the example app and, for the raw figure, torch.
    from rich.progress import Progress  # noqa: PLC0415

    from vaultq.bench import embeddings  # noqa: PLC0415

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("starting workers", total=None)

        def stage(name: str, total: int) -> None:
            bar.reset(task, description=name, total=total, completed=0)

        result = embeddings.run_embeddings_bench(
            messages=messages,
            workers=workers,
            progress=embeddings.Progress(
                stage=stage, advance=lambda done: bar.update(task, completed=done)
            ),
        )
    if as_json:
        figures = {**asdict(result), "targets_met": result.targets()}
        Console().out(json.dumps(figures, indent=2), highlight=False)
        return
    met = result.targets()
    table = Table(
        title=f"embeddings: {result.messages:,} messages, {result.workers} worker processes "
        f"({result.handler_processes} handler processes, "
        f"{result.torch_threads_per_process} torch thread(s) each)"
    )
    for column in ("figure", "value", "target", "met"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    rows = [
        ("end-to-end seconds", f"{result.seconds:.2f}", "", ""),
        ("  of which to first vector", f"{result.first_vector_seconds:.2f}", "", ""),
        ("workers' start, before it (model loads)", f"{result.worker_start_seconds:.2f}", "", ""),
        (
            "pipeline msgs/s",
            f"{result.msgs_per_second:,.0f}",
            ">= 250 (10,000 in 40 s)",
            "met" if met["throughput"] else "NO",
        ),
        ("raw model msgs/s", f"{result.raw_msgs_per_second:,.0f}", "", ""),
        (
            "pipeline / raw",
            f"{result.ratio:.2f}",
            f">= {embeddings.TARGET_RATIO}",
            "met" if met["ratio"] else "NO",
        ),
        (
            "peak RSS MiB (workers)",
            f"{result.peak_rss_mib:,.0f}",
            f"< {embeddings.TARGET_PEAK_RSS_MIB:,}",
            "met" if met["peak_rss"] else "NO",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)
