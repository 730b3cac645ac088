"""The ordered task API: tasks are validated, queued in order, and processed in that order.

``POST /tasks`` takes ``{"title", "description", "priority", "due_date"?}`` (see
``examples.tasks.models.Task``), stores a job and sends its message to the FIFO queue
``tasks.fifo``, in one message group: every task is processed after the tasks posted before
it. The same task posted again within five minutes answers ``200`` with the first job.
``process_tasks`` takes batches of up to 10 and processes them in order; at the first task
that fails it stops, and reports that task and every later one as failed, so the next batch
starts at the failed task. Run it with::

    vaultq up examples.tasks.app:app
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from examples.tasks.models import Task, read_task
from vaultq.app import App, DeadLetterQueue
from vaultq.observe.alarms import api_errors, dlq_depth, handler_errors
from vaultq.runtime.jobs import job_of

if TYPE_CHECKING:
    from collections.abc import Mapping

QUEUE = "tasks.fifo"
GROUP = "tasks"
PROCESSOR = "process_tasks"
_FOUR_DAYS_SECONDS = 4 * 24 * 60 * 60
_FIVE_MINUTES_SECONDS = 5 * 60
log = logging.getLogger(__name__)

app = App("tasks")
app.queue(
    QUEUE,
    fifo=True,
    content_based_deduplication=True,
    visibility_timeout_seconds=300,
    message_retention_seconds=_FOUR_DAYS_SECONDS,
    dead_letter=DeadLetterQueue(max_receive_count=3),
)
app.accept_jobs(
    queue=QUEUE,
    path="/tasks",
    body=Task,
    message_group=GROUP,
    # Duplicates are compared after sanitising: " Buy milk" and "Buy milk" are one task.
    deduplicate=True,
    estimated_time_seconds=5,
)


class SimulatedFailure(Exception):
    """The example's way to make a task fail on purpose (see ``_simulate_failure``)."""


# One message group runs one batch at a time: a second concurrent slot could only wait.
@app.handler(queue=QUEUE, batch_size=10, report_batch_item_failures=True, max_concurrency=1)
def process_tasks(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """Process a batch's tasks in order; report the first failed one and all after it."""
    records = event["Records"]
    for index, record in enumerate(records):
        try:
            _process(record, context)
        # Any failure of one task, a poison message included, is that task's failure: the
        # tasks before it are done and must not be run again with it.
        except Exception as exc:
            log.warning(
                "task message %s failed (%s); %d later task(s) left for the next batch",
                record["messageId"],
                type(exc).__name__,
                len(records) - index - 1,
            )
            return {
                "batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records[index:]]
            }
    return {"batchItemFailures": []}


def _process(record: Mapping[str, Any], context: Any) -> None:
    job = job_of(record, context)
    task = read_task(json.loads(record["body"])["payload"])
    attempt = int(record["attributes"]["ApproximateReceiveCount"])
    _simulate_failure(task, attempt)
    job.succeed(outcome(task, attempt=attempt, now=datetime.now(UTC)))


def _simulate_failure(task: Task, attempt: int) -> None:
    """An example feature, to show the ordering: a task whose title starts with ``FAIL``
    fails every attempt (it ends in the dead-letter queue); one whose title starts with
    ``FLAKY`` fails its first attempt only."""
    if task.title.startswith("FAIL") or (task.title.startswith("FLAKY") and attempt == 1):
        raise SimulatedFailure(f"the title asks attempt {attempt} to fail")


def outcome(task: Task, *, attempt: int, now: datetime) -> dict[str, Any]:
    """What processing a task produces: the task, a one-line summary, whether it is overdue
    (a due date is overdue once its UTC day has passed) and which attempt processed it."""
    due = task.due_date
    if due is None:
        overdue = None
    elif isinstance(due, datetime):
        overdue = due < now
    else:
        overdue = due < now.date()
    summary = f"[{task.priority.value}] {task.title}"
    if due is not None:
        summary += f" (due {_day(due)})"
    return {
        **task.model_dump(mode="json"),
        "summary": summary,
        "overdue": overdue,
        "description_words": len(task.description.split()),
        "attempt": attempt,
    }


def _day(due: date) -> str:
    return (due.date() if isinstance(due, datetime) else due).isoformat()


# The seed's alarms. The processor's errors are invocations that crashed, timed out, or
# failed every task they were given (a batch whose first task fails: see
# vaultq.observe.protocol.invocation_outcome); a task that keeps failing reaches the DLQ.
app.alarm(
    "tasks-api-errors",
    metric=api_errors(),
    threshold=5,
    comparison=">",
    period_seconds=_FIVE_MINUTES_SECONDS,
    description="More than 5 API answers with a 5xx status in 5 minutes.",
)
app.alarm(
    "tasks-processor-errors",
    metric=handler_errors(PROCESSOR),
    threshold=10,
    comparison=">",
    period_seconds=_FIVE_MINUTES_SECONDS,
    description="More than 10 failed invocations of the task processor in 5 minutes.",
)
app.alarm(
    "tasks-dead-letters",
    metric=dlq_depth(QUEUE),
    threshold=1,
    comparison=">=",
    description="A task failed every attempt and waits in tasks-dlq.fifo.",
)
