"""The app the Lambda API tests serve: one job route to one queue. Each test makes its own
(``use``), with a unique queue name, since the moto server is shared."""

from __future__ import annotations

from vaultq.app import App

app = App("apitest")


def use(queue: str) -> App:
    """Make ``tests.deploy.api_app:app`` an app whose ``POST /jobs`` sends to ``queue``."""
    global app  # noqa: PLW0603 - load_app reads the module attribute
    app = App("apitest")
    app.queue(queue, visibility_timeout_seconds=30)
    app.accept_jobs(queue=queue)
    return app
