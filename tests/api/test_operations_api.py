"""Queues, dead letters, blobs, health, metrics and limits over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import token, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.api.conftest import Server


def samples(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = server.client().get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_health_and_readiness_answer_without_a_token(server: Server) -> None:
    client = server.client()

    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_metrics_report_queue_depth_and_handler_invocations(server: Server) -> None:
    client = server.client(token())
    job_id = client.post("/jobs", json={"payload": "m"}).json()["job_id"]
    wait_for(lambda: client.get(f"/jobs/{job_id}").json()["status"] == "succeeded")

    found = wait_for(
        lambda: (
            (s := samples(server))
            and any(
                name == "vaultq_handler_invocations_total"
                and ("handler", "run_job") in labels
                and value >= 1
                for (name, labels), value in s.items()
            )
            and s
        )
    )

    assert found[("vaultq_queue_messages", (("queue", "demo-jobs"), ("state", "visible")))] == 0
    assert any(name == "vaultq_api_requests_total" for name, _ in found)
    assert found[("vaultq_jobs", (("status", "succeeded"),))] >= 1


def test_callers_cannot_set_vaultq_s_own_message_attributes(server: Server) -> None:
    producer = server.client(token("acme", "producer"))
    for spoof in ({"vaultq-tenant": "globex"}, {"vaultq-job": "globex#alice#" + "0" * 32}):
        refused = producer.post(
            "/queues/demo-uploads/messages",
            json={"body": '{"Records": []}', "attributes": {**spoof, "note": "spoof"}},
        )
        assert refused.status_code == 400
        assert refused.json()["code"] == "InvalidParameterValue"
        assert next(iter(spoof)) in refused.json()["detail"]


def test_messages_sent_through_the_api_carry_the_sender_s_tenant(server: Server) -> None:
    producer = server.client(token("acme", "producer"))
    sent = producer.post(
        "/queues/demo-uploads/messages",
        json={"body": '{"Records": []}', "attributes": {"note": "hello"}},
    )
    batch = producer.post(
        "/queues/demo-uploads/messages/batch",
        json={
            "entries": [
                {"id": "one", "body": '{"Records": []}'},
                {"id": "two", "body": "bad \u0000 body"},
            ]
        },
    )

    assert sent.status_code == 201
    assert set(batch.json()["successful"]) == {"one"}
    assert [f["code"] for f in batch.json()["failed"]] == ["InvalidMessageContents"]
    assert producer.post("/queues/nope/messages", json={"body": "x"}).status_code == 404
    assert (
        producer.post(
            "/queues/demo-uploads/messages/batch",
            json={"entries": [{"id": str(i), "body": "x"} for i in range(11)]},
        ).status_code
        == 422
    )


def test_dead_letters_are_listed_and_redriven_per_tenant(server: Server) -> None:
    acme = server.client(token("acme", "producer"))
    acme_admin = server.client(token("acme", "admin"))
    globex_admin = server.client(token("globex", "admin"))
    job_id = acme.post("/jobs", json={"payload": {"fail": "always"}}).json()["job_id"]
    wait_for(lambda: acme.get(f"/jobs/{job_id}").json()["status"] == "dead_lettered")

    [dead] = acme_admin.get("/queues/demo-jobs/dead-letters").json()
    assert dead["failure_reason"] == "NON_RETRYABLE"
    assert dead["source_queue"] == "demo-jobs"
    assert job_id in dead["body"]
    assert globex_admin.get("/queues/demo-jobs/dead-letters").json() == []
    assert globex_admin.post("/queues/demo-jobs/dead-letters/redrive", json={}).json() == {
        "moved": 0
    }
    assert acme_admin.post("/queues/demo-jobs/dead-letters/redrive", json={}).json() == {"moved": 1}


def test_upload_then_download_through_a_signed_url(server: Server) -> None:
    producer = server.client(token("acme", "producer"))
    consumer = server.client(token("acme", "consumer"))
    other = server.client(token("globex", "consumer"))

    stored = producer.put(
        "/blobs/demo-uploads/in/report.csv",
        content=b"a,b\n1,2\n",
        headers={"Content-Type": "text/csv"},
    )
    link = consumer.post("/blobs/demo-uploads/download-url", json={"key": "in/report.csv"})
    download = server.client().get(link.json()["url"])

    assert stored.status_code == 200
    assert stored.json()["size_bytes"] == 8
    assert download.content == b"a,b\n1,2\n"
    assert download.headers["content-type"].startswith("text/csv")
    assert (
        other.post("/blobs/demo-uploads/download-url", json={"key": "in/report.csv"}).status_code
        == 404
    )
    tampered = link.json()["url"].replace("report", "rep0rt")
    assert server.client().get(tampered).status_code == 403
    traversal = producer.put("/blobs/demo-uploads/a/%2E%2E/%2E%2E/escape", content=b"x")
    assert traversal.status_code == 400
    assert traversal.json()["code"] == "InvalidObjectKey"
    assert producer.put("/blobs/no-such-bucket/x", content=b"x").status_code == 404


def test_rate_limit_answers_429_with_retry_after(start: Callable[..., Server]) -> None:
    server = start(VAULTQ_RATE_LIMIT_PER_SECOND="1", VAULTQ_RATE_LIMIT_BURST="3")
    client = server.client(token("acme", "consumer"))
    other = server.client(token("globex", "consumer"))

    codes = [client.get("/jobs").status_code for _ in range(5)]

    assert codes[:3] == [200, 200, 200]
    limited = client.get("/jobs")
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["code"] == "TooManyRequests"
    assert other.get("/jobs").status_code == 200, "one tenant's limit is its own"


def test_only_the_operator_tenant_s_admins_may_purge(start: Callable[..., Server]) -> None:
    server = start(VAULTQ_OPERATOR_TENANT="ops", workers=0)
    producer = server.client(token("acme", "producer"))
    producer.post("/jobs", json={"payload": 1})

    assert producer.delete("/queues/demo-jobs/messages").status_code == 403
    assert (
        server.client(token("acme", "admin")).delete("/queues/demo-jobs/messages").status_code
        == 403
    )
    operator = server.client(token("ops", "admin"))
    assert operator.delete("/queues/demo-jobs/messages").json() == {"purged": 1}
    assert operator.delete("/queues/nope/messages").status_code == 404


def test_the_operator_tenant_s_consumers_receive_and_delete_messages(
    start: Callable[..., Server],
) -> None:
    server = start(VAULTQ_OPERATOR_TENANT="ops", workers=0)
    producer = server.client(token("acme", "producer"))
    sent = producer.post(
        "/queues/demo-uploads/messages", json={"body": "work", "attributes": {"n": "1"}}
    )
    consumer = server.client(token("ops", "consumer"))

    first = consumer.post("/queues/demo-uploads/messages/receive", json={"max_messages": 10})
    (message,) = first.json()["messages"]
    assert message["message_id"] == sent.json()["message_id"]
    assert message["body"] == "work"
    assert message["attributes"]["n"] == {"data_type": "String", "value": "1"}
    assert message["attributes"]["vaultq-tenant"]["value"] == "acme"
    assert consumer.post("/queues/demo-uploads/messages/receive", json={}).json() == {
        "messages": []
    }, "a received message is invisible for its visibility timeout"

    given_back = consumer.post(
        "/queues/demo-uploads/messages/visibility",
        json={
            "entries": [
                {
                    "id": "a",
                    "receipt_handle": message["receipt_handle"],
                    "visibility_timeout_seconds": 0,
                }
            ]
        },
    )
    assert given_back.json() == {"successful": ["a"], "failed": []}
    (again,) = consumer.post("/queues/demo-uploads/messages/receive", json={}).json()["messages"]
    assert again["receive_count"] == 2

    deleted = consumer.post(
        "/queues/demo-uploads/messages/delete",
        json={
            "entries": [
                {"id": "stale", "receipt_handle": message["receipt_handle"]},
                {"id": "current", "receipt_handle": again["receipt_handle"]},
            ]
        },
    ).json()
    assert deleted["successful"] == ["current"]
    assert [(f["id"], f["code"]) for f in deleted["failed"]] == [("stale", "StaleReceiptHandle")]
    stats = consumer.get("/queues/demo-uploads/stats").json()
    assert (stats["visible"], stats["in_flight"]) == (0, 0)


def test_only_the_operator_tenant_takes_messages_out_of_shared_queues(
    start: Callable[..., Server],
) -> None:
    server = start(VAULTQ_OPERATOR_TENANT="ops", workers=0)
    server.client(token("acme", "producer")).post(
        "/queues/demo-uploads/messages", json={"body": "x"}
    )
    handle = {"entries": [{"id": "a", "receipt_handle": "h"}]}

    for tenant, role in (
        ("acme", "producer"),
        ("acme", "consumer"),
        ("acme", "admin"),
        ("ops", "producer"),
    ):
        caller = server.client(token(tenant, role))
        assert caller.post("/queues/demo-uploads/messages/receive", json={}).status_code == 403
        assert caller.post("/queues/demo-uploads/messages/delete", json=handle).status_code == 403
    operator = server.client(token("ops", "consumer"))
    too_many = operator.post("/queues/demo-uploads/messages/receive", json={"max_messages": 11})
    assert too_many.status_code == 422
    assert too_many.json()["code"] == "VALIDATION_ERROR"
    assert operator.post("/queues/nope/messages/receive", json={}).status_code == 404
    stats = operator.get("/queues/demo-uploads/stats").json()
    assert stats["visible"] == 1, "refused calls took nothing"


def test_cors_allows_only_configured_origins(start: Callable[..., Server]) -> None:
    server = start(VAULTQ_CORS_ORIGINS='["https://app.example"]', workers=0)
    client = server.client()
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }

    allowed = client.options("/jobs", headers={"Origin": "https://app.example", **preflight})
    refused = client.options("/jobs", headers={"Origin": "https://evil.example", **preflight})

    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in refused.headers


def test_sigterm_stops_the_server_and_its_workers(start: Callable[..., Server]) -> None:
    server = start(workers=2)
    pid = server.process.pid
    workers = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    assert len(workers) == 2

    server.stop()

    assert server.process.returncode is not None
    assert wait_for(lambda: not any(Path(f"/proc/{w}").exists() for w in workers))
