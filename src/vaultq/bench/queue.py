"""The queue benchmark: throughput of the embedded SQLite backend, beside the disk's fsync rate.

Every scenario runs on a fresh database in a directory of its own, once per durability mode.
The disk's fsync rate (4 KiB appended, then ``os.fsync``, in a loop) is probed in the same
directory before each durability mode and after the last, so each figure can be read as
messages per fsync: above 1 for single sends with ``durability="full"`` means group commit
is at work.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import queue as stdlib_queue
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from vaultq.queues import DeleteEntry, OutgoingMessage, QueueAttributes, SendEntry
from vaultq.wiring import open_queues

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from multiprocessing.process import BaseProcess
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

    from vaultq.queues import QueueBackend

Durability = Literal["full", "process"]

DURABILITIES: tuple[Durability, ...] = ("full", "process")
DEFAULT_MESSAGES = 50_000
QUICK_MESSAGES = 320
DEFAULT_BATCH_THREADS = 8
FSYNC_PROBE_SECONDS = 1.0
QUICK_FSYNC_PROBE_SECONDS = 0.1
CONCURRENT_SENDER_THREADS = 64
BATCH_ENTRIES = 10
RECEIVE_MAX_MESSAGES = 10
BODY_BYTES = 256
FSYNC_BLOCK_BYTES = 4096
QUEUE_NAME = "bench"

_BODY = ("vaultq benchmark message " * (BODY_BYTES // 10))[:BODY_BYTES]
# Long enough that no message of a drain is ever delivered twice.
_VISIBILITY_TIMEOUT_SECONDS = 15 * 60
_CHILD_START_TIMEOUT_SECONDS = 60.0
_CHILD_POLL_SECONDS = 1.0

#: The targets on a 2-core machine, in messages per second.
TARGETS_MSGS_PER_SECOND: dict[tuple[str, Durability], float] = {
    ("concurrent_single_sends", "full"): 10_000,
    ("batched_sends", "full"): 50_000,
    ("receive_delete_2_processes", "full"): 8_000,
    ("sequential_single_sends", "process"): 20_000,
}


class BenchError(RuntimeError):
    """A scenario did not run as designed (a consumer died, a send failed)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchSettings:
    messages: int = DEFAULT_MESSAGES
    batch_threads: int = DEFAULT_BATCH_THREADS
    fsync_probe_seconds: float = FSYNC_PROBE_SECONDS
    #: Where the scenario directories go; None means the system's temporary directory.
    directory: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    messages: int
    seconds: float
    setup: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    key: str
    label: str
    run: Callable[[str, BenchSettings], Timing]
    #: The share of ``messages`` to send with ``durability="full"``: a scenario that waits
    #: for one fsync per message would otherwise take minutes on a slow disk.
    full_durability_share: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioResult:
    scenario: str
    label: str
    durability: Durability
    setup: str
    messages: int
    seconds: float
    msgs_per_second: float
    target_msgs_per_second: float | None
    target_met: bool | None
    msgs_per_fsync: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchReport:
    directory: str
    fsync_per_second: float
    #: The fsync probes before each durability mode and after the last; the figure used,
    #: ``fsync_per_second``, is their median.
    fsync_probes_per_second: tuple[float, ...]
    results: tuple[ScenarioResult, ...]
    ratios: dict[str, float]
    environment: dict[str, str | int | float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- the disk -------------------------------------------------------------------------------


def measure_fsync_per_second(directory: Path, *, duration_seconds: float) -> float:
    """Append 4 KiB and fsync, in a loop, for ``duration_seconds``: the disk's commit rate."""
    probe = directory / "fsync-probe"
    block = b"\0" * FSYNC_BLOCK_BYTES
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        writes = 0
        started = time.perf_counter()
        while time.perf_counter() - started < duration_seconds:
            os.write(fd, block)
            os.fsync(fd)
            writes += 1
        elapsed_seconds = time.perf_counter() - started
    finally:
        os.close(fd)
        probe.unlink()
    return writes / elapsed_seconds


# -- sending --------------------------------------------------------------------------------


def _message() -> OutgoingMessage:
    return OutgoingMessage(body=_BODY)


@contextlib.contextmanager
def _opened(url: str) -> Iterator[QueueBackend]:
    queues = open_queues(url)
    try:
        queues.create_queue(
            QUEUE_NAME,
            QueueAttributes(
                visibility_timeout_seconds=_VISIBILITY_TIMEOUT_SECONDS,
            ),
        )
        yield queues
    finally:
        queues.close()


def _timed_threads(work: Callable[[], None], threads: int) -> float:
    """Run ``work`` on ``threads`` threads at once; seconds from their common start to the
    last one's end."""
    barrier = threading.Barrier(threads + 1)

    def ready_then_work() -> None:
        barrier.wait(timeout=_CHILD_START_TIMEOUT_SECONDS)
        work()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(ready_then_work) for _ in range(threads)]
        barrier.wait(timeout=_CHILD_START_TIMEOUT_SECONDS)
        started = time.perf_counter()
        for future in futures:
            future.result()
        return time.perf_counter() - started


