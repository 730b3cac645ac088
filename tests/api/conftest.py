"""A real `vaultq up` process per test module, talked to over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2 as httpx
import pytest

from vaultq.api.auth import mint_token

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"s" * 48
#: How long `vaultq up` may take to answer /healthz: imports alone take seconds on a loaded
#: 2-core CI machine, and the wait ends as soon as it answers.
START_SECONDS = 60.0


@dataclass
class Server:
    base_url: str
    data: Path
    process: subprocess.Popen[bytes]
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.base_url, headers=headers, timeout=30)
        self.clients.append(client)
        return client

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def token(tenant: str = "acme", *roles: str, subject: str = "alice", **options: Any) -> str:
    return mint_token(
        secret=SECRET, tenant=tenant, roles=list(roles) or ["producer"], subject=subject, **options
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    data: Path, *, workers: int = 1, app: str = "vaultq.demo:app", **env: str
) -> Server:
    port = free_port()
    environment = {
        **os.environ,
        "VAULTQ_URL": f"sqlite:///{data}/vaultq.db",
        "VAULTQ_AUTH_HS256_SECRET": SECRET.decode(),
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "vaultq", "up", app, "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server(base_url=f"http://127.0.0.1:{port}", data=data, process=process)
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            with httpx.Client(timeout=1) as probe:
                if probe.get(f"{server.base_url}/healthz").status_code == 200:
                    return server
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("vaultq up did not start")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("api"))
    yield running
    running.stop()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def launch(**options: Any) -> Server:
        running = start_server(tmp_path, **options)
        started.append(running)
        return running

    yield launch
    for running in started:
        running.stop()


def wait_for(probe: Callable[[], Any], *, timeout_seconds: float = 60.0) -> Any:
    """``probe()`` once it is truthy. The deadline is generous, as a loaded CI machine can
    take tens of seconds to start handler processes; the wait ends as soon as it holds."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_seconds} s")
        time.sleep(0.1)
