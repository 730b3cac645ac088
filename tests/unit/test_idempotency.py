"""Idempotent handlers: Powertools' semantics on the embedded store, with a fake clock."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import json
import logging
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from vaultq import errors
from vaultq.app import App
from vaultq.idempotency import (
    IdempotencyStatus,
    IdempotencyStore,
    idempotent,
    idempotent_function,
    register_lambda_context,
)
from vaultq.idempotency.dynamodb import DynamoIdempotency
from vaultq.idempotency.sqlite import SqliteIdempotency
from vaultq.queues.sqlite import SqliteQueues
from vaultq.runtime.deadline import within_deadline
from vaultq.wiring import open_idempotency_store

from ..state_fixtures import REGION, dynamodb_client_fixture, state_table_fixture  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

START_SECONDS = 1_700_000_000.0
REMAINING_MS = 30_000


class FakeClock:
    def __init__(self) -> None:
        self.now_seconds = START_SECONDS

    def __call__(self) -> float:
        return self.now_seconds

    def advance(self, seconds: float) -> None:
        self.now_seconds += seconds


class FakeContext:
    def __init__(self, remaining_ms: int = REMAINING_MS) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


Store = SqliteIdempotency | DynamoIdempotency


@pytest.fixture(params=["sqlite", "dynamodb"])
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[Callable[..., Store]]:
    """Opens a store on this test's storage, as another process would (``clock=None``:
    the real clock)."""
    opened: list[Store] = []

    def open_one(clock: Callable[[], float] | None = clock) -> Store:
        now = clock or time.time
        backend: Store
        if request.param == "sqlite":
            backend = SqliteIdempotency(tmp_path / "vaultq.db", clock=now)
        else:
            table = request.getfixturevalue("state_table")
            client = request.getfixturevalue("dynamodb_client")
            backend = DynamoIdempotency(region=REGION, table=table, client=client, clock=now)
        opened.append(backend)
        return backend

    yield open_one
    for backend in opened:
        proof: IdempotencyStore = backend  # mypy proves the adapters meet the Protocol
        proof.close()


@pytest.fixture
def store(open_store: Callable[..., Store]) -> Store:
    return open_store()


def sqs_event(
    body: str, *, message_id: str = "m-1", receipt: str = "r-1", count: int = 1
) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": message_id,
                "receiptHandle": receipt,
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": str(count),
                    "SentTimestamp": "1700000000000",
                    "ApproximateFirstReceiveTimestamp": "1700000000001",
                },
                "messageAttributes": {
                    "tenant": {
                        "stringValue": "acme",
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": "String",
                    }
                },
                "md5OfBody": "0" * 32,
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:orders",
                "awsRegion": "us-east-1",
            }
        ]
    }


ORDER = sqs_event(json.dumps({"order_id": "o-1", "amount": 5}))


def order_id(event: dict[str, Any]) -> object:
    return json.loads(event["Records"][0]["body"])["order_id"]


class Charges:
    """A handler with a side effect to count."""

    def __init__(self) -> None:
        self.runs: list[object] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.runs.append(order_id(event))
        return {"charged": order_id(event), "run": len(self.runs)}


def make_charge(store: IdempotencyStore, **options: Any) -> tuple[Charges, Callable[..., Any]]:
    charges = Charges()
    return charges, idempotent(store=store, **options)(charges)


def only_record(store: Store | Path) -> list[tuple[str, str, int, str | None]]:
    """Every stored record, expired or not, read from the backend's storage itself."""
    if isinstance(store, DynamoIdempotency):
        # The raw storage, as sqlite3 reads the file below.
        items = store._table.call("scan")["Items"]
        return sorted(
            (
                item["pk"]["S"].removeprefix("idempotency#"),
                item["status"]["S"],
                int(item["expires_at_ms"]["N"]),
                item["result_json"]["S"] if "result_json" in item else None,
            )
            for item in items
        )
    path = store.path if isinstance(store, SqliteIdempotency) else store
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(
            "SELECT key, status, expires_at_ms, result FROM idempotency_records ORDER BY key"
        ).fetchall()


