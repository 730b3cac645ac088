"""Shared rate limiters (embedded, and on the DynamoDB state table): one limit for every
process that opens the same storage."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from typing import TYPE_CHECKING, Protocol

import pytest

from vaultq import errors
from vaultq.ratelimits.dynamodb import DynamoRateLimiter
from vaultq.ratelimits.sqlite import SqliteRateLimiter
from vaultq.runtime.rate_limit import TokenBucket, wait

from ..state_fixtures import REGION, dynamodb_client_fixture, state_table_fixture  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Any

    from vaultq.runtime.rate_limit import RateLimiter

HAMMER = textwrap.dedent("""
    import json, pathlib, sys, time
    from vaultq.ratelimits.sqlite import SqliteRateLimiter
    from vaultq.runtime.rate_limit import TokenBucket
    db, go, duration = sys.argv[1], pathlib.Path(sys.argv[2]), float(sys.argv[3])
    limiter = SqliteRateLimiter(db, default=TokenBucket(rate_per_second=50, burst=10))
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    allowed = attempts = 0
    first = time.time()
    while time.time() < first + duration:
        allowed += limiter.acquire("provider").allowed
        attempts += 1
    last = time.time()
    print(json.dumps({"allowed": allowed, "attempts": attempts, "first": first, "last": last}))
""")


class FakeClock:
    """Seconds since the epoch that move only when told to (or when someone sleeps)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class OpenLimiter(Protocol):
    def __call__(self, **options: Any) -> RateLimiter: ...


@pytest.fixture(params=["sqlite", "dynamodb"])
def open_limiter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenLimiter]:
    """Opens a limiter on this test's storage (``SqliteRateLimiter``'s options), as another
    process would; each is closed at the end."""
    opened: list[RateLimiter] = []

    def open_one(**options: Any) -> RateLimiter:
        limiter: RateLimiter
        if request.param == "sqlite":
            limiter = SqliteRateLimiter(tmp_path / "vaultq.db", **options)
        else:
            table = request.getfixturevalue("state_table")
            client = request.getfixturevalue("dynamodb_client")
            limiter = DynamoRateLimiter(region=REGION, table=table, client=client, **options)
        opened.append(limiter)
        return limiter

    yield open_one
    for limiter in opened:
        limiter.close()


def test_one_tenant_using_up_its_limit_does_not_limit_another(open_limiter: OpenLimiter) -> None:
    limiter = open_limiter(default=TokenBucket(rate_per_second=1, burst=2), clock=FakeClock())
    for _ in range(2):
        assert limiter.acquire("api:tenant-a").allowed

    assert not limiter.acquire("api:tenant-a").allowed
    assert limiter.acquire("api:tenant-b").allowed


def test_a_prefix_gives_its_keys_their_own_bucket(open_limiter: OpenLimiter) -> None:
    limiter = open_limiter(
        default=TokenBucket(rate_per_second=1, burst=1),
        by_prefix={"embeddings:": TokenBucket.per_minute(500, burst=5)},
        clock=FakeClock(),
    )

    provider = [limiter.acquire("embeddings:openai").allowed for _ in range(6)]
    tenant = [limiter.acquire("api:tenant-a").allowed for _ in range(2)]

    assert provider == [True] * 5 + [False]
    assert tenant == [True, False]


def test_an_exhausted_key_stays_exhausted_after_a_reopen(open_limiter: OpenLimiter) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=0.5, burst=1)
    first = open_limiter(default=bucket, clock=clock)
    assert first.acquire("api:tenant-a").allowed

    reopened = open_limiter(default=bucket, clock=clock)
    decision = reopened.acquire("api:tenant-a")

    assert not decision.allowed
    assert decision.retry_after_seconds == 2.0


def test_a_limiter_never_allows_what_another_limiter_on_the_file_took(
    open_limiter: OpenLimiter,
) -> None:
    # Two limiters on one file behave as two processes; each remembers what it last saw.
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=1, burst=3)
    here = open_limiter(default=bucket, clock=clock)
    there = open_limiter(default=bucket, clock=clock)
    assert here.acquire("provider").allowed  # here last saw 2 tokens left

    taken_there = [there.acquire("provider").allowed for _ in range(3)]
    decision = here.acquire("provider")

    assert taken_there == [True, True, False]
    assert not decision.allowed
    assert decision.retry_after_seconds == 1.0


def test_two_processes_together_stay_within_one_limit(tmp_path: Path) -> None:
    db = tmp_path / "vaultq.db"
    SqliteRateLimiter(db, default=TokenBucket(rate_per_second=50, burst=10)).close()
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, str(db), str(go), "1.0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for process in processes:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
    go.touch()  # both have opened the limiter, however long their start took: now they ask
    reports = [json.loads(process.communicate(timeout=60)[0]) for process in processes]

    allowed = sum(report["allowed"] for report in reports)
    elapsed_seconds = max(r["last"] for r in reports) - min(r["first"] for r in reports)
    most = 10 + 50 * elapsed_seconds
    # Within one limit: never more than one burst plus the rate over the time both ran
    # (+1 for millisecond rounding); and not starved either, as both asked all the time.
    assert allowed <= most + 1
    assert allowed >= 0.8 * most
    assert all(report["allowed"] > 0 for report in reports), reports
    assert sum(report["attempts"] for report in reports) > 10 * allowed


