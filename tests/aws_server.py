"""moto's HTTP server as a real AWS endpoint for the tests: boto3 talks to it over HTTP.

One server per test process (xdist worker), started on 127.0.0.1 with an ephemeral port and
stopped at exit. Tests isolate themselves by unique resource names, as on a shared account.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

REGION = "us-east-1"
#: moto imports every service it serves: seconds on an idle machine, far more on a loaded one.
START_SECONDS = 60.0
#: moto accepts any credentials; these keep boto3 from looking for real ones.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_up(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"moto server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):  # noqa: S310 - loopback
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not start within {START_SECONDS:.0f} s")


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """The URL of a running moto server, with test credentials in the environment."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **CREDENTIALS},
    )
    url = f"http://127.0.0.1:{port}"
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    try:
        _wait_until_up(url, server)
        os.environ.update(CREDENTIALS)
        yield url
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # Slow to exit on a loaded machine (seen past 10 s): the tests are done anyway.
            server.kill()
            server.wait()


@pytest.fixture
def aws_url(aws_endpoint: str) -> str:
    """A ``VAULTQ_URL`` naming the moto server."""
    return f"aws://?region={REGION}&endpoint_url={aws_endpoint}"
