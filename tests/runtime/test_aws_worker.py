"""The runtime's end-to-end scenarios with the worker on AWS: SQS and DynamoDB as moto's HTTP
server serves them, reached through an ``aws://`` VAULTQ_URL as a user would.

Handlers run in real processes and write down what they did (``Effects``); tests read the
queues back through ``SqsQueues``. A retry must be the same SQS message received again: its
``MessageId`` stays and its ``ApproximateReceiveCount`` climbs (never delete-and-resend).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest

from tests.runtime.apps.aws_app import PREFIX_ENV, build_app, queue_of
from tests.runtime.conftest import wait_for
from vaultq.jobs import JobKey, JobStatus
from vaultq.jobs.dynamodb import DynamoJobs
from vaultq.queues import MessageAttribute, OutgoingMessage, QueueAttributes, SendEntry
from vaultq.runtime import JOB_ATTRIBUTE
from vaultq.runtime.leases import LeaseKeeper
from vaultq.runtime.worker import Worker
from vaultq.wiring import open_jobs, open_metrics, open_queues

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.runtime.conftest import Effects
    from vaultq.app import App
    from vaultq.jobs.protocol import Job, JobStore
    from vaultq.queues.protocol import QueueBackend, ReceivedMessage

APP_PATH = "tests.runtime.apps.aws_app:app"
ROOT = Path(__file__).resolve().parents[2]


class Aws:
    """One test's corner of the shared moto server: its URL, app and queues."""

    def __init__(self, url: str, app: App, queues: QueueBackend) -> None:
        self.url = url
        self.app = app
        self.queues = queues

    def queue(self, handler: str) -> str:
        return queue_of(self.app, handler)

    def dead_letter_queue(self, handler: str) -> str:
        dlq = self.app.queues[self.queue(handler)].dead_letter_queue
        assert dlq is not None
        return dlq

    def send(self, handler: str, item: str, do: str = "ok", **extra: Any) -> str:
        queue = self.queue(handler)
        group = {"group_id": extra.pop("group")} if queue.endswith(".fifo") else {}
        body = json.dumps({"id": item, "do": do, **extra})
        return self.queues.send(queue, OutgoingMessage(body=body, **group)).message_id

    def dead_letters(self, handler: str) -> list[ReceivedMessage]:
        return self.queues.receive(
            self.dead_letter_queue(handler), max_messages=10, visibility_timeout_seconds=0
        )

    def settled(self, handler: str) -> bool:
        """Nothing of the handler's queue is waiting or in flight."""
        stats = self.queues.stats(self.queue(handler))
        return stats.visible == stats.in_flight == stats.delayed == 0


@pytest.fixture
def aws(aws_url: str, tmp_path: Path) -> Iterator[Aws]:
    prefix = f"w{uuid.uuid4().hex[:12]}"
    # Stores with no AWS adapter (metrics here) live in this test's own state database.
    options = {"jobs_table": f"{prefix}-jobs", "state": f"sqlite:///{tmp_path / 'state.db'}"}
    url = f"{aws_url}&{urlencode(options)}"
    app = build_app(prefix)
    queues = open_queues(url)
    app.provision(queues)
    yield Aws(url, app, queues)
    queues.close()


@pytest.fixture
def worker(aws: Aws, effects: Effects) -> Iterator[Callable[..., Worker]]:
    started: list[tuple[Worker, threading.Thread, QueueBackend]] = []

    def start(*handlers: str) -> Worker:
        queues = open_queues(aws.url)
        running = Worker(
            aws.app,
            app_path=APP_PATH,
            queues=queues,
            handlers=list(handlers),
            job_store_factory=functools.partial(open_jobs, aws.url),
            metrics_factory=functools.partial(open_metrics, aws.url),
        )
        thread = threading.Thread(target=running.run, daemon=True)
        thread.start()
        started.append((running, thread, queues))
        return running

    yield start
    for running, _thread, _queues in started:
        running.stop()
    for _running, thread, queues in started:
        thread.join(timeout=30)
        queues.close()


@pytest.fixture
def jobs(aws: Aws) -> Iterator[JobStore]:
    store = open_jobs(aws.url)
    assert isinstance(store, DynamoJobs), "an aws URL keeps jobs in DynamoDB"
    store.create_table()  # a deployment's step: workers never create it
    yield store
    store.close()


