"""A Lambda function written with aws-lambda-powertools runs under vaultq unchanged."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.runtime.apps import powertools_app
from tests.runtime.conftest import Effects, wait_for
from vaultq.events import LambdaContext, sqs_event
from vaultq.queues import MessageAttribute, OutgoingMessage
from vaultq.queues.sqlite import SqliteQueues
from vaultq.runtime.worker import Worker

if TYPE_CHECKING:
    from collections.abc import Iterator

EVENTS = Path(__file__).resolve().parents[1] / "events"
APP_PATH = "tests.runtime.apps.powertools_app:app"


def canonical(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def context() -> LambdaContext:
    return LambdaContext(
        function_name="lambda_handler",
        memory_limit_in_mb=128,
        deadline_monotonic=time.monotonic() + 30,
    )


def shape(value: object) -> object:
    """The keys and value types of a JSON document, without its values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


@pytest.fixture
def queues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqliteQueues]:
    monkeypatch.setenv("VAULTQ_TEST_EFFECTS", str(tmp_path / "effects.db"))
    backend = SqliteQueues(tmp_path / "vaultq.db")
    powertools_app.app.provision(backend)
    yield backend
    backend.close()


@pytest.fixture
def run_worker(queues: SqliteQueues) -> Iterator[Worker]:
    worker = Worker(powertools_app.app, app_path=APP_PATH, queues=queues)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield worker
    worker.stop()
    thread.join(timeout=30)


def test_vaultq_event_has_the_canonical_lambda_shape(queues: SqliteQueues) -> None:
    queues.send(
        "work",
        OutgoingMessage(
            body='{"id": "x", "do": "ok"}',
            attributes={"tenant": MessageAttribute(data_type="String", value="acme")},
        ),
    )
    event = sqs_event("work", queues.receive("work"))

    [ours] = event["Records"]
    [theirs, _] = canonical("sqs_batch.json")["Records"]
    assert shape(ours) == shape(theirs)
    assert ours["eventSource"] == "aws:sqs"
    assert ours["eventSourceARN"].endswith(":work")


def test_vaultq_fifo_event_has_the_canonical_lambda_shape(queues: SqliteQueues) -> None:
    queues.send("ordered.fifo", OutgoingMessage(body='{"id": "a1", "do": "ok"}', group_id="a"))
    event = sqs_event("ordered.fifo", queues.receive("ordered.fifo"))

    assert shape(event["Records"][0]) == shape(canonical("sqs_fifo_batch.json")["Records"][0])


def test_powertools_handler_gives_lambda_result_on_the_canonical_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULTQ_TEST_EFFECTS", str(tmp_path / "effects.db"))

    response = powertools_app.lambda_handler(canonical("sqs_batch.json"), context())
    fifo_response = powertools_app.fifo_handler(canonical("sqs_fifo_batch.json"), context())

    assert response == {
        "batchItemFailures": [{"itemIdentifier": "2e1424d4-f796-459a-8184-9c92662be6da"}]
    }
    assert fifo_response == {
        "batchItemFailures": [
            {"itemIdentifier": "11111111-0000-4000-8000-000000000002"},
            {"itemIdentifier": "11111111-0000-4000-8000-000000000003"},
        ]
    }


def test_powertools_batch_processor_under_the_worker(
    queues: SqliteQueues, run_worker: Worker, tmp_path: Path
) -> None:
    effects = Effects(tmp_path / "effects.db")
    for item, do in (("first", "ok"), ("second", "fail"), ("third", "ok")):
        queues.send("work", OutgoingMessage(body=json.dumps({"id": item, "do": do})))

    [dead] = wait_for(lambda: queues.receive("work-dlq", visibility_timeout_seconds=0))
    wait_for(lambda: queues.stats("work").visible + queues.stats("work").in_flight == 0)

    assert json.loads(dead.body)["id"] == "second"
    assert sorted(effects.items("powertools")) == ["first", "third"]


def test_powertools_fifo_processor_keeps_group_order_under_the_worker(
    queues: SqliteQueues, run_worker: Worker, tmp_path: Path
) -> None:
    effects = Effects(tmp_path / "effects.db")
    for item, do in (("a1", "ok"), ("a2", "fail"), ("a3", "ok")):
        queues.send(
            "ordered.fifo", OutgoingMessage(body=json.dumps({"id": item, "do": do}), group_id="a")
        )

    wait_for(
        lambda: queues.stats("ordered.fifo").visible + queues.stats("ordered.fifo").in_flight == 0
    )

    dead = [
        json.loads(m.body)["id"]
        for m in queues.receive("ordered-dlq.fifo", max_messages=10, visibility_timeout_seconds=0)
    ]
    assert dead[0] == "a2"
    # As on AWS, a3 shares a2's receives (it comes back in a2's batches) and may follow it
    # to the dead-letter queue; what never happens is a3 running while a2 is still queued.
    assert effects.items("powertools") == (["a1"] if "a3" in dead else ["a1", "a3"])
