"""``vaultq bench api``: the HTTP API under concurrent clients, submits beside health checks.

One ``vaultq up`` (one API process with one event loop, one worker process, a fresh data
directory, a generated HS256 secret, rate limits far above what the run sends) serves both
phases: the clients and both processes share the machine's cores. Each client is a task with its own
keep-alive connection that sends its next request as soon as the last one answers; the first
part of each phase warms the connections up and is not counted. The clients speak HTTP/1.1
themselves (prebuilt request bytes; a status line, headers and a ``Content-Length`` body
read back), so that the cores measure the server rather than a client library.
``GET /healthz`` runs first, while the worker is idle: it is the floor the HTTP stack itself
costs. ``POST /jobs`` runs second, with the worker draining the jobs it accepts, as
``vaultq up`` would serve them.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from rich.console import Console

TARGET_SUBMIT_P95_MS = 25.0
TARGET_SUBMITS_PER_SECOND = 1_500
APP_PATH = "vaultq.demo:app"
_TENANT = "bench"
_PAYLOAD = {"payload": {"order_id": 1234, "note": "benchmark"}}
_START_TIMEOUT_SECONDS = 60.0
_STOP_TIMEOUT_SECONDS = 60.0
_MAX_WARMUP_SECONDS = 1.0
_REQUEST_TIMEOUT_SECONDS = 30.0
_HOST = "127.0.0.1"
# Far above what any run sends (the settings' own maxima), so the limiter never answers 429.
_RATE_LIMIT_PER_SECOND = "100000"
_RATE_LIMIT_BURST = "1000000"


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointResult:
    """One phase: requests answered inside the measured window, and their latencies."""

    endpoint: str
    requests: int
    errors: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    #: CPU time over wall time while measuring, in % of one core (200 = both of two cores).
    client_cpu_percent: float
    server_cpu_percent: float
    worker_cpu_percent: float
    statuses: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiBenchReport:
    clients: int
    seconds: float
    health: EndpointResult
    submit: EndpointResult
    environment: dict[str, Any]

    @property
    def p95_ratio(self) -> float:
        """Submit p95 ÷ health p95: what a durable submit adds over the bare HTTP stack."""
        return self.submit.p95_ms / self.health.p95_ms if self.health.p95_ms else 0.0

    @property
    def throughput_ratio(self) -> float:
        """Submit requests/s ÷ health requests/s."""
        health_rps = self.health.requests_per_second
        return self.submit.requests_per_second / health_rps if health_rps else 0.0

    @property
    def p95_target_met(self) -> bool:
        return self.submit.errors == 0 and self.submit.p95_ms < TARGET_SUBMIT_P95_MS

    @property
    def throughput_target_met(self) -> bool:
        return self.submit.errors == 0 and (
            self.submit.requests_per_second >= TARGET_SUBMITS_PER_SECOND
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "seconds": self.seconds,
            "submit": asdict(self.submit),
            "health": asdict(self.health),
            "ratios": {
                "submit_p95_over_health_p95": self.p95_ratio,
                "submit_rps_over_health_rps": self.throughput_ratio,
            },
            "targets": {
                "submit_p95_ms_below": TARGET_SUBMIT_P95_MS,
                "submit_p95_met": self.p95_target_met,
                "submits_per_second_at_least": TARGET_SUBMITS_PER_SECOND,
                "submits_per_second_met": self.throughput_target_met,
            },
            "environment": self.environment,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class _Request:
    endpoint: str
    method: str
    path: str
    json: dict[str, Any] | None = None

    def encode(self, *, host: str, token: str) -> bytes:
        """The request's bytes, built once and sent as they are by every client."""
        body = b"" if self.json is None else json.dumps(self.json).encode()
        head = [
            f"{self.method} {self.path} HTTP/1.1",
            f"Host: {host}",
            f"Authorization: Bearer {token}",
            f"Content-Length: {len(body)}",
        ]
        if self.json is not None:
            head.append("Content-Type: application/json")
        return "\r\n".join([*head, "", ""]).encode() + body