# -- Lambda's outcome rules ------------------------------------------------------------------


def test_partial_batch_failure_gives_back_only_the_failed_record(
    aws: Aws, effects: Effects, worker: Callable[..., Worker]
) -> None:
    entries = [("good-1", "ok"), ("bad", "report-fail"), ("good-2", "ok")]
    sent = aws.queues.send_batch(
        aws.queue("work"),
        [
            SendEntry(id=item, message=OutgoingMessage(body=json.dumps({"id": item, "do": do})))
            for item, do in entries
        ],
    )
    worker("work")

    [dead] = wait_for(lambda: aws.dead_letters("work"))

    assert sorted(effects.items("work")) == ["good-1", "good-2"], "successes ran once"
    assert dead.message_id == sent.successful["bad"].message_id
    assert dead.dead_letter is not None
    assert (dead.dead_letter.reason, dead.dead_letter.receive_count) == ("HANDLER_ERROR", 3)
    wait_for(lambda: aws.settled("work"))  # the copy is sent before the original is deleted


def test_retry_receives_the_same_message_again(
    aws: Aws, effects: Effects, worker: Callable[..., Worker]
) -> None:
    message_id = aws.send("steady", "flaky", do="fail-until", n=3)
    worker("steady")

    wait_for(lambda: effects.items("steady-done"))

    assert effects.rows("steady-start") == [(message_id, "flaky", n) for n in (1, 2, 3)]
    wait_for(lambda: aws.settled("steady"))
    assert aws.dead_letters("steady") == []


def test_poison_message_reaches_the_dlq_with_its_failure_record(
    aws: Aws, effects: Effects, worker: Callable[..., Worker]
) -> None:
    poison = aws.send("steady", "poison", do="fail")
    worker("steady")

    [dead] = wait_for(lambda: aws.dead_letters("steady"))

    assert dead.message_id == poison
    assert dead.body == json.dumps({"id": "poison", "do": "fail"})
    record = dead.dead_letter
    assert record is not None
    assert (record.source_queue, record.reason) == (aws.queue("steady"), "HANDLER_ERROR")
    assert record.receive_count == 3
    assert "ValueError: asked to fail" in (record.last_error or "")
    assert "abc123" not in (record.last_error or ""), "the error was redacted"
    assert effects.rows("steady-start") == [(poison, "poison", n) for n in (1, 2, 3)]
    wait_for(lambda: aws.settled("steady"))  # moved, not copied: nothing stays behind


def test_non_retryable_error_dead_letters_before_sqs_would(
    aws: Aws, effects: Effects, worker: Callable[..., Worker]
) -> None:
    hopeless = aws.send("work", "hopeless", do="give-up")
    worker("work")

    [dead] = wait_for(lambda: aws.dead_letters("work"))

    assert dead.message_id == hopeless
    assert dead.dead_letter is not None
    assert (dead.dead_letter.reason, dead.dead_letter.receive_count) == ("NON_RETRYABLE", 1)
    wait_for(lambda: aws.settled("work"))


def test_fifo_group_order_holds_under_failures(
    aws: Aws, effects: Effects, worker: Callable[..., Worker]
) -> None:
    for i in range(6):
        if i == 2:
            aws.send("ordered", "a2", do="fail-until", group="a", n=2)  # fails once
        else:
            aws.send("ordered", f"a{i}", group="a")
        aws.send("ordered", f"b{i}", group="b")
    worker("ordered")

    wait_for(lambda: len(effects.items("ordered")) == 12)

    done = effects.rows("ordered")
    assert [item for _, item, _ in done if item.startswith("a")] == [f"a{i}" for i in range(6)]
    assert [item for _, item, _ in done if item.startswith("b")] == [f"b{i}" for i in range(6)]
    [a2] = [row for row in done if row[1] == "a2"]
    assert a2[2] == 2, "a2 failed once; a3 to a5 waited for its retry"
    wait_for(lambda: aws.settled("ordered"))


