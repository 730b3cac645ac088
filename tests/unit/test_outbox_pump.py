"""The API's outbox pump: one send its queue refuses never holds up the others."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from vaultq.api.services import ApiServices
from vaultq.app import App
from vaultq.jobs.sqlite import SqliteJobs
from vaultq.outbox.protocol import PendingSend
from vaultq.outbox.sqlite import SqliteOutbox
from vaultq.queues.sqlite import SqliteQueues

if TYPE_CHECKING:
    from pathlib import Path


def pending(send_id: str, queue: str) -> PendingSend:
    return PendingSend(
        id=send_id, queue=queue, body="{}", attributes={}, group_id=None, deduplication_id=None
    )


def test_a_refused_send_stays_and_the_sends_behind_it_go(tmp_path: Path) -> None:
    db = tmp_path / "vaultq.db"
    queues, outbox, jobs = SqliteQueues(db), SqliteOutbox(db), SqliteJobs(db)
    queues.create_queue("work")
    # The oldest send names a queue that no longer exists: the pump meets it first.
    outbox.add(pending("refused", "gone"), claim_seconds=0)
    outbox.add(pending("fine", "work"), claim_seconds=0)
    services = ApiServices(
        app=App("pump"),
        queues=queues,
        jobs=jobs,
        outbox=outbox,
        verifier=None,  # type: ignore[arg-type]
    )
    services.start_pump()
    try:
        deadline = time.monotonic() + 30  # ends as soon as the send is there
        while queues.stats("work").visible == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        services.stop_pump()

        assert queues.stats("work").visible == 1
        assert outbox.count() == 1, "the refused send stays for a later try"
    finally:
        services.stop_pump()
        for store in (queues, outbox, jobs):
            store.close()
