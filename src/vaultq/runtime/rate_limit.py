"""Token-bucket rate limits: the pure policy, and the port every shared limiter implements.

A bucket holds up to ``burst`` tokens and gains ``rate_per_second`` of them continuously; a
request of ``cost`` tokens is allowed when the bucket holds at least that many, and takes
them. Nothing here does I/O or reads a clock: the state and the time are arguments, so
every backend applies the same arithmetic, and tests move time by hand.

Any state a limiter observed is an upper bound of the tokens the key can hold later (other
processes only take tokens; only time adds them). A refusal computed from an old state is
therefore always right, which lets a backend answer some refusals without a round trip.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from vaultq import errors

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "MAX_KEY_LENGTH",
    "BucketState",
    "BucketTable",
    "Decision",
    "LastKnownStates",
    "RateLimiter",
    "TokenBucket",
    "validate_key",
    "wait",
]

MAX_KEY_LENGTH = 512


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The answer to one request for tokens."""

    allowed: bool
    #: 0 when allowed; otherwise how long until this cost could be allowed, if nobody else
    #: takes tokens meanwhile (exact, in whole milliseconds).
    retry_after_seconds: float
    #: Tokens left in the bucket after this decision.
    remaining: float

    @property
    def retry_after_http_seconds(self) -> int:
        """The HTTP ``Retry-After`` value: whole seconds, rounded up, at least 1 (0 if allowed)."""
        if self.allowed:
            return 0
        return max(1, math.ceil(self.retry_after_seconds))


@dataclass(frozen=True, slots=True, kw_only=True)
class BucketState:
    """What a backend stores per key. A key with no state has a full bucket."""

    tokens: float
    updated_at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenBucket:
    """A limit: ``rate_per_second`` sustained, up to ``burst`` at once.

    A burst of ``b`` lets ``b`` requests through back to back after a quiet period; over
    any window of ``w`` seconds at most ``b + rate_per_second * w`` are allowed.
    """

    rate_per_second: float
    burst: float

    def __post_init__(self) -> None:
        for name, value in (("rate_per_second", self.rate_per_second), ("burst", self.burst)):
            if not (math.isfinite(value) and value > 0):
                raise errors.InvalidSettings(f"a token bucket's {name} must be > 0, not {value}")

    @classmethod
    def per_minute(cls, rate_per_minute: float, *, burst: float) -> TokenBucket:
        """A bucket from a per-minute rate, e.g. ``TokenBucket.per_minute(500, burst=10)``."""
        return cls(rate_per_second=rate_per_minute / 60, burst=burst)

    def take(
        self, state: BucketState | None, *, now_ms: int, cost: float = 1.0
    ) -> tuple[Decision, BucketState]:
        """Decide a request of ``cost`` tokens at ``now_ms``; return the decision and the state
        to store (the same object as ``state`` when nothing needs writing).

        A clock that went backwards neither adds tokens nor stalls the bucket: the state is
        rebased to ``now_ms``. Raises ``InvalidParameterValue`` for a cost that is not > 0 or
        that exceeds ``burst`` (it could never be allowed).
        """
        self.check_cost(cost)
        if state is None:
            state = BucketState(tokens=self.burst, updated_at_ms=now_ms)
        tokens = self.tokens_at(state, now_ms=now_ms)
        if tokens >= cost:
            left = tokens - cost
            allowed = Decision(allowed=True, retry_after_seconds=0.0, remaining=left)
            return allowed, BucketState(tokens=left, updated_at_ms=now_ms)
        if now_ms < state.updated_at_ms:
            state = BucketState(tokens=state.tokens, updated_at_ms=now_ms)
        wait_ms = self._wait_ms(state, now_ms=now_ms, cost=cost)
        return Decision(allowed=False, retry_after_seconds=wait_ms / 1000, remaining=tokens), state

    def tokens_at(self, state: BucketState, *, now_ms: int) -> float:
        """The tokens ``state`` holds at ``now_ms``, refilled and capped at ``burst``."""
        elapsed_ms = max(0, now_ms - state.updated_at_ms)
        return min(self.burst, state.tokens + elapsed_ms * self.rate_per_second / 1000)

    def full_at_ms(self, state: BucketState) -> int:
        """When ``state`` is a full bucket again, i.e. no different from having no state."""
        missing = max(0.0, self.burst - state.tokens)
        # One millisecond of margin against rounding: deleting a state early would add tokens.
        return state.updated_at_ms + math.ceil(missing * 1000 / self.rate_per_second) + 1

    def check_cost(self, cost: float) -> None:
        if not (math.isfinite(cost) and cost > 0):
            raise errors.InvalidParameterValue(f"a rate-limit cost must be > 0, not {cost}")
        if cost > self.burst:
            raise errors.InvalidParameterValue(
                f"a cost of {cost} tokens exceeds the bucket's burst of {self.burst}: "
                "it could never be allowed"
            )

    def _wait_ms(self, state: BucketState, *, now_ms: int, cost: float) -> int:
        """The fewest whole milliseconds after which ``tokens_at`` reaches ``cost``.

        Computed in closed form, then corrected by the very comparison ``take`` makes, so
        that waiting exactly this long is enough and a millisecond less is not.
        """
        missing = cost - self.tokens_at(state, now_ms=now_ms)
        wait_ms = max(1, math.ceil(missing * 1000 / self.rate_per_second))
        while wait_ms > 1 and self.tokens_at(state, now_ms=now_ms + wait_ms - 1) >= cost:
            wait_ms -= 1
        while self.tokens_at(state, now_ms=now_ms + wait_ms) < cost:
            wait_ms += 1
        return wait_ms


