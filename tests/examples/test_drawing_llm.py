"""The drawing review's chat client against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from examples.drawing_jobs.llm import ChatClient, LlmError, LlmSettings, retry_after, review

from tests.examples.drawing_llm_server import ChatServer, chat_server, completion, stalled
from vaultq import wiring

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from vaultq.runtime.rate_limit import RateLimiter

FOUND = {
    "pages": 1,
    "components": [
        {
            "tag": "D-101",
            "kind": "door",
            "description": "Door 900x2100",
            "width_mm": 900,
            "height_mm": 2100,
            "quantity": 2,
            "page": 1,
        }
    ],
}
NOTES = {"source": "text", "characters": 30, "notes": {"D-101": "D-101 FD30 fire door"}}


@pytest.fixture
def provider() -> Iterator[Callable[..., ChatServer]]:
    with contextlib.ExitStack() as stack:
        yield lambda *answers: stack.enter_context(chat_server(*answers))


def open_limiter(tmp_path: Path, *, rate_per_minute: float) -> RateLimiter:
    """The limiter the example's workers share: vaultq's, in the app's database."""
    settings = LlmSettings(base_url="http://unused", model="m", rate_per_minute=rate_per_minute)
    return wiring.open_rate_limiter(f"sqlite:///{tmp_path}/vaultq.db", default=settings.bucket)


@pytest.fixture
def limiter(tmp_path: Path) -> Iterator[RateLimiter]:
    opened = open_limiter(tmp_path, rate_per_minute=60_000)
    yield opened
    opened.close()


def client_for(url: str, limiter: RateLimiter, sleeps: list[float], **options: Any) -> ChatClient:
    settings = LlmSettings(base_url=url, model="tiny", api_key="k-123", **options)
    return ChatClient(settings, limiter=limiter, sleep=sleeps.append)


def test_a_429_is_retried_after_its_retry_after_then_the_review_is_recorded(
    provider, limiter
) -> None:
    server = provider((429, {"Retry-After": "2"}, b"slow down"), completion("Looks consistent."))
    sleeps: list[float] = []

    record = review(FOUND, NOTES, client_for(server.url, limiter, sleeps))

    assert record["status"] == "done"
    assert record["text"] == "Looks consistent."
    assert sleeps == [2.0]
    assert len(server.requests) == 2
    path, headers, body = server.requests[-1]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer k-123"
    assert body["model"] == "tiny"
    sent = json.loads(body["messages"][1]["content"])
    assert sent["schedule"] == [
        {"tag": "D-101", "kind": "door", "width_mm": 900, "height_mm": 2100, "quantity": 2}
    ]
    assert sent["specification_notes"] == NOTES["notes"]


def test_server_errors_back_off_and_a_review_that_never_answers_is_recorded_failed(
    provider, limiter
) -> None:
    server = provider(*[(503, {}, b"")] * 3)
    sleeps: list[float] = []

    record = review(FOUND, NOTES, client_for(server.url, limiter, sleeps, max_attempts=3))

    assert record == {"status": "failed", "model": "tiny", "error": "HTTP 503 after 3 attempts"}
    assert len(server.requests) == 3
    assert len(sleeps) == 2
    assert 1.0 <= sleeps[0] <= 2.0 <= sleeps[1] <= 4.0  # exponential, half jittered


def test_an_answer_slower_than_the_timeout_is_retried(provider, limiter) -> None:
    # The stalled answer's thread is a daemon: the server's shutdown does not wait for it.
    server = provider(stalled(30.0, completion("too late")), completion("in time"))
    sleeps: list[float] = []
    client = client_for(server.url, limiter, sleeps, timeout_seconds=0.2)

    started = time.monotonic()
    reply = client.complete("system", "user")

    assert reply == "in time"
    assert len(sleeps) == 1
    assert time.monotonic() - started < 10, "the first attempt gave up at its 0.2 s timeout"


def test_a_client_error_is_not_retried(provider, limiter) -> None:
    server = provider((401, {}, b"no key"), completion("never sent"))

    with pytest.raises(LlmError, match="HTTP 401"):
        client_for(server.url, limiter, []).complete("system", "user")

    assert len(server.requests) == 1


def test_a_retry_after_beyond_the_limit_ends_the_attempts(provider, limiter) -> None:
    server = provider((429, {"Retry-After": "3600"}, b""), completion("never sent"))

    with pytest.raises(LlmError, match="Retry-After 3600"):
        client_for(server.url, limiter, []).complete("system", "user")

    assert len(server.requests) == 1


def test_two_workers_share_one_rate_limit(provider, tmp_path) -> None:
    server = provider(completion("a"), completion("b"))
    limiters = [open_limiter(tmp_path, rate_per_minute=120) for _ in range(2)]
    clients = [client_for(server.url, limiter, []) for limiter in limiters]

    started = time.monotonic()
    for client in clients:
        client.complete("s", "u")
    elapsed = time.monotonic() - started

    assert elapsed >= 0.45  # 120 a minute with a burst of 1: one request every 0.5 s
    for limiter in limiters:
        limiter.close()


def test_without_an_endpoint_the_review_is_skipped() -> None:
    assert LlmSettings.from_env({}) is None
    assert review(FOUND, NOTES, None) == {
        "status": "skipped",
        "reason": "DRAWING_LLM_URL is not set",
    }


def test_an_endpoint_without_a_model_is_refused() -> None:
    with pytest.raises(ValueError, match="DRAWING_LLM_MODEL"):
        LlmSettings.from_env({"DRAWING_LLM_URL": "http://127.0.0.1:1"})


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("7") == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after("soon") is None
    assert retry_after(None) is None