_HEALTH = _Request(endpoint="GET /healthz", method="GET", path="/healthz")
_SUBMIT = _Request(endpoint="POST /jobs", method="POST", path="/jobs", json=_PAYLOAD)


def run_api_bench(
    *,
    seconds: float,
    clients: int,
    on_start: Callable[[str], None] | None = None,
) -> ApiBenchReport:
    """Serve the demo app with ``vaultq up`` and load it for ``seconds`` per endpoint."""
    say = on_start or (lambda _: None)
    load_before = _load_average()
    with (
        tempfile.TemporaryDirectory(prefix="vaultq-bench-api-") as directory,
        _served(Path(directory)) as server,
    ):
        say(f"vaultq up at {server.base_url} (pid {server.process.pid}), 1 worker")
        say(f"GET /healthz: {clients} clients for {seconds:g} s")
        health = asyncio.run(_measure(server, _HEALTH, seconds=seconds, clients=clients))
        say(f"POST /jobs: {clients} clients for {seconds:g} s")
        submit = asyncio.run(_measure(server, _SUBMIT, seconds=seconds, clients=clients))
    return ApiBenchReport(
        clients=clients,
        seconds=seconds,
        health=health,
        submit=submit,
        environment={
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_1min_before": load_before,
            "load_average_1min_after": _load_average(),
        },
    )


def render_report(report: ApiBenchReport, console: Console) -> None:
    console.print(_results_table(report))
    console.print(_ratios_table(report))