class BucketTable:
    """Which bucket limits a key: the longest matching prefix in ``by_prefix``, else
    ``default``. End prefixes with a separator (``"api:"``), or ``"api"`` also matches
    ``"apiary:..."``."""

    def __init__(
        self,
        *,
        default: TokenBucket | None = None,
        by_prefix: Mapping[str, TokenBucket] | None = None,
    ) -> None:
        prefixes = dict(by_prefix or {})
        if default is None and not prefixes:
            raise errors.InvalidSettings("a rate limiter needs a default bucket or by_prefix")
        if "" in prefixes:
            raise errors.InvalidSettings("an empty prefix matches every key: use default")
        self.default = default
        # Longest first, so the first match is the most specific.
        self._prefixes = sorted(prefixes.items(), key=lambda item: len(item[0]), reverse=True)

    def for_key(self, key: str) -> TokenBucket:
        """The bucket of ``key``; ``InvalidParameterValue`` when no prefix matches and there
        is no default."""
        validate_key(key)
        for prefix, bucket in self._prefixes:
            if key.startswith(prefix):
                return bucket
        if self.default is None:
            raise errors.InvalidParameterValue("no rate-limit bucket matches this key")
        return self.default


class LastKnownStates:
    """The state a limiter last wrote per key, to refuse without a round trip to the shared
    store: refilled to now, it is an upper bound of what the key holds (other processes
    only take tokens), so if even it refuses, the shared state would too. Allowing always
    goes to the store. Bounded: a forgotten key only costs that round trip."""

    def __init__(self, *, max_keys: int = 10_000) -> None:
        self._states: dict[str, BucketState] = {}
        self._max_keys = max_keys

    def refusal(
        self, key: str, bucket: TokenBucket, *, now_ms: int, cost: float
    ) -> Decision | None:
        """The refusal the shared store would give, when the known state already gives it."""
        known = self._states.get(key)
        if known is None:
            return None
        decision, _ = bucket.take(known, now_ms=now_ms, cost=cost)
        return None if decision.allowed else decision

    def remember(self, key: str, state: BucketState) -> None:
        if len(self._states) >= self._max_keys:
            self._states.clear()
        self._states[key] = state


def validate_key(key: str) -> None:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
        raise errors.InvalidParameterValue(
            f"a rate-limit key is a string of 1 to {MAX_KEY_LENGTH} characters"
        )


class RateLimiter(Protocol):
    """A token-bucket limiter whose limits hold across every process that shares it."""

    def acquire(self, key: str, *, cost: float = 1.0) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket now, or refuse without taking any.

        Never waits for tokens (see ``wait``). Atomic across processes: however many
        processes call it, a key never allows more than its bucket permits. Raises
        ``InvalidParameterValue`` for a malformed key, a cost <= 0 or above the burst, and
        ``BackendUnavailable`` when the shared state cannot be reached.
        """
        ...

    def close(self) -> None: ...


def wait(
    limiter: RateLimiter,
    key: str,
    *,
    cost: float = 1.0,
    timeout_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Decision:
    """Acquire ``cost`` tokens, sleeping each refusal's ``retry_after_seconds`` in between.

    Returns the allowing decision, or the last refusal as soon as its retry-after would end
    past ``timeout_seconds`` (so a hopeless wait returns at once rather than sleeping first).
    Every sleep is at least a millisecond: the caller never spins.
    """
    if not (math.isfinite(timeout_seconds) and timeout_seconds >= 0):
        raise errors.InvalidParameterValue(f"timeout_seconds must be >= 0, not {timeout_seconds}")
    deadline = clock() + timeout_seconds
    while True:
        decision = limiter.acquire(key, cost=cost)
        if decision.allowed or clock() + decision.retry_after_seconds > deadline:
            return decision
        sleep(decision.retry_after_seconds)
