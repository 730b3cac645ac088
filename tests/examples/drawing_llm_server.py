"""A scripted OpenAI-compatible chat endpoint on 127.0.0.1, for the drawing review's tests."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from tests.stub_http import StubHandler

if TYPE_CHECKING:
    from collections.abc import Iterator

Answer = tuple[int, dict[str, str], bytes]


def completion(text: str) -> Answer:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def stalled(seconds: float, answer: Answer) -> Answer:
    """``answer``, sent only after ``seconds``: longer than a client's timeout, it is lost."""
    status, headers, data = answer
    return status, {**headers, STALL_HEADER: str(seconds)}, data


STALL_HEADER = "X-Test-Stall-Seconds"


class ChatServer(ThreadingHTTPServer):
    """Answers each POST with the next scripted answer and records what it was sent."""

    def __init__(self, answers: list[Answer]) -> None:
        super().__init__(("127.0.0.1", 0), _Answer)
        self.answers = answers
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Answer(StubHandler):
    server: ChatServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, dict(self.headers), body))
        status, headers, data = self.server.answers.pop(0)
        time.sleep(float(headers.get(STALL_HEADER, 0)))
        self.reply(status, headers, data)


@contextlib.contextmanager
def chat_server(*answers: Answer) -> Iterator[ChatServer]:
    server = ChatServer(list(answers))
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
