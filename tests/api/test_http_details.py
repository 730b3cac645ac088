"""HTTP details a client library relies on: Allow on 405, ISO times, the documented bodies."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.api.conftest import token

if TYPE_CHECKING:
    from tests.api.conftest import Server


def test_method_not_allowed_names_every_method_the_path_serves(server: Server) -> None:
    client = server.client(token())

    collection = client.patch("/jobs")
    item = client.put("/jobs/" + "0" * 32)

    assert (collection.status_code, collection.json()["code"]) == (405, "METHOD_NOT_ALLOWED")
    assert collection.headers["allow"] == "GET, POST"
    assert item.headers["allow"] == "DELETE, GET"


def test_job_listings_take_iso_8601_times_only(server: Server) -> None:
    client = server.client(token("acme", "consumer"))

    assert client.get("/jobs", params={"to": "2026-11-23T19:00:00Z"}).status_code == 200
    for not_a_time in ("0.5", "1700000000", "yesterday"):
        refused = client.get("/jobs", params={"to": not_a_time})
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["location"] == "query.to"


def test_the_upload_body_is_documented(server: Server) -> None:
    schema = server.client().get("/openapi.json").json()

    body = schema["paths"]["/blobs/{bucket}/{key}"]["put"]["requestBody"]

    assert body["required"] is True
    assert body["content"]["*/*"]["schema"] == {"type": "string", "format": "binary"}
