"""``vaultq bench runtime``: worker processes draining a backlog through a no-op handler.

Each run fills a fresh database with the backlog, starts the worker processes (as
``vaultq worker`` would be started), and times the drain from the first message handled to
the last, so process start-up is not counted. Peak RSS sums the worker processes and their
handler processes, sampled while they drain.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vaultq.bench.noop import app
from vaultq.queues.protocol import OutgoingMessage, SendEntry
from vaultq.queues.sqlite import SqliteQueues

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

APP_PATH = "vaultq.bench.noop:app"
TARGET_MSGS_PER_SECOND = 5_000
DEFAULT_BACKLOGS = (10_000, 100_000)
_SAMPLE_SECONDS = 0.05
_BODY = '{"order_id": 1234, "note": "benchmark"}'


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeResult:
    handler: str
    backlog: int
    workers: int
    seconds: float
    msgs_per_second: float
    peak_rss_mib: float


def run_runtime_bench(
    *,
    backlogs: Sequence[int],
    workers: int,
    handlers: Sequence[str],
    on_result: Callable[[RuntimeResult], None] | None = None,
) -> list[RuntimeResult]:
    results = []
    for handler in handlers:
        for backlog in backlogs:
            with tempfile.TemporaryDirectory(prefix="vaultq-bench-") as directory:
                result = _drain(Path(directory), handler, backlog, workers)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def _drain(directory: Path, handler: str, backlog: int, workers: int) -> RuntimeResult:
    db = directory / "vaultq.db"
    queue = app.handlers[handler].mapping.queue
    queues = SqliteQueues(db, durability="process")
    try:
        app.provision(queues)
        _fill(queues, queue, backlog)
        processes = _start_workers(db, handler, workers)
        try:
            seconds, peak_rss = _watch(queues, queue, backlog, processes)
        finally:
            _stop(processes)
    finally:
        queues.close()
    return RuntimeResult(
        handler=handler,
        backlog=backlog,
        workers=workers,
        seconds=seconds,
        msgs_per_second=backlog / seconds,
        peak_rss_mib=peak_rss / 2**20,
    )


def _fill(queues: SqliteQueues, queue: str, backlog: int) -> None:
    for start in range(0, backlog, 10):
        count = min(10, backlog - start)
        queues.send_batch(
            queue, [SendEntry(id=str(i), message=OutgoingMessage(body=_BODY)) for i in range(count)]
        )


def _start_workers(db: Path, handler: str, workers: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "VAULTQ_URL": f"sqlite:///{db}"}
    command = [sys.executable, "-m", "vaultq", "worker", APP_PATH, "--handler", handler]
    return [
        # The command is this interpreter and constants: no outside input reaches it.
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        for _ in range(workers)
    ]


def _watch(
    queues: SqliteQueues, queue: str, backlog: int, processes: Sequence[subprocess.Popen[bytes]]
) -> tuple[float, int]:
    """Seconds from the first message handled to an empty queue, and the peak RSS."""
    started: float | None = None
    handled_at_start = 0
    peak_rss = 0
    while True:
        stats = queues.stats(queue)
        remaining = stats.visible + stats.in_flight
        now = time.monotonic()
        if started is None and remaining < backlog:
            started, handled_at_start = now, backlog - remaining
        peak_rss = max(peak_rss, sum(_tree_rss_bytes(p.pid) for p in processes))
        if remaining == 0 and started is not None:
            elapsed = max(now - started, 1e-6)
            # Scale to the whole backlog: what was handled before the first sample counts.
            return elapsed * backlog / max(backlog - handled_at_start, 1), peak_rss
        if any(p.poll() is not None for p in processes):
            raise RuntimeError("a worker process exited during the benchmark")
        time.sleep(_SAMPLE_SECONDS)


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _tree_rss_bytes(pid: int) -> int:
    """RSS of a process and its children (Linux /proc; 0 where it is not readable)."""
    total = _rss_bytes(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    return total + sum(_tree_rss_bytes(int(child)) for child in children)


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
