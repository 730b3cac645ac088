"""The Lambda entry point: AWS invokes a vaultq handler the way a vaultq worker does.

Every function of a deployed app has the same handler, ``vaultq.deploy.lambda_handler``; the
template names the app and the handler in ``VAULTQ_APP`` (``module:attribute``) and
``VAULTQ_HANDLER``. The app is imported once per execution environment. Around the handler
the entry point does what the worker does around it, so a handler behaves the same on both:

- a handler that raises, or answers with a malformed response, makes the entry point raise,
  and Lambda retries the whole batch; the error Lambda logs is redacted (``InvocationFailed``);
- a malformed event raises;
- on a FIFO queue, a failed message fails the later messages of its group in the batch;
- messages naming a job keep the job's status in step (``processing``, ``succeeded``,
  ``queued`` for a retry, ``dead_lettered`` after the last receive), and a message whose job
  was cancelled or has finished is not run, only acknowledged;
- the context carries ``jobs``, the job table of ``VAULTQ_URL``, opened on first use, so
  ``job_of(record, context)`` works and a function that never needs it never opens it.

Lambda, not the entry point, deletes messages and moves them to the dead-letter queue, so two
worker behaviours differ: a ``NonRetryableError`` fails its records (it cannot dead-letter
them at once) and a ``RetryPolicy`` does not apply (a failed message returns after the
queue's visibility timeout).
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from typing import TYPE_CHECKING, Any

from vaultq import errors, wiring
from vaultq.app import load_app
from vaultq.events import batch_outcome
from vaultq.privacy.redact import redact
from vaultq.queues.protocol import Failure, FailureReason, MessageAttribute, ReceivedMessage
from vaultq.runtime.failures import NonRetryableError, describe
from vaultq.runtime.jobs import JOB_ATTRIBUTE, JobTracker

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from vaultq.app import App
    from vaultq.jobs.protocol import JobStore

APP_VARIABLE = "VAULTQ_APP"
HANDLER_VARIABLE = "VAULTQ_HANDLER"
#: What a template names as every function's ``Handler``.
ENTRY_POINT = "vaultq.deploy.lambda_handler"


def lambda_handler(event: Any, context: Any) -> Any:
    """Run the handler ``VAULTQ_HANDLER`` of the app ``VAULTQ_APP`` on a Lambda event."""
    return _entry(_variable(APP_VARIABLE), _variable(HANDLER_VARIABLE))(event, context)


@functools.cache
def _entry(app_path: str, handler: str) -> LambdaEntry:
    """Built once per execution environment, running the handler's ``init`` (a failure is
    not cached: the next event tries again, as Lambda retries a failed init)."""
    entry = LambdaEntry(load_app(app_path), handler, job_store_factory=configured_job_store)
    if entry.spec.init is not None:
        try:
            entry.spec.init()
        except Exception as exc:
            raise InvocationFailed(f"init failed: {_failure_of(exc).error}") from None
    return entry


def _variable(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise errors.InvalidSettings(f"{name} is not set: the function's template sets it")
    return value


def configured_job_store() -> JobStore | None:
    """The job table ``VAULTQ_URL`` names; None when the deployment sets no URL."""
    url = os.environ.get("VAULTQ_URL")
    return wiring.open_jobs(url) if url else None


class InvocationFailed(Exception):
    """Raised to Lambda in place of the handler's exception, so that the whole batch is
    retried: its text is the exception's type and redacted message, and it carries no
    traceback, so CloudWatch Logs hold no more than the worker's logs would."""