def _results_table(report: ApiBenchReport) -> Table:
    env = report.environment
    table = Table(
        title=f"vaultq bench api: {report.clients} clients, {report.seconds:g} s per endpoint",
        caption=(
            "One `vaultq up` (1 API process, 1 worker), keep-alive connections, a warm-up not "
            "counted. CPU is % of one core over the window: the clients (this process), the API "
            f"process and the worker. {env.get('cpus')} CPUs, 1-minute load average "
            f"{_number(env.get('load_average_1min_before'))} before, "
            f"{_number(env.get('load_average_1min_after'))} after; Python {env.get('python')}."
        ),
    )
    table.add_column("endpoint")
    for name in ("requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(name, justify="right")
    for name in ("target", "met"):
        table.add_column(name, justify="center")
    for name in ("client CPU %", "API CPU %", "worker CPU %"):
        table.add_column(name, justify="right")
    submit_target = f"p95 < {TARGET_SUBMIT_P95_MS:g} ms, >= {TARGET_SUBMITS_PER_SECOND:,}/s"
    submit_met = f"{_met(report.p95_target_met)} / {_met(report.throughput_target_met)}"
    for result, target, met in (
        (report.submit, submit_target, submit_met),
        (report.health, "-", "-"),
    ):
        table.add_row(
            result.endpoint,
            f"{result.requests:,}",
            f"{result.errors:,}",
            f"{result.requests_per_second:,.0f}",
            f"{result.p50_ms:.1f}",
            f"{result.p95_ms:.1f}",
            f"{result.p99_ms:.1f}",
            target,
            met,
            f"{result.client_cpu_percent:.0f}",
            f"{result.server_cpu_percent:.0f}",
            f"{result.worker_cpu_percent:.0f}",
        )
    return table


def _ratios_table(report: ApiBenchReport) -> Table:
    table = Table(title="ratios")
    table.add_column("ratio")
    table.add_column("value", justify="right")
    table.add_column("reads as")
    table.add_row(
        "submit p95 ÷ health p95",
        f"{report.p95_ratio:.2f}",
        "what a durable submit adds to the bare HTTP stack's latency",
    )
    table.add_row(
        "submit req/s ÷ health req/s",
        f"{report.throughput_ratio:.2f}",
        "the share of the HTTP stack's throughput left for submits",
    )
    return table


def _met(met: bool) -> str:
    return "[green]yes[/green]" if met else "[red]NO[/red]"


def _number(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


# --- the server -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Server:
    host: str
    port: int
    token: str
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.contextmanager
def _served(directory: Path) -> Iterator[_Server]:
    """``vaultq up`` on a free port for the span of a ``with`` block; stopped with SIGTERM."""
    port = _free_port()
    env = _environment(directory)
    # The working directory is the fresh data directory, so no .env of the caller is read.
    process = subprocess.Popen(  # noqa: S603 - this interpreter, this package, constants
        [sys.executable, "-m", "vaultq", "up", APP_PATH, "--port", str(port), "--workers", "1"],
        cwd=directory,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_healthy(_HOST, port, process)
        yield _Server(host=_HOST, port=port, token=_mint_token(directory, env), process=process)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    descendants = list(_children(process.pid))
    if process.poll() is None:
        # SIGINT, as Ctrl-C would: `vaultq up` then stops its worker. On SIGTERM it exits
        # without stopping it (uvicorn re-raises the signal before serve()'s `finally`).
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=_STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for pid in descendants:
        # Whatever `vaultq up` left running (only if it could not stop it) is stopped here.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _environment(directory: Path) -> dict[str, str]:
    # None of the caller's VAULTQ_* settings: an issuer or audience there would refuse the
    # bench's tokens, and a lower rate limit would answer 429s instead of measuring.
    inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("VAULTQ_")}
    return {
        **inherited,
        "VAULTQ_URL": f"sqlite:///{directory / 'vaultq.db'}",
        "VAULTQ_AUTH_HS256_SECRET": secrets.token_urlsafe(48),
        "VAULTQ_RATE_LIMIT_PER_SECOND": _RATE_LIMIT_PER_SECOND,
        "VAULTQ_RATE_LIMIT_BURST": _RATE_LIMIT_BURST,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((_HOST, 0))
        return int(probe.getsockname()[1])


def _wait_until_healthy(host: str, port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while not _healthy(host, port):
        if process.poll() is not None:
            raise RuntimeError(f"vaultq up exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"vaultq up did not answer within {_START_TIMEOUT_SECONDS} s")
        time.sleep(0.1)


def _healthy(host: str, port: int) -> bool:
    probe = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        probe.request("GET", _HEALTH.path)
        return probe.getresponse().status == http.HTTPStatus.OK
    except OSError:
        return False
    finally:
        probe.close()


def _mint_token(directory: Path, env: dict[str, str]) -> str:
    # `vaultq token` with the server's secret: the bench knows no more about tokens than a user.
    command = [sys.executable, "-m", "vaultq", "token", "--tenant", _TENANT, "--role", "producer"]
    minted = subprocess.run(  # noqa: S603 - this interpreter, this package, constants
        command, cwd=directory, env=env, capture_output=True, check=True, timeout=60
    )
    return minted.stdout.decode().strip()


# --- the load -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    latencies_seconds: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)


async def _measure(
    server: _Server, request: _Request, *, seconds: float, clients: int
) -> EndpointResult:
    """Requests that complete within ``seconds`` after the warm-up: the window is exact, so
    requests still in flight when it closes neither count nor stretch it."""
    warmup_seconds = min(_MAX_WARMUP_SECONDS, seconds / 5)
    measure_from = time.perf_counter() + warmup_seconds
    stop_at = measure_from + seconds
    cpu = _CpuMeter(server.process.pid)
    samples = asyncio.gather(cpu.sample_at(measure_from), cpu.sample_at(stop_at))
    tallies = await asyncio.gather(
        *(
            _client(server, request, measure_from=measure_from, stop_at=stop_at)
            for _ in range(clients)
        )
    )
    start_sample, end_sample = await samples
    client_cpu, server_cpu, worker_cpu = _percent(start_sample, end_sample, seconds)
    latencies = sorted(latency for tally in tallies for latency in tally.latencies_seconds)
    statuses: Counter[str] = Counter()
    for tally in tallies:
        statuses.update(tally.statuses)
    errors = sum(count for status, count in statuses.items() if not status.startswith("2"))
    return EndpointResult(
        endpoint=request.endpoint,
        requests=len(latencies),
        errors=errors,
        seconds=seconds,
        requests_per_second=(len(latencies) - errors) / seconds,
        p50_ms=_percentile_ms(latencies, 50),
        p95_ms=_percentile_ms(latencies, 95),
        p99_ms=_percentile_ms(latencies, 99),
        client_cpu_percent=client_cpu,
        server_cpu_percent=server_cpu,
        worker_cpu_percent=worker_cpu,
        statuses=dict(sorted(statuses.items())),
    )


async def _client(
    server: _Server, request: _Request, *, measure_from: float, stop_at: float
) -> _Tally:
    """One client: one keep-alive connection, the next request as soon as the last answers.
    A request that fails on the wire counts as an error named by its exception, and the
    client reconnects."""
    tally = _Tally()
    raw = request.encode(host=f"{server.host}:{server.port}", token=server.token)
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        # One deadline for the whole phase (cheaper than one timer per request): a server
        # that stops answering ends the client with an error instead of hanging the bench.
        async with asyncio.timeout_at(_loop_time_at(stop_at + _REQUEST_TIMEOUT_SECONDS)):
            while (sent := time.perf_counter()) < stop_at:
                try:
                    if connection is None:
                        connection = await asyncio.open_connection(server.host, server.port)
                    reader, writer = connection
                    writer.write(raw)
                    status, keep_alive = await _read_response(reader)
                except _WIRE_ERRORS as exc:
                    status, keep_alive = type(exc).__name__, False
                if not keep_alive and connection is not None:
                    connection[1].close()
                    connection = None
                done = time.perf_counter()
                if measure_from <= done <= stop_at:
                    tally.latencies_seconds.append(done - sent)
                    tally.statuses[status] += 1
    except TimeoutError:
        tally.statuses["TimeoutError"] += 1
    finally:
        if connection is not None:
            connection[1].close()
    return tally


class _MalformedResponse(Exception):
    pass


_WIRE_ERRORS = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    _MalformedResponse,
)


async def _read_response(reader: asyncio.StreamReader) -> tuple[str, bool]:
    """Read one HTTP/1.1 response: its status code, and whether the connection stays open.
    Only what vaultq's server sends is understood: a ``Content-Length`` body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head[:-4].split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise _MalformedResponse
    length: int | None = None
    keep_alive = True
    for line in header_lines:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            if not value.strip().isdigit():
                raise _MalformedResponse
            length = int(value)
        elif name == b"connection":
            keep_alive = value.strip().lower() != b"close"
        elif name == b"transfer-encoding":
            raise _MalformedResponse
    if length is None:
        raise _MalformedResponse
    await reader.readexactly(length)
    return parts[1].decode(), keep_alive


def _loop_time_at(perf_counter_moment: float) -> float:
    """The event loop's clock reading at a ``time.perf_counter()`` moment."""
    return asyncio.get_running_loop().time() + (perf_counter_moment - time.perf_counter())


def _percentile_ms(sorted_seconds: Sequence[float], percent: int) -> float:
    """Nearest-rank percentile, in milliseconds; 0 for no samples."""
    if not sorted_seconds:
        return 0.0
    rank = max(1, -(-percent * len(sorted_seconds) // 100))
    return sorted_seconds[rank - 1] * 1000


# --- CPU ------------------------------------------------------------------------------------


_CpuSample = tuple[float, float, float]


class _CpuMeter:
    """CPU seconds of this process (the clients), the server and its workers (Linux /proc)."""

    def __init__(self, server_pid: int) -> None:
        self._server_pid = server_pid

    async def sample_at(self, moment: float) -> _CpuSample:
        await asyncio.sleep(max(0.0, moment - time.perf_counter()))
        workers = sum(_cpu_seconds(pid) for pid in _children(self._server_pid))
        return time.process_time(), _cpu_seconds(self._server_pid), workers


def _percent(start: _CpuSample, end: _CpuSample, wall_seconds: float) -> _CpuSample:
    client, server, workers = (
        100 * (b - a) / wall_seconds for a, b in zip(start, end, strict=True)
    )
    return client, server, workers


def _children(pid: int) -> Iterator[int]:
    """Every descendant of ``pid`` (the worker and its handler processes)."""
    try:
        direct = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return
    for child in direct:
        yield int(child)
        yield from _children(int(child))


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of one process; 0 where /proc is not readable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Fields after the command name, which is in parentheses and may hold spaces.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