def test_wait_sleeps_exactly_the_retry_after(open_limiter: OpenLimiter) -> None:
    clock = FakeClock()
    limiter = open_limiter(default=TokenBucket(rate_per_second=10, burst=5), clock=clock)
    assert limiter.acquire("provider", cost=5).allowed

    decision = wait(limiter, "provider", cost=3, timeout_seconds=10, clock=clock, sleep=clock.sleep)

    assert decision.allowed
    assert clock.sleeps == [0.3]


def test_wait_in_real_time_sleeps_about_the_retry_after_and_never_spins(
    open_limiter: OpenLimiter,
) -> None:
    # A token a second: `wait` asks again long before it is back, even when a loaded machine
    # makes each call to moto take a few hundred milliseconds (0.2 s was not enough).
    limiter = open_limiter(default=TokenBucket(rate_per_second=1, burst=1))
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    # Timed from the token taken: a loaded machine may spend part of the second before `wait`.
    started = time.monotonic()
    assert limiter.acquire("provider").allowed
    decision = wait(limiter, "provider", timeout_seconds=5, sleep=sleep)
    elapsed_seconds = time.monotonic() - started

    assert decision.allowed
    assert elapsed_seconds >= 0.98, "it waited for the token to come back"
    assert sum(sleeps) <= 1.01, "it slept the retry-after, not more"
    assert 1 <= len(sleeps) <= 2  # a second, short sleep only if the first woke early


def test_wait_gives_up_at_once_when_the_limit_cannot_allow_in_time(
    open_limiter: OpenLimiter,
) -> None:
    clock = FakeClock()
    limiter = open_limiter(default=TokenBucket(rate_per_second=1, burst=1), clock=clock)
    assert limiter.acquire("provider").allowed

    decision = wait(limiter, "provider", timeout_seconds=0.5, clock=clock, sleep=clock.sleep)

    assert not decision.allowed
    assert decision.retry_after_seconds == 1.0
    assert clock.sleeps == []


def test_a_cost_above_the_burst_is_an_error_before_any_state_changes(
    open_limiter: OpenLimiter,
) -> None:
    limiter = open_limiter(default=TokenBucket(rate_per_second=1, burst=5), clock=FakeClock())

    with pytest.raises(errors.InvalidParameterValue, match="exceeds the bucket's burst"):
        limiter.acquire("provider", cost=6)
    assert limiter.acquire("provider", cost=5).allowed


def test_a_key_without_a_bucket_is_an_error(open_limiter: OpenLimiter) -> None:
    limiter = open_limiter(by_prefix={"api:": TokenBucket(rate_per_second=1, burst=1)})

    with pytest.raises(errors.InvalidParameterValue, match="no rate-limit bucket"):
        limiter.acquire("embeddings:openai")


def test_buckets_that_refilled_are_deleted_so_the_table_stays_small(tmp_path: Path) -> None:
    clock = FakeClock()
    db = tmp_path / "vaultq.db"
    limiter = SqliteRateLimiter(db, default=TokenBucket(rate_per_second=1, burst=2), clock=clock)
    for i in range(600):
        limiter.acquire(f"api:client-{i}")

    clock.now += 2  # every bucket is full again
    limiter.acquire("api:client-0")
    clock.now += 1
    limiter.acquire("api:client-1")

    assert _stored_keys(db) == {"api:client-0", "api:client-1"}
    limiter.close()


def test_an_unusable_database_location_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    with pytest.raises(errors.BackendUnavailable, match="cannot use"):
        SqliteRateLimiter(blocker / "vaultq.db", default=TokenBucket(rate_per_second=1, burst=1))


def test_a_file_that_is_not_a_database_is_backend_unavailable(tmp_path: Path) -> None:
    db = tmp_path / "vaultq.db"
    db.write_bytes(b"not a database" * 1000)

    with pytest.raises(errors.BackendUnavailable, match="sqlite"):
        SqliteRateLimiter(db, default=TokenBucket(rate_per_second=1, burst=1))


@pytest.mark.parametrize("timeout_seconds", [-1, float("nan")])
def test_wait_refuses_a_timeout_that_is_not_a_duration(
    open_limiter: OpenLimiter, timeout_seconds: float
) -> None:
    limiter = open_limiter(default=TokenBucket(rate_per_second=1, burst=1))

    with pytest.raises(errors.InvalidParameterValue, match="timeout_seconds"):
        wait(limiter, "provider", timeout_seconds=timeout_seconds)


def _stored_keys(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {key for (key,) in conn.execute("SELECT key FROM ratelimit_buckets")}
    finally:
        conn.close()


def test_two_limiters_racing_in_threads_never_spend_one_token_twice(
    open_limiter: OpenLimiter,
) -> None:
    bucket = TokenBucket(rate_per_second=0.001, burst=10)  # no refill during the test
    limiters = [open_limiter(default=bucket) for _ in range(2)]
    start = threading.Barrier(2)
    allowed = [0, 0]

    def hammer(index: int) -> None:
        start.wait()
        allowed[index] = sum(limiters[index].acquire("provider").allowed for _ in range(15))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(allowed) == 10


def test_many_threads_of_one_limiter_at_once_are_allowed_exactly_the_burst(
    open_limiter: OpenLimiter,
) -> None:
    # Given one limiter whose concurrent decisions share transactions
    limiter = open_limiter(default=TokenBucket(rate_per_second=0.001, burst=50))
    start = threading.Barrier(32)
    allowed = [0] * 32

    def hammer(index: int) -> None:
        start.wait()
        allowed[index] = sum(limiter.acquire("api:acme").allowed for _ in range(4))

    # When 32 threads ask for 128 tokens at once
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # Then each decision saw the one before it: exactly the burst was allowed
    assert sum(allowed) == 50