# -- claim, complete, replay ----------------------------------------------------------------


def test_first_call_runs_the_handler_and_stores_its_result(store: Store) -> None:
    _, charge = make_charge(store, key=order_id)

    result = charge(ORDER, FakeContext())

    assert result == {"charged": "o-1", "run": 1}
    [(key, status, expires_at_ms, stored)] = only_record(store)
    assert status == "COMPLETED"
    assert expires_at_ms == (START_SECONDS + 3600) * 1000
    assert json.loads(stored or "") == result
    assert "o-1" not in key, "keys are hashes: the order id stays out of the store"


def test_running_attempt_holds_an_in_progress_claim_until_its_deadline(
    store: Store,
) -> None:
    seen = []

    @idempotent(store=store)
    def handler(event: dict[str, Any], context: Any) -> None:
        [(status, expires_at_ms)] = [
            (status, expires) for _, status, expires, _ in only_record(store)
        ]
        seen.append((status, expires_at_ms))

    handler(ORDER, FakeContext(remaining_ms=12_345))

    assert seen == [("IN_PROGRESS", START_SECONDS * 1000 + 12_345)]


def test_duplicate_while_the_first_runs_raises_in_progress_and_does_not_run(
    store: Store,
) -> None:
    runs: list[str] = []
    outcome: list[errors.VaultqError] = []

    @idempotent(store=store, key=order_id)
    def charge(event: dict[str, Any], context: Any) -> str:
        runs.append("run")
        if len(runs) == 1:  # the duplicate arrives while this attempt is running
            with pytest.raises(errors.IdempotencyAlreadyInProgress) as raised:
                charge(event, context)
            outcome.append(raised.value)
        return "done"

    assert charge(ORDER, FakeContext()) == "done"

    assert runs == ["run"]
    assert outcome[0].code == "IdempotencyAlreadyInProgress"


def test_completed_duplicate_gets_the_stored_result_without_running(
    store: Store,
) -> None:
    charges, charge = make_charge(store, key=order_id)
    first = charge(ORDER, FakeContext())

    again = charge(copy.deepcopy(ORDER), FakeContext())

    assert again == first
    assert charges.runs == ["o-1"]


def test_none_result_is_stored_and_replayed(store: Store) -> None:
    runs = []

    @idempotent(store=store)
    def handler(event: dict[str, Any], context: Any) -> None:
        runs.append(1)

    assert handler(ORDER, FakeContext()) is None
    assert handler(ORDER, FakeContext()) is None
    assert runs == [1]


def test_after_expiry_the_handler_runs_again(store: Store, clock: FakeClock) -> None:
    charges, charge = make_charge(store, key=order_id, expires_after_seconds=60)
    charge(ORDER, FakeContext())

    clock.advance(59)
    charge(ORDER, FakeContext())
    clock.advance(1)
    result = charge(ORDER, FakeContext())

    assert charges.runs == ["o-1", "o-1"]
    assert result == {"charged": "o-1", "run": 2}


def test_exception_releases_the_claim_and_propagates_unchanged(store: Store) -> None:
    failure = ValueError("provider said 503")
    attempts = []

    @idempotent(store=store, key=order_id)
    def charge(event: dict[str, Any], context: Any) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise failure
        return "charged"

    with pytest.raises(ValueError) as raised:
        charge(ORDER, FakeContext())
    assert raised.value is failure
    assert only_record(store) == [], "released: a retry may run"

    assert charge(ORDER, FakeContext()) == "charged"
    assert attempts == [1, 1]


