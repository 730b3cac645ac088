"""Lambda's outcome rules, run by a real worker with handlers in their own processes."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import pytest

from tests.runtime.conftest import APP_PATH, app, send, wait_for
from vaultq import errors
from vaultq.app import App
from vaultq.runtime.worker import Worker

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.runtime.conftest import Effects
    from vaultq.queues.sqlite import SqliteQueues


def dead_letters(queues: SqliteQueues, dlq: str) -> list:
    return queues.receive(dlq, max_messages=10, visibility_timeout_seconds=0)


def test_successful_batch_is_deleted(
    queues: SqliteQueues, effects: Effects, worker: Callable[..., Worker]
) -> None:
    for i in range(5):
        send(queues, "work", f"m{i}")
    worker("work")

    wait_for(lambda: len(effects.items("work")) == 5)
    wait_for(lambda: queues.stats("work").in_flight == 0)
    assert sorted(effects.items("work")) == [f"m{i}" for i in range(5)]
    assert queues.stats("work").visible == 0


def test_partial_failure_retries_only_the_failed_item(
    queues: SqliteQueues, effects: Effects, worker: Callable[..., Worker]
) -> None:
    send(queues, "work", "good-1")
    bad = send(queues, "work", "bad", do="report-fail")
    send(queues, "work", "good-2")
    worker("work")

    [dead] = wait_for(lambda: dead_letters(queues, "work-dlq"))

    assert sorted(effects.items("work")) == ["good-1", "good-2"]
    assert dead.message_id == bad
    assert dead.dead_letter is not None
    assert (dead.dead_letter.reason, dead.dead_letter.receive_count) == ("HANDLER_ERROR", 3)


def test_poison_message_reaches_the_dlq_with_a_redacted_record(
    queues: SqliteQueues, effects: Effects, worker: Callable[..., Worker]
) -> None:
    poison = send(queues, "work", "poison", do="fail")
    worker("work")

    [dead] = wait_for(lambda: dead_letters(queues, "work-dlq"))

    assert dead.message_id == poison
    record = dead.dead_letter
    assert record is not None
    assert record.reason == "HANDLER_ERROR"
    assert record.receive_count == 3
    assert record.last_error is not None
    assert "ValueError: asked to fail" in record.last_error
    assert "abc123" not in record.last_error
    assert effects.items("work") == []


def test_retry_reuses_the_message_until_it_succeeds(
    queues: SqliteQueues, effects: Effects, worker: Callable[..., Worker]
) -> None:
    message_id = send(queues, "work", "flaky", do="fail-until", n=3)
    worker("work")

    [(done_id, item, receive_count)] = wait_for(lambda: effects.rows("work"))

    assert (done_id, item, receive_count) == (message_id, "flaky", 3)
    wait_for(lambda: queues.stats("work").in_flight == 0)
    assert dead_letters(queues, "work-dlq") == []


def test_handler_failure_reason_is_recorded(
    queues: SqliteQueues, effects: Effects, worker: Callable[..., Worker]
) -> None:
    send(queues, "work", "down", do="fail-until", n=99)
    worker("work")

    [dead] = wait_for(lambda: dead_letters(queues, "work-dlq"))

    assert dead.dead_letter is not None
    assert dead.dead_letter.reason == "EMBEDDING_API_ERROR"


def test_non_retryable_error_dead_letters_at_once(
    queues: SqliteQueues, effects: Effects, worker: Callable[..., Worker]
) -> None:
    send(queues, "work", "hopeless", do="give-up")
    worker("work")

    [dead] = wait_for(lambda: dead_letters(queues, "work-dlq"))

    assert dead.dead_letter is not None
    assert (dead.dead_letter.reason, dead.dead_letter.receive_count) == ("NON_RETRYABLE", 1)


def test_malformed_response_fails_the_whole_batch(
    queues: SqliteQueues, effects: Effects, worker: Callable[..., Worker]
) -> None:
    send(queues, "work", "odd", do="bad-id")
    worker("work")

    [dead] = wait_for(lambda: dead_letters(queues, "work-dlq"))

    assert dead.dead_letter is not None
    assert "malformed response" in (dead.dead_letter.last_error or "")
    assert effects.items("work") == ["odd"] * 3, "ran three times: each was a failure"


def test_timeout_stops_the_handler_and_the_worker_lives_on(
    queues: SqliteQueues, effects: Effects, worker: Callable[..., Worker]
) -> None:
    send(queues, "slow", "sleepy", do="sleep", n=30)
    worker("slow")

    [dead] = wait_for(lambda: dead_letters(queues, "slow-dlq"))
    assert dead.dead_letter is not None
    assert dead.dead_letter.reason == "TIMEOUT"
    assert effects.items("slow-start") == ["sleepy", "sleepy"]
    assert effects.items("slow-done") == []

    send(queues, "slow", "quick")
    wait_for(lambda: effects.items("slow-done") == ["quick"])


def test_handler_process_that_dies_fails_its_batch_only(
    queues: SqliteQueues, effects: Effects, worker: Callable[..., Worker]
) -> None:
    send(queues, "slow", "crash", do="exit")
    worker("slow")

    [dead] = wait_for(lambda: dead_letters(queues, "slow-dlq"))
    assert dead.dead_letter is not None
    assert "died" in (dead.dead_letter.last_error or "")

    send(queues, "slow", "after")
    wait_for(lambda: effects.items("slow-done") == ["after"])


def test_fifo_group_order_holds_under_failures(
    queues: SqliteQueues, effects: Effects, worker: Callable[..., Worker]
) -> None:
    for i in range(6):
        extra = {"n": 2} if i == 2 else {}
        send(
            queues, "ordered.fifo", f"a{i}", do="fail-until" if i == 2 else "ok", group="a", **extra
        )
        send(queues, "ordered.fifo", f"b{i}", group="b")
    worker("ordered")

    wait_for(lambda: len(effects.items("ordered")) == 12)

    done = effects.items("ordered")
    assert [i for i in done if i.startswith("a")] == [f"a{i}" for i in range(6)]
    assert [i for i in done if i.startswith("b")] == [f"b{i}" for i in range(6)]


def test_lease_heartbeat_keeps_a_long_handler_s_message_invisible(
    queues: SqliteQueues, effects: Effects, worker: Callable[..., Worker]
) -> None:
    send(queues, "heartbeat", "long", do="sleep", n=5)
    worker("heartbeat")

    wait_for(lambda: effects.items("heartbeat-start"))
    wait_for(lambda: queues.stats("heartbeat").in_flight == 0, timeout_seconds=20)

    assert effects.rows("heartbeat-start")[0][1:] == ("long", 1)
    assert len(effects.rows("heartbeat-start")) == 1, "never redelivered while it ran"
    assert queues.stats("heartbeat").visible == 0


def test_a_provisioned_handler_is_initialised_before_its_first_event(
    queues: SqliteQueues, effects: Effects, worker: Callable[..., Worker]
) -> None:
    worker("warm")

    # Two processes may run its events; one is provisioned, and it is the one used first.
    [init_pid] = wait_for(lambda: effects.items("warm-init"))  # nothing was sent yet
    for number in (1, 2):
        send(queues, "warm", f"m{number}")
        wait_for(lambda n=number: len(effects.items("warm-run")) == n)

    assert effects.items("warm-run") == [init_pid, init_pid], "the warm process ran both"
    assert effects.items("warm-init") == [init_pid], "init runs once per process"


def test_a_worker_stops_while_its_provisioned_process_is_still_initialising(
    queues: SqliteQueues, effects: Effects
) -> None:
    running = Worker(app, app_path=APP_PATH, queues=queues, handlers=["slow_init"])
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    [init_pid] = wait_for(lambda: effects.items("slow-init"))

    running.stop()
    thread.join(timeout=20)

    assert not thread.is_alive(), "stop waited for an init that takes ten minutes"
    with pytest.raises(ProcessLookupError):
        os.kill(int(init_pid), 0)
    assert effects.items("slow-init-run") == []


def test_a_failing_init_fails_the_invocation_and_is_retried_in_a_new_process(
    queues: SqliteQueues, effects: Effects, worker: Callable[..., Worker]
) -> None:
    sent = send(queues, "cold", "m1")
    worker("cold")

    [dead] = wait_for(lambda: dead_letters(queues, "cold-dlq"))

    assert dead.message_id == sent
    record = dead.dead_letter
    assert record is not None
    assert (record.reason, record.receive_count) == ("HANDLER_ERROR", 2)
    assert record.last_error is not None
    assert "init failed: ValueError: the model file is missing" in record.last_error
    assert "abc123" not in record.last_error
    assert effects.items("cold") == [], "the handler never ran without its init"
    first, second = effects.items("cold-init")
    assert first != second, "each attempt started a fresh process"


def test_provisioned_concurrency_cannot_exceed_max_concurrency() -> None:
    app = App("declarations")
    app.queue("q")

    with pytest.raises(errors.InvalidParameterValue, match="provisioned_concurrency"):
        app.handler(queue="q", name="h", max_concurrency=2, provisioned_concurrency=3)(print)
