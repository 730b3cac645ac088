"""The token bucket as pure policy: states and times are arguments, no clock is read."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaultq import errors
from vaultq.runtime.rate_limit import BucketState, BucketTable, Decision, TokenBucket

T0_MS = 1_700_000_000_000


def drain(bucket: TokenBucket, *, now_ms: int) -> BucketState:
    """Take every token a new key has at ``now_ms``."""
    state: BucketState | None = None
    for _ in range(int(bucket.burst)):
        decision, state = bucket.take(state, now_ms=now_ms)
        assert decision.allowed
    assert state is not None
    return state


def test_a_new_key_allows_its_burst_back_to_back_then_refuses() -> None:
    bucket = TokenBucket(rate_per_second=1, burst=3)
    state = drain(bucket, now_ms=T0_MS)

    decision, _ = bucket.take(state, now_ms=T0_MS)

    assert not decision.allowed
    assert decision.remaining == 0
    assert decision.retry_after_seconds == 1.0


def test_tokens_come_back_at_the_rate() -> None:
    bucket = TokenBucket(rate_per_second=10, burst=5)
    state = drain(bucket, now_ms=T0_MS)

    allowed = 0
    for step in range(1, 1001):  # one second, a request every millisecond
        decision, state = bucket.take(state, now_ms=T0_MS + step)
        allowed += decision.allowed

    assert allowed == 10


def test_a_quiet_key_refills_to_its_burst_and_no_further() -> None:
    bucket = TokenBucket(rate_per_second=10, burst=5)
    state = drain(bucket, now_ms=T0_MS)

    decision, _ = bucket.take(state, now_ms=T0_MS + 3_600_000)

    assert decision.allowed
    assert decision.remaining == 4


@pytest.mark.parametrize(
    ("rate_per_second", "burst", "cost", "expected_seconds"),
    [(2, 1, 1, 0.5), (50, 10, 1, 0.02), (10, 5, 3, 0.3), (3, 1, 1, 0.334)],
)
def test_retry_after_is_the_exact_wait_in_whole_milliseconds(
    rate_per_second: float, burst: float, cost: float, expected_seconds: float
) -> None:
    bucket = TokenBucket(rate_per_second=rate_per_second, burst=burst)
    state = drain(bucket, now_ms=T0_MS)

    refused, _ = bucket.take(state, now_ms=T0_MS, cost=cost)
    wait_ms = round(refused.retry_after_seconds * 1000)
    early, _ = bucket.take(state, now_ms=T0_MS + wait_ms - 1, cost=cost)
    on_time, _ = bucket.take(state, now_ms=T0_MS + wait_ms, cost=cost)

    assert refused.retry_after_seconds == expected_seconds
    assert not early.allowed
    assert on_time.allowed


@given(
    rate_per_second=st.floats(min_value=0.01, max_value=10_000),
    burst=st.integers(min_value=1, max_value=1000),
    tokens_fraction=st.floats(min_value=0, max_value=1),
    cost_fraction=st.floats(min_value=0.001, max_value=1),
    idle_ms=st.integers(min_value=0, max_value=10_000),
)
def test_waiting_the_retry_after_is_always_enough_and_a_millisecond_less_never_is(
    rate_per_second: float, burst: int, tokens_fraction: float, cost_fraction: float, idle_ms: int
) -> None:
    bucket = TokenBucket(rate_per_second=rate_per_second, burst=burst)
    state = BucketState(tokens=burst * tokens_fraction, updated_at_ms=T0_MS)
    cost = burst * cost_fraction
    now_ms = T0_MS + idle_ms

    decision, kept = bucket.take(state, now_ms=now_ms, cost=cost)

    if decision.allowed:
        assert decision.retry_after_seconds == 0
        return
    wait_ms = round(decision.retry_after_seconds * 1000)
    assert wait_ms >= 1
    assert bucket.take(kept, now_ms=now_ms + wait_ms, cost=cost)[0].allowed
    assert not bucket.take(kept, now_ms=now_ms + wait_ms - 1, cost=cost)[0].allowed


def test_a_cost_above_one_takes_that_many_tokens() -> None:
    bucket = TokenBucket(rate_per_second=1, burst=10)

    first, state = bucket.take(None, now_ms=T0_MS, cost=7)
    second, _ = bucket.take(state, now_ms=T0_MS, cost=4)

    assert first.allowed
    assert first.remaining == 3
    assert not second.allowed
    assert second.retry_after_seconds == 1.0  # one more token is missing


def test_a_refusal_takes_nothing() -> None:
    bucket = TokenBucket(rate_per_second=1, burst=10)
    _, state = bucket.take(None, now_ms=T0_MS, cost=7)

    refused, state = bucket.take(state, now_ms=T0_MS, cost=4)
    smaller, _ = bucket.take(state, now_ms=T0_MS, cost=3)

    assert not refused.allowed
    assert smaller.allowed


def test_a_cost_above_the_burst_is_refused_as_an_error_not_a_wait() -> None:
    bucket = TokenBucket(rate_per_second=100, burst=10)

    with pytest.raises(errors.InvalidParameterValue, match="exceeds the bucket's burst of 10"):
        bucket.take(None, now_ms=T0_MS, cost=11)


@pytest.mark.parametrize("cost", [0, -1, math.nan, math.inf])
def test_a_cost_must_be_a_positive_number(cost: float) -> None:
    with pytest.raises(errors.InvalidParameterValue, match="cost must be > 0"):
        TokenBucket(rate_per_second=1, burst=10).take(None, now_ms=T0_MS, cost=cost)


@pytest.mark.parametrize(
    ("rate_per_second", "burst"), [(0, 1), (-1, 1), (1, 0), (math.inf, 1), (1, math.nan)]
)
def test_a_bucket_needs_a_positive_rate_and_burst(rate_per_second: float, burst: float) -> None:
    with pytest.raises(errors.InvalidSettings):
        TokenBucket(rate_per_second=rate_per_second, burst=burst)


def test_a_per_minute_rate_spaces_requests_evenly() -> None:
    bucket = TokenBucket.per_minute(500, burst=1)
    _, state = bucket.take(None, now_ms=T0_MS)

    decision, _ = bucket.take(state, now_ms=T0_MS)

    assert decision.retry_after_seconds == 0.12


def test_a_clock_that_went_back_neither_adds_tokens_nor_stalls_the_bucket() -> None:
    bucket = TokenBucket(rate_per_second=1, burst=1)
    _, state = bucket.take(None, now_ms=T0_MS)
    stepped_back_ms = T0_MS - 3_600_000

    refused, state = bucket.take(state, now_ms=stepped_back_ms)
    later, _ = bucket.take(state, now_ms=stepped_back_ms + 1000)

    assert not refused.allowed
    assert refused.retry_after_seconds == 1.0
    assert later.allowed


def test_an_unchanged_state_is_not_rewritten() -> None:
    bucket = TokenBucket(rate_per_second=1, burst=1)
    _, state = bucket.take(None, now_ms=T0_MS)

    _, kept = bucket.take(state, now_ms=T0_MS + 500)

    assert kept is state


@pytest.mark.parametrize(
    ("retry_after_seconds", "header"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.001, 2), (59.2, 60)]
)
def test_http_retry_after_is_whole_seconds_rounded_up_and_at_least_one(
    retry_after_seconds: float, header: int
) -> None:
    decision = Decision(allowed=False, retry_after_seconds=retry_after_seconds, remaining=0)

    assert decision.retry_after_http_seconds == header


def test_an_allowed_decision_has_no_retry_after() -> None:
    decision, _ = TokenBucket(rate_per_second=1, burst=1).take(None, now_ms=T0_MS)

    assert decision.retry_after_http_seconds == 0


def test_the_longest_matching_prefix_chooses_the_bucket() -> None:
    default = TokenBucket(rate_per_second=10, burst=10)
    tenants = TokenBucket(rate_per_second=5, burst=5)
    big_tenant = TokenBucket(rate_per_second=100, burst=100)
    table = BucketTable(default=default, by_prefix={"api:": tenants, "api:big:": big_tenant})

    assert table.for_key("api:big:1") is big_tenant
    assert table.for_key("api:small:1") is tenants
    assert table.for_key("embeddings:openai") is default


def test_a_key_no_bucket_matches_is_an_error_without_a_default() -> None:
    table = BucketTable(by_prefix={"api:": TokenBucket(rate_per_second=5, burst=5)})

    with pytest.raises(errors.InvalidParameterValue, match="no rate-limit bucket"):
        table.for_key("embeddings:openai")


@pytest.mark.parametrize("key", ["", "k" * 513])
def test_keys_are_one_to_512_characters(key: str) -> None:
    table = BucketTable(default=TokenBucket(rate_per_second=5, burst=5))

    with pytest.raises(errors.InvalidParameterValue, match="1 to 512 characters"):
        table.for_key(key)


def test_a_limiter_without_any_bucket_is_a_settings_error() -> None:
    with pytest.raises(errors.InvalidSettings):
        BucketTable()


def test_the_policy_and_the_ratelimits_package_load_no_database_driver() -> None:
    probe = textwrap.dedent("""
        import sys
        import vaultq.ratelimits
        import vaultq.runtime.rate_limit
        print(",".join(sorted({"sqlite3", "vaultq.ratelimits.sqlite"} & set(sys.modules))))
    """)
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == ""


def test_an_empty_prefix_is_refused_in_favour_of_the_default() -> None:
    with pytest.raises(errors.InvalidSettings, match="use default"):
        BucketTable(by_prefix={"": TokenBucket(rate_per_second=1, burst=1)})
