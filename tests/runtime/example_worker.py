"""The private-embeddings example provisioned in a store, with one worker running its upload
handler, as the runtime tests of the example start it."""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import TYPE_CHECKING

from examples.private_embeddings.app import app

from vaultq import wiring
from vaultq.queues.sqlite import SqliteQueues
from vaultq.runtime.worker import Worker

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from vaultq.blobs.protocol import BlobStore


@contextlib.contextmanager
def upload_worker(
    url: str, database: Path, *, app_path: str
) -> Iterator[tuple[SqliteQueues, BlobStore]]:
    """The store at ``url`` (whose file is ``database``) provisioned for the example, and a
    worker of ``embed_uploads`` whose handler processes import ``app_path`` (a test module
    re-exporting the app, so that what the test set up there reaches them too)."""
    queues = SqliteQueues(database)
    blobs = wiring.open_blobs(url, notifier=app.notifier(queues))
    app.provision(queues, blobs)
    worker = Worker(
        app,
        app_path=app_path,
        queues=queues,
        handlers=["embed_uploads"],
        job_store_factory=functools.partial(wiring.open_jobs, url),
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield queues, blobs
    finally:
        worker.stop()
        thread.join(timeout=60)
        blobs.close()
        queues.close()
