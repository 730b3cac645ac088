"""The optional LLM review: one chat completion from any OpenAI-compatible endpoint.

Configured by ``DRAWING_LLM_URL`` (the base URL, e.g. ``http://127.0.0.1:11434``; the
request goes to ``{url}/v1/chat/completions``), ``DRAWING_LLM_MODEL`` and, if the endpoint
wants one, ``DRAWING_LLM_API_KEY``. Without a URL the review is skipped and
``evaluation.json`` says so. Only the schedule's rows (tags, types, sizes, quantities) and
the context's notes on them are sent, never the drawing itself; nothing sent or received
is logged.

Every attempt first takes a token from a shared ``RateLimiter`` (``DRAWING_LLM_RPM`` a
minute, default 60), so the limit holds across every worker. A 408, 429, 5xx, timeout or
connection error is retried (``max_attempts`` in all), waiting the answer's
``Retry-After`` when it gives one and an exponential back-off with jitter otherwise.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vaultq.runtime.rate_limit import TokenBucket, wait

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from vaultq.runtime.rate_limit import RateLimiter

log = logging.getLogger(__name__)

LIMITER_KEY = "drawing-llm"
_REPLY_CHARS = 2000
_SYSTEM_PROMPT = (
    "You review a construction schedule extracted from a drawing. Answer in at most five "
    "short sentences: inconsistencies between the rows and the specification notes, "
    "implausible sizes, and anything missing."
)


class LlmError(Exception):
    """The endpoint gave no usable answer, after every attempt allowed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmSettings:
    base_url: str
    model: str
    api_key: str | None = None
    timeout_seconds: float = 30.0
    max_attempts: int = 4
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 30.0
    #: A longer ``Retry-After`` than this ends the attempts at once.
    max_retry_after_seconds: float = 60.0
    rate_per_minute: float = 60.0

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError("DRAWING_LLM_URL must be an http:// or https:// URL")
        if not self.model:
            raise ValueError("DRAWING_LLM_MODEL is required with DRAWING_LLM_URL")
        if not self.rate_per_minute > 0:
            raise ValueError("DRAWING_LLM_RPM must be > 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LlmSettings | None:
        """The settings ``environ`` gives, or None when no endpoint is configured."""
        url = environ.get("DRAWING_LLM_URL", "").strip()
        if not url:
            return None
        return cls(
            base_url=url,
            model=environ.get("DRAWING_LLM_MODEL", "").strip(),
            api_key=environ.get("DRAWING_LLM_API_KEY") or None,
            rate_per_minute=float(environ.get("DRAWING_LLM_RPM", "60")),
        )

    @property
    def bucket(self) -> TokenBucket:
        return TokenBucket.per_minute(self.rate_per_minute, burst=1)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the API key elsewhere: it fails the request instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class ChatClient:
    """Chat completions with rate limiting and back-off; ``sleep`` is for tests."""

    def __init__(
        self,
        settings: LlmSettings,
        *,
        limiter: RateLimiter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._limiter = limiter
        self._sleep = sleep
        self._url = settings.base_url.rstrip("/") + "/v1/chat/completions"

    def complete(self, system: str, user: str) -> str:
        """The assistant's reply to one system and one user message."""
        body = {
            "model": self.settings.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": 0,
        }
        attempt = 0
        while True:
            attempt += 1
            self._take_token()
            try:
                return _reply_text(self._post(body))
            except _Retryable as failure:
                delay = self._delay(failure, attempt)
                log.warning("LLM attempt %d failed (%s); retry in %.1f s", attempt, failure, delay)
                self._sleep(delay)

    def _post(self, body: dict[str, Any]) -> bytes:
        headers = {"Content-Type": "application/json"}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in LlmSettings
            self._url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with _OPENER.open(request, timeout=self.settings.timeout_seconds) as answer:
                data: bytes = answer.read()
                return data
        except urllib.error.HTTPError as exc:
            if exc.code in (408, 429) or exc.code >= 500:
                raise _Retryable(
                    f"HTTP {exc.code}", retry_after(exc.headers.get("Retry-After"))
                ) from None
            raise LlmError(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise _Retryable(type(exc).__name__, None) from None

    def _delay(self, failure: _Retryable, attempt: int) -> float:
        """Seconds before the next attempt; LlmError when there is none to make."""
        settings = self.settings
        if attempt >= settings.max_attempts:
            raise LlmError(f"{failure} after {attempt} attempts")
        if failure.retry_after_seconds is not None:
            if failure.retry_after_seconds > settings.max_retry_after_seconds:
                raise LlmError(f"{failure}: Retry-After {failure.retry_after_seconds:.0f} s")
            return failure.retry_after_seconds
        ceiling = min(settings.backoff_cap_seconds, settings.backoff_base_seconds * 2.0**attempt)
        return ceiling * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret

    def _take_token(self) -> None:
        decision = wait(self._limiter, LIMITER_KEY, timeout_seconds=self.settings.timeout_seconds)
        if not decision.allowed:
            raise LlmError("the shared LLM request budget is spent")


class _Retryable(Exception):
    def __init__(self, what: str, retry_after_seconds: float | None) -> None:
        super().__init__(what)
        self.retry_after_seconds = retry_after_seconds


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """A ``Retry-After`` header (delta-seconds or an HTTP date) in seconds from now."""
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


def _reply_text(answer: bytes) -> str:
    try:
        text = json.loads(answer)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise LlmError("a malformed chat completion") from None
    if not isinstance(text, str):
        raise LlmError("a malformed chat completion")
    return text


def review(
    found: dict[str, Any], context_notes: dict[str, Any], client: ChatClient | None
) -> dict[str, Any]:
    """The review's record for ``evaluation.json``: ``skipped``, ``done`` with the reply, or
    ``failed`` with why (an optional step never fails the job)."""
    if client is None:
        return {"status": "skipped", "reason": "DRAWING_LLM_URL is not set"}
    rows = [
        {k: c[k] for k in ("tag", "kind", "width_mm", "height_mm", "quantity")}
        for c in found["components"]
    ]
    prompt = json.dumps({"schedule": rows, "specification_notes": context_notes.get("notes", {})})
    started = time.monotonic()
    try:
        reply = client.complete(_SYSTEM_PROMPT, prompt)
    except LlmError as exc:
        return {"status": "failed", "model": client.settings.model, "error": str(exc)}
    return {
        "status": "done",
        "model": client.settings.model,
        "seconds": round(time.monotonic() - started, 3),
        "text": reply[:_REPLY_CHARS],
    }
