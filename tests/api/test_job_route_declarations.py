"""Declaring job routes: mistakes fail at import, not at the first request."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from vaultq import errors
from vaultq.app import App, FileField, QueueChoice


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str


class Lenient(BaseModel):
    name: str


def _app() -> App:
    app = App("declared")
    app.queue("work")
    app.queue("ordered.fifo", fifo=True, content_based_deduplication=True)
    app.queue("plain.fifo", fifo=True)
    app.bucket("inputs")
    return app


def test_routes_are_declared_by_path_with_their_options() -> None:
    app = _app()

    app.accept_jobs(queue="work")
    app.accept_jobs(queue="work", path="/predictions", body=Strict)
    drawing = app.accept_jobs(
        queue="work", path="/process-drawing", files=["drawing"], bucket="inputs"
    )

    assert list(app.job_routes) == ["/jobs", "/predictions", "/process-drawing"]
    assert app.job_routes["/predictions"].body is Strict
    assert drawing.files == (FileField(name="drawing"),)
    assert drawing.multipart


def test_deduplication_follows_the_queue_unless_declared() -> None:
    app = _app()

    content = app.accept_jobs(queue="ordered.fifo", path="/a")
    plain = app.accept_jobs(queue="plain.fifo", path="/b")
    chosen = app.accept_jobs(queue="work", path="/c", deduplicate=True)

    assert (content.deduplicate, plain.deduplicate, chosen.deduplicate) == (True, False, True)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"body": Lenient}, "extra='forbid'"),
        ({"body": dict}, "pydantic model"),
        ({"path": "/queues"}, "cannot be a job route"),
        ({"path": "/jobs/extra"}, "cannot be a job route"),
        ({"path": "tasks"}, "cannot be a job route"),
        ({"path": "/Tasks"}, "cannot be a job route"),
        ({"files": ["drawing"]}, "needs a bucket"),
        ({"files": ["body"], "bucket": "inputs"}, "invalid file field"),
        ({"files": ["a", "a"], "bucket": "inputs"}, "distinct names"),
        ({"bucket": "missing"}, "undeclared bucket"),
        ({"queue": "missing"}, "undeclared queue"),
        ({"message_group": "all"}, "needs a FIFO queue"),
        ({"queue": "plain.fifo", "message_group": "no spaces"}, "invalid message group"),
        ({"ttl_seconds": 10}, "ttl_seconds"),
        ({"wait_seconds": 21}, "wait_seconds"),
        ({"wait_seconds": 5, "files": ["drawing"], "bucket": "inputs"}, "wait_seconds"),
        ({"wait_seconds": 5, "failure_statuses": {"DENIED": 200}}, "failure_statuses"),
        ({"queue_by": QueueChoice(field="name", queues={"x": "missing"})}, "queue_by names"),
        ({"queue_by": QueueChoice(field="name", queues={"x": "plain.fifo"})}, "queue_by names"),
    ],
)
def test_invalid_declarations_are_refused(options: dict[str, Any], reason: str) -> None:
    app = _app()

    with pytest.raises(errors.InvalidParameterValue, match=reason):
        app.accept_jobs(**{"queue": "work", "path": "/tasks", **options})


def test_a_path_is_declared_once() -> None:
    app = _app()
    app.accept_jobs(queue="work", path="/tasks")

    with pytest.raises(errors.InvalidParameterValue, match="declared twice"):
        app.accept_jobs(queue="work", path="/tasks")


@pytest.mark.parametrize("media_type", ["PDF", "application/PDF", "application/pdf; q=1", "*/*"])
def test_file_media_types_are_exact_lower_case_types(media_type: str) -> None:
    with pytest.raises(errors.InvalidParameterValue, match="media type"):
        FileField(name="drawing", content_types=(media_type,))


def test_a_route_may_choose_its_queue_by_a_payload_field() -> None:
    app = _app()
    app.queue("work-high")

    route = app.accept_jobs(
        queue="work",
        path="/tasks",
        body=Strict,
        queue_by=QueueChoice(field="name", queues={"urgent": "work-high"}),
    )

    assert route.queues == ("work", "work-high")
    assert route.queue_for({"name": "urgent"}) == "work-high"
    assert route.queue_for({"name": "later"}) == "work"
    assert route.queue_for({"name": 3}) == route.queue_for(None) == "work"
