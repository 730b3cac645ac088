"""The runtime's test handlers on queues sized for SQS as moto serves it.

SQS counts visibility in whole seconds, so these queues hide a received message for 2 s
rather than 30, and the slow handler times out after 1 s. One moto server serves every test
of a process, so queue names carry a prefix: a test builds its own ``build_app(prefix)``
and hands it to its worker. Handler processes import ``app`` below instead; its queue names
do not matter to them, since a handler process looks handlers up by name only. ``vaultq
worker tests.runtime.apps.aws_app:app`` reads the prefix from ``VAULTQ_TEST_AWS_PREFIX``.
"""

from __future__ import annotations

import os

from tests.runtime.apps import behaviours, jobs_app
from vaultq.app import App, DeadLetterQueue

PREFIX_ENV = "VAULTQ_TEST_AWS_PREFIX"
NO_WAIT = behaviours.NO_WAIT


def build_app(prefix: str) -> App:
    """One queue per handler, each named ``<prefix>-<handler>``."""
    app = App("aws")

    def queue(handler: str, *, max_receive_count: int | None = None, fifo: bool = False) -> str:
        dead_letter = (
            None
            if max_receive_count is None
            else DeadLetterQueue(max_receive_count=max_receive_count)
        )
        suffix = ".fifo" if fifo else ""
        return app.queue(
            f"{prefix}-{handler}{suffix}",
            fifo=fifo,
            content_based_deduplication=fifo,
            visibility_timeout_seconds=2,
            dead_letter=dead_letter,
        )

    app.handler(
        queue=queue("work", max_receive_count=3),
        report_batch_item_failures=True,
        retry=NO_WAIT,
    )(behaviours.work)
    app.handler(queue=queue("steady", max_receive_count=3), timeout_seconds=5, retry=NO_WAIT)(
        behaviours.steady
    )
    app.handler(
        queue=queue("ordered", max_receive_count=5, fifo=True),
        report_batch_item_failures=True,
        retry=NO_WAIT,
        max_concurrency=2,
    )(behaviours.ordered)
    app.handler(
        queue=queue("slow", max_receive_count=2),
        timeout_seconds=1,
        max_concurrency=1,
        retry=NO_WAIT,
    )(behaviours.slow)
    # Two processes: were a lease to lapse, the idle one would receive the message again.
    app.handler(queue=queue("heartbeat"), timeout_seconds=10, max_concurrency=2)(
        behaviours.heartbeat
    )
    # Each stage is a DynamoDB write through moto: room for three on a loaded machine, where
    # 2 s timed the first attempt out (no test here wants the pipeline to time out).
    app.handler(
        queue=queue("pipeline", max_receive_count=2),
        timeout_seconds=20,
        batch_size=1,
        retry=NO_WAIT,
    )(jobs_app.pipeline)
    return app


def queue_of(app: App, handler: str) -> str:
    return app.handlers[handler].mapping.queue


app = build_app(os.environ.get(PREFIX_ENV, "vaultq-test"))
