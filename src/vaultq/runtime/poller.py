"""One event source mapping: receive, batch, invoke, then settle by Lambda's rules.

Settling: successes are deleted; failures go back with a back-off (a visibility change on
the same message, so its receive count climbs and redrive works as on SQS), or to the
dead-letter queue once they have used their receives or the handler said no retry can help.
On a FIFO queue, a failure also fails every later message of its group in the batch, so no
message of a group is done before an earlier one succeeded.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vaultq import errors
from vaultq.events import batch_outcome, sqs_event
from vaultq.observe.protocol import invocation_outcome
from vaultq.queues.protocol import (
    MAX_BATCH_ENTRIES,
    MAX_RECEIVE_MESSAGES,
    DeleteEntry,
    Failure,
    VisibilityEntry,
)
from vaultq.runtime.backoff import retry_delay_seconds
from vaultq.runtime.executor import Invocation, InvocationError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from vaultq.app import HandlerSpec
    from vaultq.observe.protocol import MetricsStore
    from vaultq.queues.protocol import QueueBackend, QueueInfo, ReceivedMessage
    from vaultq.runtime.executor import HandlerProcess, InvocationResult
    from vaultq.runtime.jobs import JobTracker
    from vaultq.runtime.leases import LeaseKeeper

log = logging.getLogger(__name__)
#: How long one receive waits: short enough that a stop is noticed promptly.
POLL_WAIT_SECONDS = 2


@dataclass(slots=True)
class Settlement:
    """What became of one batch's messages."""

    deleted: list[ReceivedMessage] = field(default_factory=list)
    retried: list[ReceivedMessage] = field(default_factory=list)
    dead_lettered: list[ReceivedMessage] = field(default_factory=list)


