"""What the tests' stand-in HTTP endpoints share: a request handler that stays quiet and lets
a client give up on a stalled answer."""

from __future__ import annotations

import contextlib
from http.server import BaseHTTPRequestHandler


class StubHandler(BaseHTTPRequestHandler):
    def reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        """Quiet: tests read what the server recorded."""

    def handle(self) -> None:
        # A stalled answer finds its client gone: that is the point, not an error.
        with contextlib.suppress(ConnectionError):
            super().handle()
