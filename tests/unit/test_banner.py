"""What `vaultq up` prints tells how to submit to the app it serves."""

from __future__ import annotations

from vaultq.api.server import _banner
from vaultq.app import load_app


def banner(app_path: str) -> str:
    return _banner(load_app(app_path), app_path, "127.0.0.1", 8000, 1, development=False)


def test_the_demo_banner_shows_a_submission_to_post_jobs() -> None:
    text = banner("vaultq.demo:app")

    assert '-d \'{"payload": {"hello": "world"}}\' http://127.0.0.1:8000/jobs' in text
    assert "http://127.0.0.1:8000/jobs/JOB_ID" in text


def test_an_app_with_its_own_routes_names_them_and_not_post_jobs() -> None:
    text = banner("examples.tasks.app:app")

    assert "POST http://127.0.0.1:8000/tasks" in text
    assert '{"payload"' not in text
