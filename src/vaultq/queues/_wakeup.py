"""Cross-process wake-ups for long polling, without polling the database in a loop.

A waiting receiver binds a datagram socket in Linux's abstract namespace and leaves a marker
file named after it in a directory beside the database. A sender that committed messages
sends one byte to every marker's socket. Markers left by dead processes are removed by the
first sender that finds their socket gone. Where abstract sockets do not exist (not Linux),
waiters fall back to sleeping for a short slice, which is still correct, only slower.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import time
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

_FALLBACK_SLICE_SECONDS = 0.05
# File times come from a coarse clock (one tick, a few ms): a listing is trusted to hold
# every marker of its directory's mtime only when taken this long after that mtime.
_LISTING_SETTLE_NS = 100_000_000
_ABSTRACT = sys.platform.startswith("linux")


class Wakeup:
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        # One prefix per directory, so two databases never wake each other's waiters.
        self._prefix = f"vaultq-{uuid.uuid5(uuid.NAMESPACE_URL, str(directory.resolve())).hex}"
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if _ABSTRACT else None
        if self._sender is not None:
            self._sender.setblocking(False)
        self._names: list[str] = []
        self._listed_mtime_ns = -1
        self._listed_at_ns = 0

    @contextlib.contextmanager
    def listener(self) -> Iterator[_Listener]:
        """Register before checking for work, so a send between the check and the wait is
        never missed."""
        if self._sender is None:
            yield _Listener(None)
            return
        name = uuid.uuid4().hex
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(f"\0{self._prefix}-{name}")
        marker = self._directory / name
        marker.touch()
        try:
            yield _Listener(sock)
        finally:
            marker.unlink(missing_ok=True)
            sock.close()

    def notify(self) -> None:
        if self._sender is None:
            return
        try:
            names = self._waiter_names()
        except FileNotFoundError:
            return
        for name in names:
            try:
                self._sender.sendto(b"!", f"\0{self._prefix}-{name}")
            except (ConnectionRefusedError, FileNotFoundError):
                (self._directory / name).unlink(missing_ok=True)
            except (BlockingIOError, OSError):
                pass  # a full buffer means that waiter is already awake

    def _waiter_names(self) -> list[str]:
        """The markers, listed again only when the directory may have changed: a stat costs
        a fifth of a listing, and most commits find no new waiter."""
        mtime_ns = self._directory.stat().st_mtime_ns
        settled = self._listed_at_ns - mtime_ns >= _LISTING_SETTLE_NS
        if mtime_ns != self._listed_mtime_ns or not settled:
            listed_at_ns = time.time_ns()
            self._names = os.listdir(self._directory)  # noqa: PTH208 - a hot path; names suffice
            self._listed_mtime_ns, self._listed_at_ns = mtime_ns, listed_at_ns
        return self._names

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()


class _Listener:
    def __init__(self, sock: socket.socket | None) -> None:
        self._sock = sock

    def wait(self, timeout_seconds: float) -> None:
        """Return when notified or after ``timeout_seconds``, whichever is first."""
        if timeout_seconds <= 0:
            return
        if self._sock is None:
            time.sleep(min(timeout_seconds, _FALLBACK_SLICE_SECONDS))
            return
        ready, _, _ = select.select([self._sock], [], [], timeout_seconds)
        if ready:
            self._sock.recv(64)