class LambdaEntry:
    """One handler of an app, callable as a Lambda function's handler."""

    def __init__(
        self,
        app: App,
        handler: str,
        *,
        job_store_factory: Callable[[], JobStore | None] | None = None,
    ) -> None:
        spec = app.handlers.get(handler)
        if spec is None:
            raise errors.InvalidParameterValue(f"app {app.name!r} has no handler {handler!r}")
        self.spec = spec
        self._queue = app.queues[spec.mapping.queue]
        self._jobs = _JobTable(job_store_factory)

    def __call__(self, event: Any, context: Any) -> Any:
        records = _records_of(event)
        messages = [_message_of(record) for record in records]
        tracker = JobTracker(self._jobs.open() if any(map(_names_job, messages)) else None)
        run, _finished = tracker.begin(messages)  # finished jobs' messages are acknowledged
        ran = {m.message_id for m in run}
        failures: dict[str, Failure] = {}
        response = None
        if run:
            event = {**event, "Records": [r for r in records if r["messageId"] in ran]}
            failures, response = self._invoke(event, _Context(context, self._jobs), tracker, run)
            self._settle(tracker, run, failures)
        if not self.spec.mapping.report_batch_item_failures:
            return response
        return {
            "batchItemFailures": [
                {"itemIdentifier": m.message_id} for m in run if m.message_id in failures
            ]
        }

    def _invoke(
        self, event: dict[str, Any], context: Any, tracker: JobTracker, run: list[ReceivedMessage]
    ) -> tuple[dict[str, Failure], Any]:
        """The handler's response and the failures it means; raises when Lambda must retry
        the whole batch (the handler raised, or answered with a malformed response)."""
        ids = [m.message_id for m in run]
        report = self.spec.mapping.report_batch_item_failures
        try:
            response = self.spec.function(event, context)
        except Exception as exc:  # a handler's failure fails its records, whatever it is
            failure = _failure_of(exc)
            if isinstance(exc, NonRetryableError) and report and exc.message_ids:
                return self._with_groups(run, dict.fromkeys(exc.message_ids, failure)), None
            self._settle(tracker, run, dict.fromkeys(ids, failure))
            raise InvocationFailed(failure.error) from None
        outcome = batch_outcome(response, ids, report_batch_item_failures=report)
        if outcome.batch_error is not None:
            failure = Failure(reason=FailureReason.HANDLER_ERROR, error=outcome.batch_error)
            self._settle(tracker, run, dict.fromkeys(ids, failure))
            raise errors.InvalidParameterValue(f"malformed response: {outcome.batch_error}")
        reported = Failure(reason=FailureReason.HANDLER_ERROR, error="the handler reported failure")
        failures = dict.fromkeys(outcome.failed_message_ids, reported)
        return self._with_groups(run, failures), response

    def _with_groups(
        self, run: list[ReceivedMessage], failures: dict[str, Failure]
    ) -> dict[str, Failure]:
        """On FIFO, a failure also fails the later messages of its group, as in the worker:
        Lambda would otherwise delete them and break the group's order."""
        if not self._queue.attributes.fifo:
            return failures
        failed_groups: dict[str | None, Failure] = {}
        for message in run:
            failure = failures.get(message.message_id)
            if failure is not None:
                failed_groups.setdefault(message.group_id, failure)
            elif message.group_id in failed_groups:
                failures[message.message_id] = Failure(
                    reason=failed_groups[message.group_id].reason,
                    error="an earlier message of its group failed",
                )
        return failures

    def _settle(
        self, tracker: JobTracker, run: list[ReceivedMessage], failures: Mapping[str, Failure]
    ) -> None:
        tracker.succeeded(m for m in run if m.message_id not in failures)
        dead_letter = self._queue.dead_letter
        last_receive = dead_letter.max_receive_count if dead_letter else None
        retried = []
        for message in run:
            failure = failures.get(message.message_id)
            if failure is None:
                continue
            if last_receive is not None and message.receive_count >= last_receive:
                # SQS moves it to the dead-letter queue instead of delivering it again.
                tracker.dead_lettered(message, failure)
            else:
                retried.append(message)
        tracker.retrying(retried)


class _JobTable:
    """The job table, opened at most once per execution environment, on first use."""

    def __init__(self, factory: Callable[[], JobStore | None] | None) -> None:
        self._factory = factory
        self._store: JobStore | None = None
        self._opened = False

    def open(self) -> JobStore | None:
        if not self._opened and self._factory is not None:
            self._store = self._factory()
        self._opened = True
        return self._store


class _Context:
    """AWS's context object with ``jobs`` added, which ``job_of`` reads."""

    def __init__(self, aws_context: Any, jobs: _JobTable) -> None:
        self._aws_context = aws_context
        self._jobs = jobs

    @property
    def jobs(self) -> JobStore | None:
        return self._jobs.open()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._aws_context, name)


def _failure_of(exc: Exception) -> Failure:
    reason = str(getattr(exc, "failure_reason", FailureReason.HANDLER_ERROR))
    return Failure(reason=reason, error=redact(describe(exc)))


def _names_job(message: ReceivedMessage) -> bool:
    return JOB_ATTRIBUTE in message.attributes


def _records_of(event: Any) -> list[dict[str, Any]]:
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not records:
        raise errors.InvalidParameterValue("not a Lambda SQS event: no Records")
    for record in records:
        if not isinstance(record, dict) or record.get("eventSource") != "aws:sqs":
            raise errors.InvalidParameterValue("not a Lambda SQS event: a record is not aws:sqs")
    return records


def _message_of(record: dict[str, Any]) -> ReceivedMessage:
    """The message a Lambda SQS record carries: the inverse of ``events.sqs_event``."""
    try:
        attributes = record["attributes"]
        return ReceivedMessage(
            message_id=_text(record["messageId"]),
            receipt_handle=_text(record["receiptHandle"]),
            body=_text(record["body"]),
            md5_of_body=_text(record.get("md5OfBody", "")),
            attributes=_message_attributes(record.get("messageAttributes") or {}),
            sent_at_ms=int(attributes["SentTimestamp"]),
            receive_count=int(attributes["ApproximateReceiveCount"]),
            first_received_at_ms=int(attributes.get("ApproximateFirstReceiveTimestamp", 0)),
            group_id=attributes.get("MessageGroupId"),
            deduplication_id=attributes.get("MessageDeduplicationId"),
            sequence_number=attributes.get("SequenceNumber"),
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise errors.InvalidParameterValue(f"malformed SQS record: {exc!r}") from None


def _message_attributes(shaped: Mapping[str, Any]) -> dict[str, MessageAttribute]:
    return {name: _message_attribute(value) for name, value in shaped.items()}


def _message_attribute(shaped: Mapping[str, Any]) -> MessageAttribute:
    binary = shaped.get("binaryValue")
    value = base64.b64decode(binary, validate=True) if binary is not None else shaped["stringValue"]
    return MessageAttribute(data_type=shaped["dataType"], value=value)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {type(value).__name__}")
    return value


# Lambda imports the handler's module in its init phase, which provisioned concurrency runs
# ahead of any event: the entry and the handler's init run then, not in the first event.
if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and os.environ.get(HANDLER_VARIABLE):
    _entry(_variable(APP_VARIABLE), _variable(HANDLER_VARIABLE))