class ProcessKilled(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even the claim's release."""


def test_crashed_attempts_claim_lapses_at_its_deadline(store: Store, clock: FakeClock) -> None:
    attempts = []

    @idempotent(store=store, key=order_id)
    def charge(event: dict[str, Any], context: Any) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ProcessKilled
        return "charged"

    with pytest.raises(ProcessKilled):
        charge(ORDER, FakeContext(remaining_ms=REMAINING_MS))
    with pytest.raises(errors.IdempotencyAlreadyInProgress):
        charge(ORDER, FakeContext())
    clock.advance(REMAINING_MS / 1000)
    result = charge(ORDER, FakeContext())

    assert result == "charged"
    assert attempts == [1, 1]


def test_a_lapsed_claim_cannot_release_or_complete_its_successors_claim(
    store: Store, clock: FakeClock
) -> None:
    store.claim("f#k", claim_id="slow", in_progress_ms=1000)
    clock.advance(1)
    successor = store.claim("f#k", claim_id="retry", in_progress_ms=1000)

    store.release("f#k", claim_id="slow")
    completed = store.complete(
        "f#k", claim_id="slow", result_json='"late"', expires_after_seconds=60
    )

    assert successor.claim_id == "retry"
    assert completed is False
    assert store.get("f#k") == successor


# -- keys -----------------------------------------------------------------------------------


def test_payload_key_ignores_receipt_handle_message_id_and_receive_count(
    store: Store,
) -> None:
    charges, charge = make_charge(store)
    body = json.dumps({"order_id": "o-1"})

    charge(sqs_event(body, message_id="m-1", receipt="r-1", count=1), FakeContext())
    charge(sqs_event(body, message_id="m-1", receipt="r-2", count=2), FakeContext())
    charge(sqs_event(body, message_id="m-2", receipt="r-3", count=1), FakeContext())

    assert charges.runs == ["o-1"]


def test_payload_key_counts_the_body_and_message_attributes(store: Store) -> None:
    charges, charge = make_charge(store)
    other_tenant = sqs_event(json.dumps({"order_id": "o-1"}))
    other_tenant["Records"][0]["messageAttributes"]["tenant"]["stringValue"] = "globex"

    charge(sqs_event(json.dumps({"order_id": "o-1"})), FakeContext())
    charge(sqs_event(json.dumps({"order_id": "o-1", "amount": 6})), FakeContext())
    charge(other_tenant, FakeContext())

    assert charges.runs == ["o-1", "o-1", "o-1"]


def test_key_function_picks_what_makes_two_events_the_same(store: Store) -> None:
    charges, charge = make_charge(store, key=order_id)

    charge(sqs_event(json.dumps({"order_id": "o-1", "note": "first"})), FakeContext())
    charge(sqs_event(json.dumps({"order_id": "o-1", "note": "resent"})), FakeContext())

    assert charges.runs == ["o-1"]


def test_keys_are_namespaced_by_the_handlers_qualified_name(store: Store) -> None:
    charges, charge = make_charge(store, key=order_id)

    @idempotent(store=store, key=order_id)
    def refund(event: dict[str, Any], context: Any) -> str:
        return "refunded"

    charge(ORDER, FakeContext())

    assert refund(ORDER, FakeContext()) == "refunded"
    assert charges.runs == ["o-1"]


def test_stacked_under_app_handler_the_handler_keeps_its_name(store: Store) -> None:
    app = App("shop")
    app.queue("orders")

    @app.handler(queue="orders")
    @idempotent(store=store, key=order_id)
    def charge(event: dict[str, Any], context: Any) -> str:
        return "charged"

    registered = app.handlers["charge"].function

    assert registered(ORDER, FakeContext()) == "charged"
    assert registered(ORDER, FakeContext()) == "charged"
    assert only_record(store)[0][0].startswith(f"{__name__}.test_stacked_")


def test_non_sqs_events_are_keyed_by_the_whole_event(store: Store) -> None:
    runs = []

    @idempotent(store=store)
    def handler(event: dict[str, Any], context: Any) -> int:
        runs.append(event)
        return len(runs)

    handler({"b": 1, "a": [1, 2]}, FakeContext())
    handler({"a": [1, 2], "b": 1}, FakeContext())
    handler({"a": [2, 1], "b": 1}, FakeContext())

    assert len(runs) == 2, "key order does not matter, list order does"


@pytest.mark.parametrize("key", [lambda event: None, lambda event: {"at": object()}])
def test_a_key_that_is_none_or_not_json_is_refused_before_running(
    store: Store, key: Callable[[dict[str, Any]], object]
) -> None:
    charges, charge = make_charge(store, key=key)

    with pytest.raises(errors.IdempotencyKeyError):
        charge(ORDER, FakeContext())

    assert charges.runs == []


# -- results --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [(1, 2), {"ids": {1, 2}}, b"raw", float("nan"), {1: "non-str key"}, object()],
    ids=["tuple", "set", "bytes", "nan", "int-key", "object"],
)
def test_a_result_that_is_not_json_is_refused_and_the_claim_released(
    store: Store, result: object
) -> None:
    @idempotent(store=store)
    def handler(event: dict[str, Any], context: Any) -> object:
        return result

    with pytest.raises(errors.IdempotencyResultNotStorable, match="not JSON"):
        handler(ORDER, FakeContext())

    assert only_record(store) == []


