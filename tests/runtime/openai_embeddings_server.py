"""A real OpenAI-compatible ``POST /v1/embeddings`` endpoint on 127.0.0.1, whose behaviour a
test switches while workers call it: serving a model's vectors, failing with 503 or 429 and
``Retry-After``, answering too late, or serving another model of the same dimension."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tests.stub_http import StubHandler

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

Mode = Literal["ok", "503", "429-once", "slow", "other-model"]
#: How long a "slow" answer takes: longer than the tests' client timeout.
SLOW_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Request:
    at: float
    authorization: str | None
    texts: int


class EmbeddingsServer(ThreadingHTTPServer):
    """Answers per ``mode``; ``embed`` makes the vectors of "ok" answers."""

    daemon_threads = True

    def __init__(self, embed: Callable[[Sequence[str]], Any], *, dimension: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.embed = embed
        self.dimension = dimension
        self.mode: Mode = "ok"
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, texts: list[str]) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            mode = self.mode
            if mode == "429-once":
                self.mode = "ok"
            if mode == "ok":
                rows = np.asarray(self.embed(texts), dtype=np.float64).tolist()
        if mode == "503":
            return 503, {"Retry-After": "0"}, b'{"error": "overloaded"}'
        if mode == "429-once":
            return 429, {"Retry-After": "1"}, b'{"error": "slow down"}'
        if mode == "slow":
            time.sleep(SLOW_SECONDS)
            return 503, {}, b"{}"
        if mode == "other-model":
            rows = [_unrelated_vector(text, self.dimension) for text in texts]
        data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
        body = {"object": "list", "data": data, "model": "served"}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _unrelated_vector(text: str, dimension: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return [float(x) for x in np.random.default_rng(seed).standard_normal(dimension)]


class _Handler(StubHandler):
    server: EmbeddingsServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        texts = list(body["input"])
        with self.server.lock:
            self.server.requests.append(
                Request(time.monotonic(), self.headers.get("Authorization"), len(texts))
            )
        status, headers, data = self.server.answer(texts)
        self.reply(status, headers, data)


@contextlib.contextmanager
def embeddings_server(
    embed: Callable[[Sequence[str]], Any], *, dimension: int
) -> Iterator[EmbeddingsServer]:
    server = EmbeddingsServer(embed, dimension=dimension)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
