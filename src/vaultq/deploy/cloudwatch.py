"""An app's alarms as CloudWatch alarms, each metric read as ``vaultq.observe.alarms`` reads it.

- ``dlq_depth(queue)``: visible + in-flight + delayed messages of the dead-letter queue (SQS
  publishes the three apart; metric math adds them);
- ``oldest_message_age_seconds(queue)``: ``ApproximateAgeOfOldestMessage``;
- ``handler_errors(handler)``: Lambda's ``Errors`` (raised, crashed or timed out) of the
  handler's function, or the sum over every function of the app;
- ``api_errors()`` has no alarm: the template deploys no HTTP API.

Every alarm notifies the template's SNS topic on ALARM and OK. Webhooks are not in the
template: their URLs often hold a token; subscribe them to the topic instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vaultq import errors
from vaultq.observe.alarms import Alarm, Comparison, MetricKind, MissingData, dlq_depth

if TYPE_CHECKING:
    from vaultq.app import App

#: A metric math alarm reads at most 10 metrics.
MAX_METRICS = 10
_COMPARISON = {
    Comparison.GREATER_OR_EQUAL: "GreaterThanOrEqualToThreshold",
    Comparison.GREATER: "GreaterThanThreshold",
    Comparison.LESS: "LessThanThreshold",
    Comparison.LESS_OR_EQUAL: "LessThanOrEqualToThreshold",
}
_MISSING = {
    MissingData.MISSING: "missing",
    MissingData.BREACHING: "breaching",
    MissingData.NOT_BREACHING: "notBreaching",
    MissingData.IGNORE: "ignore",
}
_DEPTH = (
    ("visible", "ApproximateNumberOfMessagesVisible"),
    ("inflight", "ApproximateNumberOfMessagesNotVisible"),
    ("delayed", "ApproximateNumberOfMessagesDelayed"),
)


def app_alarms(app: App) -> tuple[list[Alarm], list[str]]:
    """The app's alarms that CloudWatch can evaluate, plus a ``dlq_depth >= 1`` alarm for
    every dead-letter queue no declared alarm watches; and notes on what is left out."""
    alarms: list[Alarm] = []
    notes: list[str] = []
    for alarm in app.alarms.values():
        if alarm.metric.kind is MetricKind.API_ERRORS:
            notes.append(f"alarm {alarm.name}: left out, the template deploys no HTTP API")
            continue
        if alarm.webhooks:
            notes.append(f"alarm {alarm.name}: subscribe its webhooks to the AlarmTopic")
        alarms.append(alarm)
    watched = {a.metric.queue for a in alarms if a.metric.kind is MetricKind.DLQ_DEPTH}
    for spec in app.queues.values():
        if spec.dead_letter_queue is not None and spec.name not in watched:
            alarms.append(
                Alarm(
                    name=f"{spec.dead_letter_queue}-not-empty",
                    metric=dlq_depth(spec.name),
                    threshold=1,
                    # SQS stops publishing an idle queue's metrics after some hours.
                    missing_data=MissingData.NOT_BREACHING,
                    description=f"Messages reached the dead-letter queue of {spec.name}.",
                )
            )
    return alarms, notes


def alarm_properties(alarm: Alarm, *, app: App, topic: dict[str, Any]) -> dict[str, Any]:
    """The ``AWS::CloudWatch::Alarm`` properties of ``alarm``."""
    properties: dict[str, Any] = {
        "AlarmName": f"{app.name}-{alarm.name}",
        "AlarmDescription": alarm.description or f"vaultq alarm {alarm.name}: {alarm.metric}",
        "Metrics": _metrics(alarm, app),
        "EvaluationPeriods": 1,
        "Threshold": alarm.threshold,
        "ComparisonOperator": _COMPARISON[alarm.comparison],
        "TreatMissingData": _MISSING[alarm.missing_data],
        "AlarmActions": [topic],
        "OKActions": [topic],
    }
    return properties


def _metrics(alarm: Alarm, app: App) -> list[dict[str, Any]]:
    metric, period = alarm.metric, alarm.period_seconds
    if metric.kind is MetricKind.DLQ_DEPTH:
        dlq = app.queues[metric.queue or ""].dead_letter_queue or ""
        reads = [_read(id_, _sqs(name, dlq), stat="Maximum", period=period) for id_, name in _DEPTH]
        return [*reads, _sum("depth", [id_ for id_, _ in _DEPTH], str(metric))]
    if metric.kind is MetricKind.OLDEST_MESSAGE_AGE_SECONDS:
        age = _sqs("ApproximateAgeOfOldestMessage", metric.queue or "")
        return [_read("age", age, stat="Maximum", period=period) | {"ReturnData": True}]
    handlers = [metric.handler] if metric.handler else list(app.handlers)
    if not 1 <= len(handlers) < MAX_METRICS:
        raise errors.InvalidParameterValue(
            f"alarm {alarm.name}: CloudWatch sums the errors of 1 to {MAX_METRICS - 1} functions"
        )
    reads = [
        _read(f"errors{i}", _function_errors(f"{app.name}-{h}"), stat="Sum", period=period)
        for i, h in enumerate(handlers)
    ]
    if len(reads) == 1:
        return [reads[0] | {"ReturnData": True}]
    return [*reads, _sum("errors", [r["Id"] for r in reads], str(metric))]


def _sqs(name: str, queue: str) -> dict[str, Any]:
    return {
        "Namespace": "AWS/SQS",
        "MetricName": name,
        "Dimensions": [{"Name": "QueueName", "Value": queue}],
    }


def _function_errors(function: str) -> dict[str, Any]:
    return {
        "Namespace": "AWS/Lambda",
        "MetricName": "Errors",
        "Dimensions": [{"Name": "FunctionName", "Value": function}],
    }


def _read(id_: str, metric: dict[str, Any], *, stat: str, period: int) -> dict[str, Any]:
    return {
        "Id": id_,
        "MetricStat": {"Metric": metric, "Period": period, "Stat": stat},
        "ReturnData": False,
    }


def _sum(id_: str, ids: list[str], label: str) -> dict[str, Any]:
    return {"Id": id_, "Expression": " + ".join(ids), "Label": label, "ReturnData": True}