def test_a_result_over_400_kb_is_refused(store: Store) -> None:
    @idempotent(store=store)
    def handler(event: dict[str, Any], context: Any) -> str:
        return "x" * (400 * 1024)

    with pytest.raises(errors.IdempotencyResultNotStorable, match="at most"):
        handler(ORDER, FakeContext())


def test_expiry_must_be_at_least_a_second() -> None:
    with pytest.raises(errors.InvalidParameterValue, match="expires_after_seconds"):
        idempotent(expires_after_seconds=0)


# -- concurrency ----------------------------------------------------------------------------


def test_two_threads_racing_the_same_key_run_it_exactly_once(
    open_store: Callable[..., Store],
) -> None:
    # Two stores on one storage: two connections, as two handler processes would have.
    stores = [open_store(clock=None) for _ in range(2)]
    release = threading.Event()
    start = threading.Barrier(2)
    runs: list[str] = []
    outcomes: list[object] = []

    def slow_charge(event: dict[str, Any], context: Any) -> str:
        runs.append(threading.current_thread().name)
        release.wait(timeout=10)
        return "charged"

    racers = [idempotent(store=s, key=order_id)(slow_charge) for s in stores]

    def race(charge: Callable[..., Any]) -> None:
        start.wait()
        try:
            outcomes.append(charge(ORDER, FakeContext()))
        except errors.IdempotencyAlreadyInProgress as exc:
            outcomes.append(exc.code)
            release.set()

    threads = [threading.Thread(target=race, args=(c,), name=f"t{i}") for i, c in enumerate(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(runs) == 1
    assert sorted(map(str, outcomes)) == ["IdempotencyAlreadyInProgress", "charged"]


# -- record-level functions -----------------------------------------------------------------


def test_idempotent_function_runs_each_record_once_across_batches(
    store: Store,
) -> None:
    charged: list[str] = []

    @idempotent_function(store=store)
    def charge_record(record: dict[str, Any]) -> str:
        charged.append(record["body"])
        return "ok"

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        register_lambda_context(context)
        return within_deadline(event, context, charge_record)

    first = sqs_event("a", message_id="m-1", receipt="r-1")
    redelivered = sqs_event("a", message_id="m-1", receipt="r-2", count=2)
    redelivered["Records"] += sqs_event("b", message_id="m-2")["Records"]

    contextvars.copy_context().run(handler, first, FakeContext())
    contextvars.copy_context().run(handler, redelivered, FakeContext())

    assert charged == ["a", "b"]


def test_idempotent_function_claims_until_the_registered_deadline(
    store: Store,
) -> None:
    expiries: list[int] = []

    @idempotent_function(store=store, key=lambda order: order["id"])
    def reserve(order: dict[str, str]) -> None:
        rows = only_record(store)
        expiries.extend(exp for _, status, exp, _ in rows if status == "IN_PROGRESS")

    def invocation(context: object, order: str) -> None:
        register_lambda_context(context)
        reserve({"id": order})

    contextvars.copy_context().run(invocation, FakeContext(remaining_ms=7_000), "o-1")
    contextvars.copy_context().run(invocation, None, "o-2")

    assert expiries == [START_SECONDS * 1000 + 7_000, START_SECONDS * 1000 + 15 * 60 * 1000]


# -- wiring, storage and logs ---------------------------------------------------------------


def test_without_a_store_the_settings_store_opens_at_the_first_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "shared.db"
    monkeypatch.setenv("VAULTQ_URL", f"sqlite:///{database}?durability=process")

    @idempotent()
    def handler(event: dict[str, Any], context: Any) -> str:
        return "ok"

    assert not database.exists(), "decorating opens nothing"
    handler(ORDER, FakeContext())

    [(_, status, _, result)] = only_record(database)
    assert (status, result) == ("COMPLETED", '"ok"')


def test_a_store_factory_is_called_once_at_first_use(tmp_path: Path) -> None:
    opened: list[SqliteIdempotency] = []

    def open_store() -> IdempotencyStore:
        opened.append(SqliteIdempotency(tmp_path / "vaultq.db"))
        return opened[-1]

    @idempotent(store=open_store)
    def handler(event: dict[str, Any], context: Any) -> int:
        return 1

    assert opened == []
    handler(ORDER, FakeContext())
    handler(sqs_event("other"), FakeContext())

    assert len(opened) == 1
    opened[0].close()


def test_the_store_shares_a_database_file_with_the_queues(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/vaultq.db"
    queues = SqliteQueues(tmp_path / "vaultq.db")
    queues.create_queue("orders")
    store: IdempotencyStore = open_idempotency_store(url)

    record = store.claim("f#k", claim_id="c", in_progress_ms=1000)

    assert isinstance(store, SqliteIdempotency)
    assert record.status is IdempotencyStatus.IN_PROGRESS
    assert queues.list_queues() == ["orders"]
    store.close()
    queues.close()


def test_unknown_url_options_are_refused_for_the_store_too(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidSettings, match="unknown option"):
        open_idempotency_store(f"sqlite:///{tmp_path}/x.db?synchronous=off")


def test_expired_records_are_swept(tmp_path: Path, clock: FakeClock) -> None:
    first = SqliteIdempotency(tmp_path / "vaultq.db", clock=clock)
    first.claim("f#old", claim_id="c", in_progress_ms=1000)
    first.close()
    clock.advance(2)

    later = SqliteIdempotency(tmp_path / "vaultq.db", clock=clock)
    later.claim("f#new", claim_id="c", in_progress_ms=1000)
    later.close()

    assert [key for key, *_ in only_record(tmp_path / "vaultq.db")] == ["f#new"]


def test_logs_name_key_hashes_never_payloads_or_results(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    secret_body = json.dumps({"order_id": "o-1", "card": "4111-1111-1111-1111"})

    @idempotent(store=store)
    def handler(event: dict[str, Any], context: Any) -> dict[str, str]:
        return {"token": "tok_secret_123"}

    with caplog.at_level(logging.DEBUG, logger="vaultq.idempotency"):
        handler(sqs_event(secret_body), FakeContext())
        handler(sqs_event(secret_body), FakeContext())

    assert len(caplog.records) >= 2
    for logged in caplog.records:
        text = logged.getMessage()
        assert "4111" not in text
        assert "tok_secret_123" not in text
        assert "#" in text, "each line names the hashed key"


def test_on_dynamodb_a_result_its_record_pushes_over_400_kb_is_not_storable(
    state_table: str, dynamodb_client: Any
) -> None:
    # DynamoDB's 400 KB item limit counts the record's key, claim and times too.
    store = DynamoIdempotency(region=REGION, table=state_table, client=dynamodb_client)
    store.claim("k", claim_id="c", in_progress_ms=1000)
    result_json = json.dumps("x" * (400 * 1024 - 10))

    with pytest.raises(errors.IdempotencyResultNotStorable, match="400 KB"):
        store.complete("k", claim_id="c", result_json=result_json, expires_after_seconds=60)
    # DynamoDB writes nothing of a refused update; moto 5.2.5 leaves it half-applied
    # (moto/dynamodb/models/__init__.py update_item executes in place, then raises), so what
    # the record holds now is not asserted.