class MappingPoller:
    """Feeds one handler from its queue, with at most ``max_concurrency`` batches at once."""

    def __init__(
        self,
        *,
        spec: HandlerSpec,
        queues: QueueBackend,
        leases: LeaseKeeper,
        processes: Sequence[HandlerProcess],
        jobs: JobTracker,
        metrics: MetricsStore | None = None,
        random_unit: Callable[[], float] = random.random,
    ) -> None:
        self.spec = spec
        self._queues = queues
        self._leases = leases
        self._jobs = jobs
        self._metrics = metrics
        self._random = random_unit
        self._queue: QueueInfo = queues.get_queue(spec.mapping.queue)
        self._idle: list[HandlerProcess] = list(processes)
        self._slots = threading.Condition()
        self._threads: list[threading.Thread] = []

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set, then wait for the batches already started."""
        while not stop.is_set():
            process = self._take_idle_process(stop)
            if process is None:
                break
            batch = self._gather(stop)
            if not batch:
                self._give_back(process)
                continue
            if stop.is_set():
                self._return_unstarted(batch)
                self._give_back(process)
                break
            process = self._prefer_warm(process)
            thread = threading.Thread(target=self._run_batch, args=(process, batch), daemon=True)
            self._threads.append(thread)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()]
        for thread in self._threads:
            thread.join()

    def _take_idle_process(self, stop: threading.Event) -> HandlerProcess | None:
        # Lease only what can start now: no receive happens without an idle process.
        with self._slots:
            while not self._idle:
                if stop.is_set():
                    return None
                self._slots.wait(timeout=0.5)
            return self._idle.pop()

    def _prefer_warm(self, process: HandlerProcess) -> HandlerProcess:
        """A batch goes to a process that already ran its init when one is idle, as Lambda
        uses provisioned environments before starting new ones."""
        if process.warm:
            return process
        with self._slots:
            for index, idle in enumerate(self._idle):
                if idle.warm:
                    self._idle[index] = process
                    return idle
        return process

    def _give_back(self, process: HandlerProcess) -> None:
        with self._slots:
            self._idle.append(process)
            self._slots.notify()

    def _gather(self, stop: threading.Event) -> list[ReceivedMessage]:
        mapping = self.spec.mapping
        visibility = self._queue.attributes.visibility_timeout_seconds
        window_ends = time.monotonic() + mapping.batching_window_seconds
        batch: list[ReceivedMessage] = []
        while len(batch) < mapping.batch_size and not stop.is_set():
            left = window_ends - time.monotonic()
            wait = POLL_WAIT_SECONDS if not batch else max(0, min(POLL_WAIT_SECONDS, int(left)))
            received = self._queues.receive(
                mapping.queue,
                max_messages=min(MAX_RECEIVE_MESSAGES, mapping.batch_size - len(batch)),
                wait_seconds=wait,
            )
            self._leases.track(mapping.queue, received, visibility)
            batch += received
            if batch and (mapping.batching_window_seconds == 0 or left <= 0):
                break
            if not received and not batch:
                return batch
        return batch

    def _run_batch(self, process: HandlerProcess, batch: list[ReceivedMessage]) -> None:
        try:
            runnable, finished = self._jobs.begin(batch)
            self._delete(finished)  # their jobs were cancelled or are already done
            if runnable:
                result = process.invoke(
                    Invocation(
                        handler=self.spec.name,
                        event=sqs_event(self.spec.mapping.queue, runnable),
                        timeout_seconds=self.spec.timeout_seconds,
                    )
                )
                # Settling hands failures back with their back-off: no heartbeat may hide them
                # again for a whole visibility timeout after that.
                self._leases.untrack(runnable)
                settlement = self.settle(runnable, result)
                self._record(runnable, result, settlement)
        except errors.VaultqError as exc:
            # The batch's messages come back by their visibility timeout: nothing is lost.
            log.warning("settling a batch of %s failed: %s", self.spec.name, exc.code)
        finally:
            self._leases.untrack(batch)
            self._give_back(process)

    def _record(
        self, batch: list[ReceivedMessage], result: InvocationResult, settlement: Settlement
    ) -> None:
        if self._metrics is None:
            return
        failed, dead = len(settlement.retried), len(settlement.dead_lettered)
        reason = None if result.error is None else result.error.reason
        outcome = invocation_outcome(
            error_reason=reason, messages=len(batch), failed=failed, dead_lettered=dead
        )
        try:
            self._metrics.record_invocation(
                self.spec.name,
                outcome=outcome,
                duration_seconds=result.duration_seconds,
                messages=len(batch),
                failed=failed,
                dead_lettered=dead,
            )
        except errors.VaultqError as exc:
            log.warning("recording metrics of %s failed: %s", self.spec.name, exc.code)

    def settle(self, batch: list[ReceivedMessage], result: InvocationResult) -> Settlement:
        failures = self._failures(batch, result)
        settlement = Settlement(deleted=[m for m in batch if m.message_id not in failures])
        # Each job moves before its message does: a crash in between then leaves a message
        # that finds its job finished (deleted without running) or queued (run again), never
        # a job marked processing whose message is gone; and no other poller can receive a
        # retried message while its job still says processing.
        self._jobs.succeeded(settlement.deleted)
        self._delete(settlement.deleted)
        self._give_back_failed(batch, failures, settlement)
        log.info(
            "%s: batch of %d, %d deleted, %d retried, %d dead-lettered in %.3f s",
            self.spec.name,
            len(batch),
            len(settlement.deleted),
            len(settlement.retried),
            len(settlement.dead_lettered),
            result.duration_seconds,
        )
        return settlement

    def _failures(
        self, batch: list[ReceivedMessage], result: InvocationResult
    ) -> dict[str, InvocationError]:
        ids = [m.message_id for m in batch]
        error = result.error
        if error is None:
            outcome = batch_outcome(
                result.response,
                ids,
                report_batch_item_failures=self.spec.mapping.report_batch_item_failures,
            )
            error = InvocationError(reason="HANDLER_ERROR", error="the handler reported failure")
            if outcome.batch_error is not None:
                error = InvocationError(
                    reason="HANDLER_ERROR", error=f"malformed response: {outcome.batch_error}"
                )
            failures = dict.fromkeys(outcome.failed_message_ids, error)
        else:
            failures = dict.fromkeys(error.message_ids or ids, error)
        if self._queue.attributes.fifo:
            _fail_rest_of_groups(batch, failures)
        return failures

    def _delete(self, messages: list[ReceivedMessage]) -> None:
        for start in range(0, len(messages), MAX_BATCH_ENTRIES):
            chunk = messages[start : start + MAX_BATCH_ENTRIES]
            result = self._queues.delete_batch(
                self.spec.mapping.queue,
                [
                    DeleteEntry(id=str(i), receipt_handle=m.receipt_handle)
                    for i, m in enumerate(chunk)
                ],
            )
            for failed in result.failed:
                log.warning("delete of a handled message failed: %s", failed.code)

    def _give_back_failed(
        self,
        batch: list[ReceivedMessage],
        failures: dict[str, InvocationError],
        settlement: Settlement,
    ) -> None:
        policy = self._queue.attributes.redrive_policy
        retry: list[VisibilityEntry] = []
        for message in batch:
            error = failures.get(message.message_id)
            if error is None:
                continue
            failure = Failure(reason=error.reason, error=error.error)
            final = not error.retryable or (
                policy is not None and message.receive_count >= policy.max_receive_count
            )
            if final and policy is not None:
                self._dead_letter(message, failure)
                settlement.dead_lettered.append(message)
                continue
            delay = retry_delay_seconds(
                self.spec.mapping.retry, message.receive_count, random=self._random
            )
            retry.append(
                VisibilityEntry(
                    id=str(len(retry)),
                    receipt_handle=message.receipt_handle,
                    visibility_timeout_seconds=delay,
                    failure=failure,
                )
            )
            settlement.retried.append(message)
        self._jobs.retrying(settlement.retried)
        for start in range(0, len(retry), MAX_BATCH_ENTRIES):
            self._queues.change_visibility_batch(
                self.spec.mapping.queue, retry[start : start + MAX_BATCH_ENTRIES]
            )

    def _dead_letter(self, message: ReceivedMessage, failure: Failure) -> None:
        try:
            self._queues.dead_letter(
                self.spec.mapping.queue, message.receipt_handle, failure=failure
            )
        except (errors.ReceiptHandleIsInvalid, errors.MessageNotInflight) as exc:
            log.warning("dead-lettering a message failed: %s", exc.code)
            return
        self._jobs.dead_lettered(message, failure)

    def _return_unstarted(self, batch: list[ReceivedMessage]) -> None:
        """Give back a batch that was received but never started: visible again now."""
        self._leases.untrack(batch)
        for start in range(0, len(batch), MAX_BATCH_ENTRIES):
            self._queues.change_visibility_batch(
                self.spec.mapping.queue,
                [
                    VisibilityEntry(
                        id=str(i), receipt_handle=m.receipt_handle, visibility_timeout_seconds=0
                    )
                    for i, m in enumerate(batch[start : start + MAX_BATCH_ENTRIES])
                ],
            )


def _fail_rest_of_groups(
    batch: list[ReceivedMessage], failures: dict[str, InvocationError]
) -> None:
    failed_groups: dict[str | None, InvocationError] = {}
    for message in batch:
        error = failures.get(message.message_id)
        if error is not None:
            failed_groups.setdefault(message.group_id, error)
        elif message.group_id in failed_groups:
            failures[message.message_id] = InvocationError(
                reason=failed_groups[message.group_id].reason,
                error="an earlier message of its group failed",
            )