def test_timeout_stops_the_handler_and_the_worker_lives_on(
    aws: Aws, effects: Effects, worker: Callable[..., Worker]
) -> None:
    sleepy = aws.send("slow", "sleepy", do="sleep", n=30)
    worker("slow")

    [dead] = wait_for(lambda: aws.dead_letters("slow"))
    assert dead.dead_letter is not None
    assert (dead.dead_letter.reason, dead.dead_letter.receive_count) == ("TIMEOUT", 2)
    assert effects.rows("slow-start") == [(sleepy, "sleepy", 1), (sleepy, "sleepy", 2)]
    assert effects.items("slow-done") == []

    aws.send("slow", "quick")
    wait_for(lambda: effects.items("slow-done") == ["quick"])


def test_lease_heartbeat_keeps_a_long_handler_s_message_invisible(
    aws: Aws, effects: Effects, worker: Callable[..., Worker]
) -> None:
    """The handler runs 5 s on a queue that hides a message for 2 s, while a second handler
    process polls the queue: only ChangeMessageVisibility keeps it from a second delivery."""
    aws.send("heartbeat", "long", do="sleep", n=5)
    worker("heartbeat")

    wait_for(lambda: effects.items("heartbeat-start"))
    wait_for(lambda: aws.settled("heartbeat"))

    assert [row[1:] for row in effects.rows("heartbeat-start")] == [("long", 1)]


def test_a_one_second_lease_is_extended_a_tick_before_it_would_lapse(aws: Aws) -> None:
    """A heartbeat that waited for half of a 1 s lease could extend it a few ms before it
    lapses, or after: the next tick comes 0.5 s later. Extension must leave a tick to spare."""
    queue = f"{aws.queue('work')}-short"
    aws.queues.create_queue(queue, QueueAttributes(visibility_timeout_seconds=1))
    aws.queues.send(queue, OutgoingMessage(body="long"))
    [message] = aws.queues.receive(queue)
    received = time.monotonic()
    leases = LeaseKeeper(aws.queues)
    leases.track(queue, [message], 1)

    sleep_until(received + 0.4)  # 0.6 s left: more than half the lease, less than two ticks
    leases.extend_due()
    sleep_until(received + 1.1)  # past the first lease, well inside an extended one

    assert aws.queues.receive(queue) == [], "the lease was extended at the first chance"


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


# -- jobs on DynamoDB ------------------------------------------------------------------------


def test_job_runs_its_stages_and_succeeds(
    aws: Aws, jobs: JobStore, worker: Callable[..., Worker]
) -> None:
    key = JobKey(tenant_id="acme", client_id="web", job_id=f"job-{uuid.uuid4().hex[:8]}")
    jobs.create(key)
    aws.queues.send(
        aws.queue("pipeline"),
        OutgoingMessage(
            body=json.dumps({"id": key.job_id}),
            attributes={JOB_ATTRIBUTE: MessageAttribute(data_type="String", value=str(key))},
        ),
    )
    worker("pipeline")

    job = wait_for(lambda: finished(jobs, key))

    assert job.stages_completed == ("fetch", "transform", "store")
    assert job.progress == 1.0
    assert job.result == {"stages": ["fetch", "transform", "store"]}
    assert job.output_files == (f"out/{key.job_id}.txt",)
    assert job.attempts == 1
    wait_for(lambda: aws.settled("pipeline"))


def finished(jobs: JobStore, key: JobKey) -> Job | None:
    job = jobs.get(key)
    return job if job is not None and job.status is JobStatus.SUCCEEDED else None


# -- the command ------------------------------------------------------------------------------


def test_vaultq_worker_command_runs_on_aws_and_stops_on_sigterm(aws: Aws, effects: Effects) -> None:
    prefix = aws.queue("work").removesuffix("-work")
    for i in range(3):
        aws.send("work", f"m{i}")
    env = {
        **os.environ,
        "VAULTQ_URL": aws.url,
        PREFIX_ENV: prefix,
        "VAULTQ_TEST_EFFECTS": str(effects.path),
    }
    command = [sys.executable, "-m", "vaultq", "worker", APP_PATH, "--handler", "work"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, text=True, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_for(lambda: sorted(effects.items("work")) == ["m0", "m1", "m2"])
        wait_for(lambda: aws.settled("work"))
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()

    assert process.returncode == 0, stderr
    assert "worker stopped" in stderr
