"""With the queue down, jobs are still accepted, and sent exactly once when it returns."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.api.conftest import token, wait_for
from vaultq.outbox.sqlite import SqliteOutbox
from vaultq.queues.sqlite import SqliteQueues

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.api.conftest import Server


# Two `vaultq up` in turn, then a worker's first handler process: 9 s at a load average of 5,
# past the suite's 120 s at a load average of 20 or more.
@pytest.mark.timeout(240)
def test_jobs_wait_in_the_outbox_until_the_queue_is_back(start: Callable[..., Server]) -> None:
    down = start(VAULTQ_QUEUE_ENABLED="false", workers=0)
    client = down.client(token())
    job_ids = [client.post("/jobs", json={"payload": i}).json()["job_id"] for i in range(3)]
    assert [client.get(f"/jobs/{j}").json()["status"] for j in job_ids] == ["queued"] * 3
    # A direct send has no job to wait for it: refused, never sent behind the switch.
    direct = client.post("/queues/demo-jobs/messages", json={"body": "x"})
    assert (direct.status_code, direct.json()["code"]) == (503, "BackendUnavailable")
    queues = SqliteQueues(down.data / "vaultq.db")
    try:
        assert queues.stats("demo-jobs").visible == 0
        down.stop()

        up = start(workers=1)
        client = up.client(token())
        wait_for(
            lambda: all(client.get(f"/jobs/{j}").json()["status"] == "succeeded" for j in job_ids)
        )
        # A job is marked succeeded just before its message is deleted: wait for the delete.
        wait_for(lambda: queues.stats("demo-jobs").in_flight == 0)
        stats = queues.stats("demo-jobs")
        assert (stats.visible, stats.in_flight) == (0, 0)
        attempts = [client.get(f"/jobs/{j}").json() for j in job_ids]
        assert all(job["progress"] == 1.0 for job in attempts)
    finally:
        queues.close()


def test_an_accepted_job_is_on_its_queue_and_out_of_the_outbox(
    start: Callable[..., Server],
) -> None:
    # Given `vaultq up` with no worker to take messages away
    server = start(workers=0)
    client = server.client(token())

    # When jobs are accepted
    accepted = [client.post("/jobs", json={"payload": i}) for i in range(3)]

    # Then each job's message waits on the app's queue, and no send is left to the pump
    assert [answer.status_code for answer in accepted] == [202] * 3
    database = server.data / "vaultq.db"
    queues = SqliteQueues(database)
    outbox = SqliteOutbox(database)
    try:
        assert queues.stats("demo-jobs").visible == 3
        assert outbox.count() == 0
    finally:
        queues.close()
        outbox.close()