def _sequential_sends(url: str, settings: BenchSettings) -> Timing:
    message = _message()
    with _opened(url) as queues:
        started = time.perf_counter()
        for _ in range(settings.messages):
            queues.send(QUEUE_NAME, message)
        seconds = time.perf_counter() - started
    return Timing(
        messages=settings.messages, seconds=seconds, setup="1 thread, send() one at a time"
    )


def _concurrent_sends(url: str, settings: BenchSettings) -> Timing:
    message = _message()
    per_thread = settings.messages // CONCURRENT_SENDER_THREADS
    with _opened(url) as queues:

        def send_all() -> None:
            for _ in range(per_thread):
                queues.send(QUEUE_NAME, message)

        seconds = _timed_threads(send_all, CONCURRENT_SENDER_THREADS)
    return Timing(
        messages=per_thread * CONCURRENT_SENDER_THREADS,
        seconds=seconds,
        setup=f"{CONCURRENT_SENDER_THREADS} threads in 1 process, send() each",
    )


def _send_batches(queues: QueueBackend, threads: int, messages: int) -> tuple[int, float]:
    """Send about ``messages`` in batches of 10 from ``threads`` threads; (sent, seconds)."""
    entries = [SendEntry(id=f"m{i}", message=_message()) for i in range(BATCH_ENTRIES)]
    batches_per_thread = max(messages // (threads * BATCH_ENTRIES), 1)

    def send_all() -> None:
        for _ in range(batches_per_thread):
            if queues.send_batch(QUEUE_NAME, entries).failed:
                raise BenchError("send_batch refused an entry")

    seconds = _timed_threads(send_all, threads)
    return batches_per_thread * threads * BATCH_ENTRIES, seconds


def _batched_sends(url: str, settings: BenchSettings) -> Timing:
    threads = settings.batch_threads
    with _opened(url) as queues:
        sent, seconds = _send_batches(queues, threads, settings.messages)
    return Timing(
        messages=sent,
        seconds=seconds,
        setup=f"{threads} threads in 1 process, send_batch() of {BATCH_ENTRIES}",
    )


# -- receiving ------------------------------------------------------------------------------


def drain_queue(queues: QueueBackend) -> int:
    """Receive up to 10 and delete them in one batch until the queue is empty; the count."""
    deleted = 0
    while messages := queues.receive(QUEUE_NAME, max_messages=RECEIVE_MAX_MESSAGES, wait_seconds=0):
        result = queues.delete_batch(
            QUEUE_NAME,
            [
                DeleteEntry(id=f"d{i}", receipt_handle=m.receipt_handle)
                for i, m in enumerate(messages)
            ],
        )
        deleted += len(result.successful)
    return deleted


def drain_worker(url: str, barrier: Barrier, results: Queue[int | str]) -> None:
    """A consumer process: open the database, wait for the common start, drain, report."""
    try:
        queues = open_queues(url)
    except Exception as exc:
        barrier.abort()
        results.put(f"{type(exc).__name__}: {exc}")
        return
    try:
        barrier.wait(timeout=_CHILD_START_TIMEOUT_SECONDS)
        results.put(drain_queue(queues))
    except Exception as exc:  # the parent re-raises it; a traceback here would be lost
        results.put(f"{type(exc).__name__}: {exc}")
    finally:
        queues.close()


def _collect(results: Queue[int | str], children: Sequence[BaseProcess]) -> list[int]:
    counts: list[int] = []
    while len(counts) < len(children):
        try:
            outcome = results.get(timeout=_CHILD_POLL_SECONDS)
        except stdlib_queue.Empty:
            if any(child.exitcode not in (None, 0) for child in children):
                raise BenchError("a consumer process died") from None
            continue
        if isinstance(outcome, str):
            raise BenchError(f"a consumer failed: {outcome}")
        counts.append(outcome)
    return counts


def _timed_consumers(url: str, processes: int, backlog: int) -> float:
    """Start ``processes`` spawned consumers together; seconds until the last has drained."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    results: Queue[int | str] = context.Queue()
    children = [
        context.Process(target=drain_worker, args=(url, barrier, results), daemon=True)
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        barrier.wait(timeout=_CHILD_START_TIMEOUT_SECONDS)
        started = time.perf_counter()
        deleted = sum(_collect(results, children))
        seconds = time.perf_counter() - started
    except threading.BrokenBarrierError:
        raise BenchError(f"a consumer did not start: {_first_error(results)}") from None
    finally:
        for child in children:
            child.join(timeout=_CHILD_START_TIMEOUT_SECONDS)
        results.close()
    if deleted != backlog:
        raise BenchError(f"consumers deleted {deleted} of {backlog} messages")
    return seconds


def _first_error(results: Queue[int | str]) -> str:
    try:
        return str(results.get(timeout=_CHILD_POLL_SECONDS))
    except stdlib_queue.Empty:
        return "no error reported"


def _prefill(url: str, settings: BenchSettings) -> int:
    """Fill the queue with about ``settings.messages`` messages; how many were sent."""
    with _opened(url) as queues:
        sent, _ = _send_batches(queues, settings.batch_threads, settings.messages)
    return sent


def _receive_delete(processes: int) -> Callable[[str, BenchSettings], Timing]:
    def run(url: str, settings: BenchSettings) -> Timing:
        backlog = _prefill(url, settings)
        seconds = _timed_consumers(url, processes, backlog)
        noun = "process" if processes == 1 else "processes"
        return Timing(
            messages=backlog,
            seconds=seconds,
            setup=f"{processes} spawned {noun}, receive(max 10) + delete_batch(), drain",
        )

    return run


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        key="sequential_single_sends",
        label="sequential single sends",
        run=_sequential_sends,
        full_durability_share=0.1,
    ),
    Scenario(key="concurrent_single_sends", label="concurrent single sends", run=_concurrent_sends),
    Scenario(key="batched_sends", label="batched sends", run=_batched_sends),
    Scenario(
        key="receive_delete_1_process", label="receive+delete, 1 process", run=_receive_delete(1)
    ),
    Scenario(
        key="receive_delete_2_processes",
        label="receive+delete, 2 processes",
        run=_receive_delete(2),
    ),
)


# -- the run --------------------------------------------------------------------------------


def sqlite_url(directory: Path, durability: Durability) -> str:
    return f"sqlite:///{directory.resolve() / 'vaultq.db'}?durability={durability}"


@contextlib.contextmanager
def _workspace(directory: Path | None) -> Iterator[Path]:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vaultq-bench-", dir=directory) as root:
        yield Path(root)


def run_queue_bench(
    settings: BenchSettings, *, on_start: Callable[[str], None] = lambda _: None
) -> BenchReport:
    """Run every scenario in both durability modes; ``on_start`` hears what starts next."""
    load_before = os.getloadavg()[0]
    timings: list[tuple[Scenario, Durability, Timing]] = []
    fsync_probes: list[float] = []
    with _workspace(settings.directory) as root:
        for durability in DURABILITIES:
            fsync_probes.append(_probe_fsync(root, settings, on_start))
            for scenario in SCENARIOS:
                on_start(f"{scenario.label}, durability={durability}")
                timings.append((scenario, durability, _run(scenario, durability, root, settings)))
        fsync_probes.append(_probe_fsync(root, settings, on_start))
    fsync_per_second = statistics.median(fsync_probes)
    results = tuple(_result(s, d, t, fsync_per_second) for s, d, t in timings)
    return BenchReport(
        directory=str(root.parent),
        fsync_per_second=fsync_per_second,
        fsync_probes_per_second=tuple(fsync_probes),
        results=results,
        ratios=_ratios(results, fsync_per_second),
        environment=_environment(load_before),
    )


def _probe_fsync(root: Path, settings: BenchSettings, on_start: Callable[[str], None]) -> float:
    on_start("probing the disk's fsync rate")
    # Write back what the scenarios left dirty first: an fsync on ext4 can otherwise pay for
    # other files' pages, and the probe would measure the last scenario, not the disk.
    os.sync()
    return measure_fsync_per_second(root, duration_seconds=settings.fsync_probe_seconds)


def _run(scenario: Scenario, durability: Durability, root: Path, settings: BenchSettings) -> Timing:
    scenario_dir = root / f"{scenario.key}-{durability}"
    scenario_dir.mkdir()
    if durability == "full":
        share = int(settings.messages * scenario.full_durability_share)
        settings = replace(settings, messages=max(share, CONCURRENT_SENDER_THREADS))
    try:
        return scenario.run(sqlite_url(scenario_dir, durability), settings)
    finally:
        shutil.rmtree(scenario_dir)


def _result(
    scenario: Scenario, durability: Durability, timing: Timing, fsync_per_second: float
) -> ScenarioResult:
    msgs_per_second = timing.messages / timing.seconds
    target = TARGETS_MSGS_PER_SECOND.get((scenario.key, durability))
    return ScenarioResult(
        scenario=scenario.key,
        label=scenario.label,
        durability=durability,
        setup=timing.setup,
        messages=timing.messages,
        seconds=timing.seconds,
        msgs_per_second=msgs_per_second,
        target_msgs_per_second=target,
        target_met=None if target is None else msgs_per_second >= target,
        msgs_per_fsync=msgs_per_second / fsync_per_second,
    )


def _ratios(results: tuple[ScenarioResult, ...], fsync_per_second: float) -> dict[str, float]:
    rate = {(r.scenario, r.durability): r.msgs_per_second for r in results}
    ratios = {
        "concurrent_single_sends_per_fsync_full": rate["concurrent_single_sends", "full"]
        / fsync_per_second,
        "sequential_single_sends_per_fsync_full": rate["sequential_single_sends", "full"]
        / fsync_per_second,
        "concurrent_over_sequential_single_sends_full": rate["concurrent_single_sends", "full"]
        / rate["sequential_single_sends", "full"],
        "batched_over_concurrent_single_sends_full": rate["batched_sends", "full"]
        / rate["concurrent_single_sends", "full"],
        "process_over_full_sequential_single_sends": rate["sequential_single_sends", "process"]
        / rate["sequential_single_sends", "full"],
    }
    for durability in DURABILITIES:
        ratios[f"receive_delete_2_over_1_processes_{durability}"] = (
            rate["receive_delete_2_processes", durability]
            / rate["receive_delete_1_process", durability]
        )
    return ratios


def _environment(load_before: float) -> dict[str, str | int | float]:
    """The machine, and how busy it was: other work on a 2-core machine moves every figure."""
    return {
        "cpus": os.cpu_count() or 0,
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }
