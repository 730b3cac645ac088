"""Any OpenAI-compatible ``POST /v1/embeddings`` endpoint (OpenAI, vLLM, Ollama, TEI, ...).

Every request, retries included, first spends one token of a ``RateLimiter``, so the limit
holds for one worker and for fifty when they share one (e.g. ``SqliteRateLimiter`` with
``by_prefix={"embeddings": DEFAULT_BUCKET}``). A bucket lets through at most
``burst + rate_per_second * w`` requests in any ``w`` seconds: keep that under the
provider's quota. ``DEFAULT_BUCKET`` (500 a minute, burst 10) allows 510 requests in a
minute, so against a quota of exactly 500 RPM use e.g. ``TokenBucket.per_minute(480,
burst=20)``.

A 429, a 5xx, a timeout or a connection error is retried up to ``RetrySettings.max_attempts``
times in all, waiting the answer's ``Retry-After`` when it sends one (and giving up at once
when that is longer than ``max_retry_after_seconds``), else an exponential back-off with
jitter. Other 4xx answers and malformed bodies are not retried. What fails for good raises
``EmbeddingApiError`` (``EmbeddingApiTimeout`` when the last attempt timed out). Neither
logs nor errors ever hold the texts, the API key or the provider's answer body.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vaultq import errors
from vaultq.embeddings._vectors import check_positive_int, empty, unit_rows
from vaultq.embeddings.protocol import validate_texts
from vaultq.runtime.rate_limit import BucketState, Decision, TokenBucket, validate_key, wait

try:
    import httpx2 as httpx
    import numpy as np
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise errors.MissingDependency(
        "the OpenAI-compatible provider needs httpx2 and NumPy: pip install 'vaultq[embeddings]'"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from vaultq.embeddings._vectors import Vectors
    from vaultq.embeddings.protocol import EmbeddingProvider
    from vaultq.runtime.rate_limit import RateLimiter

__all__ = ["DEFAULT_BUCKET", "OpenAICompatibleProvider", "RetrySettings"]

log = logging.getLogger(__name__)

#: 500 requests a minute, 10 at once: the documented default of the external provider.
DEFAULT_BUCKET = TokenBucket.per_minute(500, burst=10)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrySettings:
    """How hard to try one request. ``max_attempts`` counts the first try."""

    max_attempts: int = 4
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 20.0
    max_retry_after_seconds: float = 60.0
    #: How long a request may wait for a token of the limiter before ``Throttled``.
    limiter_wait_seconds: float = 60.0

    def __post_init__(self) -> None:
        check_positive_int("max_attempts", self.max_attempts)
        for name in (
            "backoff_base_seconds",
            "backoff_cap_seconds",
            "max_retry_after_seconds",
            "limiter_wait_seconds",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise errors.InvalidSettings(f"{name} must be >= 0, not {value}")

    def backoff_seconds(self, attempt: int, *, random_fraction: float) -> float:
        """Exponential in ``attempt`` (1 for the first retry), capped, half of it jittered."""
        growth = float(2 ** min(attempt - 1, 30))
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * growth)
        return ceiling / 2 + ceiling / 2 * random_fraction


@dataclass(frozen=True, slots=True, kw_only=True)
class _Failure:
    """One failed attempt, before it is known whether it is the last."""

    kind: str  # "timeout", "connection", "status" or "malformed"
    retryable: bool
    status_code: int | None = None
    retry_after_seconds: float | None = None

    def error(self, provider: str, *, attempts: int) -> errors.EmbeddingApiError:
        tried = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        if self.kind == "timeout":
            return errors.EmbeddingApiTimeout(f"{provider}: no answer in time {tried}")
        detail = f"HTTP {self.status_code}" if self.kind == "status" else self.kind
        return errors.EmbeddingApiError(
            f"{provider}: {detail} {tried}",
            status_code=self.status_code,
            retry_after_seconds=self.retry_after_seconds,
        )


class OpenAICompatibleProvider:
    """``EmbeddingProvider`` over HTTP: posts ``batch_size`` texts per request to
    ``{base_url}/v1/embeddings`` and normalises the vectors it gets back.

    ``timeout_seconds`` bounds each network step (connect, send, each read), as in httpx.
    Without a ``limiter``, this instance keeps its own ``DEFAULT_BUCKET`` in memory, which
    limits this process only. ``transport`` and ``sleep`` are for tests.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        dimension: int,
        api_key: str | None = None,
        timeout_seconds: float = 30.0,
        limiter: RateLimiter | None = None,
        limiter_key: str = "embeddings",
        batch_size: int = 256,
        retry: RetrySettings | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise errors.InvalidSettings("base_url must be an http:// or https:// URL")
        if not (math.isfinite(timeout_seconds) and timeout_seconds > 0):
            raise errors.InvalidSettings(f"timeout_seconds must be > 0, not {timeout_seconds}")
        validate_key(limiter_key)
        self.name = f"openai-compatible:{model}"
        self.model = model
        self.dimension = check_positive_int("dimension", dimension)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.url = base_url.rstrip("/") + "/v1/embeddings"
        self.retry = retry or RetrySettings()
        self._limiter: RateLimiter = limiter or _ProcessLimiter(DEFAULT_BUCKET)
        self._limiter_key = limiter_key
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers, timeout=timeout_seconds, transport=transport, follow_redirects=False
        )

    def embed(self, texts: Sequence[str]) -> Vectors:
        items = validate_texts(texts)
        if not items:
            return empty(self.dimension)
        size = self.batch_size
        parts = [
            self._embed_batch(items[start : start + size]) for start in range(0, len(items), size)
        ]
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAICompatibleProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _embed_batch(self, batch: list[str]) -> Vectors:
        payload = {"model": self.model, "input": batch, "encoding_format": "float"}
        response = self._post_with_retries(payload)
        try:
            return _parse(response, count=len(batch), dimension=self.dimension)
        except (ValueError, TypeError, KeyError) as exc:
            # The cause names no input: _parse's messages are about shapes and types only.
            failure = _Failure(kind="malformed", retryable=False, status_code=response.status_code)
            raise failure.error(self.name, attempts=1) from exc

    def _post_with_retries(self, payload: dict[str, Any]) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            self._spend_token()
            outcome = self._attempt(payload)
            if isinstance(outcome, httpx.Response):
                return outcome
            delay = self._retry_delay(outcome, attempt=attempt)
            if delay is None:
                raise outcome.error(self.name, attempts=attempt)
            log.warning(
                "%s: attempt %d failed (%s %s); retrying in %.2f s",
                self.name,
                attempt,
                outcome.kind,
                outcome.status_code or "",
                delay,
            )
            self._sleep(delay)

    def _retry_delay(self, failure: _Failure, *, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None to give up now."""
        if not failure.retryable or attempt >= self.retry.max_attempts:
            return None
        if failure.retry_after_seconds is None:
            return self.retry.backoff_seconds(attempt, random_fraction=random.random())  # noqa: S311
        if failure.retry_after_seconds > self.retry.max_retry_after_seconds:
            return None
        return failure.retry_after_seconds

    def _attempt(self, payload: dict[str, Any]) -> httpx.Response | _Failure:
        try:
            response = self._client.post(self.url, json=payload)
        except httpx.TimeoutException:
            return _Failure(kind="timeout", retryable=True)
        except httpx.TransportError:
            return _Failure(kind="connection", retryable=True)
        if response.is_success:
            return response
        status = response.status_code
        return _Failure(
            kind="status",
            retryable=status in (408, 429) or status >= 500,
            status_code=status,
            retry_after_seconds=parse_retry_after(response.headers.get("retry-after")),
        )

    def _spend_token(self) -> None:
        decision = wait(
            self._limiter,
            self._limiter_key,
            timeout_seconds=self.retry.limiter_wait_seconds,
        )
        if not decision.allowed:
            raise errors.Throttled(
                f"{self.name}: the shared request budget is spent",
                retry_after_seconds=decision.retry_after_seconds,
            )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds from ``now`` (delta-seconds or an HTTP date), at
    least 0; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _parse(response: httpx.Response, *, count: int, dimension: int) -> Vectors:
    """The vectors of an OpenAI embeddings answer, ordered by their ``index``."""
    data = response.json()["data"]
    if not isinstance(data, list) or len(data) != count:
        raise ValueError(f"expected {count} embeddings in the answer")
    ordered = sorted(data, key=lambda item: int(item["index"]))
    if [int(item["index"]) for item in ordered] != list(range(count)):
        raise ValueError("the answer's indexes are not 0..n-1")
    rows = [item["embedding"] for item in ordered]
    return unit_rows(rows, dimension=dimension) if rows else empty(dimension)


class _ProcessLimiter:
    """A ``RateLimiter`` in memory: the default when none is given; limits one process."""

    def __init__(self, bucket: TokenBucket) -> None:
        self._bucket = bucket
        self._states: dict[str, BucketState] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, *, cost: float = 1.0) -> Decision:
        validate_key(key)
        with self._lock:
            now_ms = round(time.monotonic() * 1000)
            decision, state = self._bucket.take(self._states.get(key), now_ms=now_ms, cost=cost)
            self._states[key] = state
        return decision

    def close(self) -> None:
        self._states.clear()


if TYPE_CHECKING:

    def _satisfies_protocol(provider: OpenAICompatibleProvider) -> EmbeddingProvider:
        """mypy proves here that ``OpenAICompatibleProvider`` is an ``EmbeddingProvider``."""
        return provider

    def _limiter_satisfies_protocol(limiter: _ProcessLimiter) -> RateLimiter:
        return limiter
