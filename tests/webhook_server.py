"""A real HTTP endpoint on 127.0.0.1 that records what alarm webhooks POST to it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence


class WebhookServer:
    """Answers the n-th POST with ``statuses[n]`` (the last one thereafter) and keeps every
    POSTed JSON document, in order."""

    def __init__(self, statuses: Sequence[int] = (200,)) -> None:
        self.statuses = list(statuses)
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}/hooks/alarms?token=secret-in-url"

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    def _answer(self, document: dict[str, Any], headers: dict[str, str]) -> int:
        with self._lock:
            self.received.append(document)
            self.headers.append(headers)
            index = min(len(self.received), len(self.statuses)) - 1
            return self.statuses[index]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                document = json.loads(self.rfile.read(length))
                status = server._answer(document, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler


def serving(statuses: Sequence[int] = (200,)) -> Iterator[WebhookServer]:
    """For fixtures: ``yield from serving([500, 200])``."""
    with WebhookServer(statuses) as server:
        yield server
