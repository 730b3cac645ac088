"""A put on a bucket with a notification reaches the handler as an S3 event in an SQS record."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from tests.runtime.apps.uploads_app import app
from tests.runtime.conftest import Effects, wait_for
from vaultq.blobs.local import LocalBlobs
from vaultq.queues.sqlite import SqliteQueues
from vaultq.runtime.worker import Worker

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_matching_uploads_reach_the_handler_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULTQ_TEST_EFFECTS", str(tmp_path / "effects.db"))
    queues = SqliteQueues(tmp_path / "vaultq.db")
    blobs = LocalBlobs(tmp_path / "blobs", signing_secret=b"s" * 32, notifier=app.notifier(queues))
    app.provision(queues, blobs)
    worker = Worker(app, app_path="tests.runtime.apps.uploads_app:app", queues=queues)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    effects = Effects(tmp_path / "effects.db")

    blobs.put("inbox", "in/a b+c.json", b"{}", content_type="application/json")
    blobs.put("inbox", "in/notes.txt", b"ignored: wrong suffix")
    blobs.put("inbox", "out/x.json", b"ignored: wrong prefix")
    blobs.put("inbox", "in/second.json", b"[]")

    try:
        wait_for(lambda: len(effects.items("uploads")) == 2)
        wait_for(lambda: queues.stats("uploads").in_flight == 0)
    finally:
        worker.stop()
        thread.join(timeout=30)
        blobs.close()
        queues.close()
    assert sorted(effects.items("uploads")) == [
        "ObjectCreated:Put in/a b+c.json",
        "ObjectCreated:Put in/second.json",
    ]
