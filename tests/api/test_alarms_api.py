"""Alarms over HTTP on a real `vaultq up` serving the demo app, whose alarms watch its DLQs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.api.conftest import start_server, token, wait_for
from tests.webhook_server import WebhookServer, serving
from vaultq.queues.protocol import OutgoingMessage
from vaultq.queues.sqlite import SqliteQueues

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.api.conftest import Server

OPERATOR = "ops"
FAST = {"VAULTQ_ALARM_INTERVAL_SECONDS": "0.1", "VAULTQ_OPERATOR_TENANT": OPERATOR}
JOBS_ALARM = "demo-jobs-dead-letters"


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookServer]:
    yield from serving([200])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, webhook: WebhookServer) -> Iterator[Server]:
    running = start_server(
        tmp_path_factory.mktemp("alarms"),
        workers=0,
        **FAST,
        VAULTQ_ALARM_WEBHOOK_URL=webhook.url,
    )
    yield running
    running.stop()


def operator_get(server: Server, path: str) -> Any:
    response = server.client(token(OPERATOR, "admin")).get(path)
    assert response.status_code == 200, response.text
    return response.json()


def states(server: Server) -> dict[str, str]:
    return {alarm["name"]: alarm["state"] for alarm in operator_get(server, "/alarms")}


def dead_letter(server: Server) -> None:
    queues = SqliteQueues(server.data / "vaultq.db")
    try:
        queues.send("demo-jobs-dlq", OutgoingMessage(body="{}"))
    finally:
        queues.close()


def test_the_operator_lists_every_declared_alarm_with_its_state(server: Server) -> None:
    wait_for(lambda: set(states(server).values()) == {"OK"})

    listed = {alarm["name"]: alarm for alarm in operator_get(server, "/alarms")}

    assert set(listed) == {JOBS_ALARM, "demo-uploads-dead-letters"}
    jobs_alarm = listed[JOBS_ALARM]
    assert jobs_alarm["metric"] == "dlq_depth(demo-jobs)"
    assert (jobs_alarm["comparison"], jobs_alarm["threshold"]) == (">=", 1)
    assert jobs_alarm["reason"] == "dlq_depth(demo-jobs) was 0: not >= the threshold 1"
    assert isinstance(jobs_alarm["updated_at_ms"], int)


def test_a_dead_letter_raises_the_alarm_keeps_history_and_calls_the_webhook(
    server: Server, webhook: WebhookServer
) -> None:
    wait_for(lambda: states(server).get(JOBS_ALARM) == "OK")

    dead_letter(server)

    wait_for(lambda: states(server)[JOBS_ALARM] == "ALARM")
    history = operator_get(server, f"/alarms/{JOBS_ALARM}/history")
    assert [(h["old_state"], h["new_state"]) for h in history] == [("OK", "ALARM"), (None, "OK")]
    assert history[0]["value"] == 1
    wait_for(lambda: webhook.received)
    assert [(d["app"], d["alarm"], d["new_state"]) for d in webhook.received] == [
        ("demo", JOBS_ALARM, "ALARM")
    ]


def test_an_unknown_alarm_is_a_404_problem(server: Server) -> None:
    response = server.client(token(OPERATOR, "admin")).get("/alarms/nope/history")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "AlarmNotFound"


@pytest.mark.parametrize(
    ("who", "status"),
    [
        (lambda: token(OPERATOR, "producer", "consumer"), 403),
        (lambda: token("acme", "admin"), 403),
        (lambda: None, 401),
    ],
)
def test_only_the_operator_tenants_admins_read_alarms(
    server: Server, who: Callable[[], str | None], status: int
) -> None:
    client = server.client(who())

    assert client.get("/alarms").status_code == status
    assert client.get(f"/alarms/{JOBS_ALARM}/history").status_code == status
