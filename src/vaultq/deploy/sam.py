"""An App as an AWS SAM template: its queues, functions, buckets, job table and alarms.

The template is JSON, which is also YAML, so ``sam`` and CloudFormation read it as
``template.yaml`` and writing it needs no YAML library. Names are the app's (queues and
buckets are addressed by name, as on every backend); functions are ``<app>-<handler>``.

Where AWS cannot do what the app declares, the template does the nearest safe thing and says
so in ``SamTemplate.notes``:

- a queue's visibility timeout is raised to 6x its function's timeout plus the batching
  window (AWS's advice: Lambda retries throttled invocations within that time, and the
  vaultq worker's lease heartbeat, which lets a shorter timeout work locally, does not
  exist on Lambda);
- ``max_concurrency=1`` becomes ``MaximumConcurrency: 2`` (Lambda's minimum) with one
  reserved concurrent execution, so one batch at a time still holds;
- a fractional batching window is rounded up to whole seconds.

What AWS cannot do at all is refused: a FIFO handler with a batching window or batches over
10, and names that would not be unique as CloudFormation logical ids or Lambda function names.

Every function has its own role with inline statements and no managed policy: logs to its own
log group; receive, delete, change visibility and read attributes of its own queue only; get
objects only under the key filters of the buckets that notify its queue; read and write items
of the job table and query its indexes. Nothing may send to another queue, and nobody may
purge any queue: each queue's policy denies ``sqs:PurgeQueue`` to every principal. Producers
(clients) get ``ProducerPolicy``, which sends to the app's queues and nothing else.
Alarms are CloudWatch's (see ``vaultq.deploy.cloudwatch``).

An app with job routes gets its HTTP API too: ``ApiFunction`` (``vaultq.api.aws_lambda``)
behind an API Gateway HTTP API (payload format 2.0, routes ``/`` and ``/{proxy+}``), the
``StateTable`` (outbox, rate limits, idempotency records; see ``vaultq._dynamodb``) and
``OutboxDrainFunction``, run every minute, which sends what the outbox kept while a queue
was unavailable. The API's role sends only to the queues its job routes target, uses the job
table's items and indexes and the state table's items and outbox index, and reads and writes
only ``jobs/*`` of the job routes' buckets; the drain's role only sends to those queues and
claims and removes outbox items. Token keys are template parameters: the HS256 secret is
``NoEcho`` (prefer ``AuthPublicKeys``: public keys are no secret), never a literal.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vaultq import errors
from vaultq.deploy import job_table
from vaultq.deploy.cloudwatch import alarm_properties, app_alarms
from vaultq.deploy.lambda_entry import APP_VARIABLE, ENTRY_POINT, HANDLER_VARIABLE

if TYPE_CHECKING:
    from collections.abc import Callable

    from vaultq.app import App, HandlerSpec, QueueSpec
    from vaultq.blobs.notifications import BucketNotification
    from vaultq.queues.protocol import QueueAttributes

RUNTIME = "python3.11"
#: AWS's advice for a queue feeding Lambda: at least 6x the function timeout (+ the window).
VISIBILITY_FACTOR = 6
#: The alias that carries a function's provisioned concurrency.
PROVISIONED_ALIAS = "live"
#: ``ScalingConfig.MaximumConcurrency`` is 2..1000 on AWS.
MIN_MAXIMUM_CONCURRENCY = 2
FIFO_MAX_BATCH_SIZE = 10
LOG_RETENTION_DAYS = 30
MAX_FUNCTION_NAME = 64
JOB_TABLE = "JobTable"
ALARM_TOPIC = "AlarmTopic"
PRODUCER_POLICY = "ProducerPolicy"
CONSUMER_ACTIONS = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
)
#: GetQueueUrl lets a producer address a queue by name; it reveals only the URL.
#: GetQueueAttributes: a sender checks a message against its queue's limits and kind (FIFO).
PRODUCER_ACTIONS = ("sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes")
JOB_ITEM_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:BatchGetItem")
STATE_TABLE = "StateTable"
#: Every item action the outbox, rate limiter and idempotency store use; no Scan.
STATE_ITEM_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
)
#: The outbox drain claims (UpdateItem) and removes (DeleteItem) what the index lists.
DRAIN_ITEM_ACTIONS = ("dynamodb:UpdateItem", "dynamodb:DeleteItem")
OUTBOX_INDEX = "outbox-due"
API_FUNCTION = "ApiFunction"
DRAIN_FUNCTION = "OutboxDrainFunction"
#: Where the entry points live; ``vaultq.api`` sits beside this package, so by name.
API_ENTRY_POINT = "vaultq.api.aws_lambda.api_handler"
DRAIN_ENTRY_POINT = "vaultq.api.aws_lambda.outbox_handler"
#: API Gateway gives up on an integration after 30 s; the function stops before.
API_TIMEOUT_SECONDS = 29
API_MEMORY_MB = 512
DRAIN_TIMEOUT_SECONDS = 60
DRAIN_SCHEDULE = "rate(1 minute)"
#: Template parameter -> the ``VAULTQ_AUTH_*`` variable it sets (empty: unset).
AUTH_PARAMETERS = {
    "AuthHs256Secret": "VAULTQ_AUTH_HS256_SECRET",
    "AuthPublicKeys": "VAULTQ_AUTH_PUBLIC_KEYS",
    "AuthIssuer": "VAULTQ_AUTH_ISSUER",
    "AuthAudience": "VAULTQ_AUTH_AUDIENCE",
}
_ID_PART = re.compile(r"[^A-Za-z0-9]+")
_VARIABLE = re.compile(r"[A-Z][A-Z0-9_]{0,99}")
#: Set by the template itself, or by Lambda.
_RESERVED_VARIABLES = frozenset({APP_VARIABLE, HANDLER_VARIABLE, "VAULTQ_URL"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DeployVariables:
    """The app's own settings, each a ``NoEcho`` template parameter (empty: unset) passed
    to every handler function (e.g. ``VAULTQ_WORKER_KEYS``, ``VAULTQ_VECTORS_URL``) or to
    the API function only (e.g. ``VAULTQ_WORKER_PUBLIC_KEY``): worker keys stay off the
    API."""

    handlers: tuple[str, ...] = ()
    api: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (*self.handlers, *self.api):
            if not _VARIABLE.fullmatch(name) or name.startswith("AWS_"):
                raise errors.InvalidParameterValue(
                    f"{name!r} is no variable a template may set: upper case, digits and _,"
                    " not AWS_*"
                )
            if name in _RESERVED_VARIABLES or name in AUTH_PARAMETERS.values():
                raise errors.InvalidParameterValue(f"the template sets {name} itself")
        parameters = [variable_parameter(name) for name in dict.fromkeys(self.handlers + self.api)]
        if len(set(parameters)) < len(parameters) or set(parameters) & set(AUTH_PARAMETERS):
            raise errors.InvalidParameterValue(
                "two variables, or a variable and an auth setting, would share one template"
                " parameter (names differing only in underscores)"
            )


def variable_parameter(name: str) -> str:
    """The template parameter that sets variable ``name``: ``VAULTQ_WORKER_KEYS`` ->
    ``VaultqWorkerKeys``."""
    return logical_id(name.lower(), "")


@dataclass(frozen=True, slots=True, kw_only=True)
class SamTemplate:
    body: dict[str, Any]
    #: Where the template departs from the app's declarations, and why.
    notes: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(self.body, indent=2) + "\n"


def sam_template(
    app: App,
    *,
    app_path: str,
    code_uri: str = ".",
    variables: DeployVariables | None = None,
) -> SamTemplate:
    """The SAM template deploying ``app`` (importable as ``app_path``) from ``code_uri``."""
    return _Builder(app, app_path, variables or DeployVariables()).build(code_uri)


def logical_id(name: str, kind: str) -> str:
    """``embed-jobs`` + ``Queue`` -> ``EmbedJobsQueue``."""
    return "".join(part[:1].upper() + part[1:] for part in _ID_PART.split(name)) + kind


def _arn(resource_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [resource_id, "Arn"]}


def _allow(sid: str, actions: tuple[str, ...] | list[str], resources: list[Any]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": resources}


class _Builder:
    def __init__(self, app: App, app_path: str, variables: DeployVariables) -> None:
        self.app = app
        self.app_path = app_path
        self.variables = variables
        self.resources: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.parameters: dict[str, Any] = {}
        self.notes: list[str] = []

    def build(self, code_uri: str) -> SamTemplate:
        self._add(JOB_TABLE, _retained("AWS::DynamoDB::Table", job_table.table_properties()))
        self._add(ALARM_TOPIC, {"Type": "AWS::SNS::Topic", "Properties": {}})
        for spec in self.app.queues.values():
            self._queue(spec)
        for bucket, notifications in self.app.buckets.items():
            self._bucket(bucket, notifications)
        for handler in self.app.handlers.values():
            self._function(handler)
        self._producer_policy()
        if self.app.job_routes:
            self._http_api()
        elif self.variables.api:
            raise errors.InvalidParameterValue(
                f"app {self.app.name!r} has no job routes, so no API function to set"
                f" {', '.join(self.variables.api)} on"
            )
        self._alarms()
        self.outputs |= {
            "JobTableName": {"Value": {"Ref": JOB_TABLE}},
            "AlarmTopicArn": {"Value": {"Ref": ALARM_TOPIC}},
            "ProducerPolicyArn": {"Value": {"Ref": PRODUCER_POLICY}},
        }
        body = {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Transform": "AWS::Serverless-2016-10-31",
            "Description": f"vaultq app {self.app.name} ({self.app_path})",
            "Globals": {"Function": {"Runtime": RUNTIME, "CodeUri": code_uri}},
            **({"Parameters": self.parameters} if self.parameters else {}),
            "Resources": self.resources,
            "Outputs": self.outputs,
        }
        return SamTemplate(body=body, notes=tuple(self.notes))

    def _add(self, resource_id: str, resource: dict[str, Any]) -> None:
        if resource_id in self.resources:
            raise errors.InvalidParameterValue(
                f"two names of app {self.app.name!r} map to the logical id {resource_id}"
            )
        self.resources[resource_id] = resource

    # -- queues -----------------------------------------------------------------------------

    def _queue(self, spec: QueueSpec) -> None:
        queue_id = logical_id(spec.name, "Queue")
        properties = _queue_properties(spec.name, spec.attributes)
        properties["VisibilityTimeout"] = self._visibility_seconds(spec)
        if spec.dead_letter is not None and spec.dead_letter_queue is not None:
            dlq_id = logical_id(spec.name, "DeadLetterQueue")
            dlq = _queue_properties(spec.dead_letter_queue, spec.attributes, dead_letter=True)
            dlq["MessageRetentionPeriod"] = spec.dead_letter.retention_seconds
            self._add(dlq_id, _retained("AWS::SQS::Queue", dlq))
            self._queue_policy(dlq_id, spec.dead_letter_queue)
            properties["RedrivePolicy"] = {
                "deadLetterTargetArn": _arn(dlq_id),
                "maxReceiveCount": spec.dead_letter.max_receive_count,
            }
        self._add(queue_id, _retained("AWS::SQS::Queue", properties))
        self._queue_policy(queue_id, spec.name)
        self.outputs[f"{queue_id}Url"] = {"Value": {"Ref": queue_id}}

    def _visibility_seconds(self, spec: QueueSpec) -> int:
        declared = spec.attributes.visibility_timeout_seconds
        needed = max(
            (
                VISIBILITY_FACTOR * handler.timeout_seconds
                + math.ceil(handler.mapping.batching_window_seconds)
                for handler in self.app.handlers.values()
                if handler.mapping.queue == spec.name
            ),
            default=0,
        )
        if needed <= declared:
            return declared
        self.notes.append(
            f"queue {spec.name}: visibility timeout raised from {declared} s to {needed} s"
            f" ({VISIBILITY_FACTOR}x its function's timeout plus the batching window)"
        )
        return needed

    def _queue_policy(self, queue_id: str, queue: str) -> None:
        """Every queue gets one policy (a second one would replace it): nobody purges it, and
        the buckets that notify it may send to it."""
        statements: list[dict[str, Any]] = [
            {
                "Sid": "NobodyPurges",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:PurgeQueue",
                "Resource": _arn(queue_id),
            }
        ]
        for bucket, notifications in self.app.buckets.items():
            if any(n.queue == queue for n in notifications):
                statements.append(_s3_may_send(queue_id, bucket))
        self._add(
            f"{queue_id}Policy",
            {
                "Type": "AWS::SQS::QueuePolicy",
                "Properties": {
                    "Queues": [{"Ref": queue_id}],
                    "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
                },
            },
        )

    def _alarms(self) -> None:
        alarms, notes = app_alarms(self.app)
        self.notes += notes
        for alarm in alarms:
            properties = alarm_properties(alarm, app=self.app, topic={"Ref": ALARM_TOPIC})
            self._add(
                logical_id(alarm.name, "Alarm"),
                {"Type": "AWS::CloudWatch::Alarm", "Properties": properties},
            )

    # -- buckets ----------------------------------------------------------------------------

    def _bucket(self, bucket: str, notifications: tuple[BucketNotification, ...]) -> None:
        configurations = [
            _queue_configuration(notification, event)
            for notification in notifications
            for event in notification.events
        ]
        queues = sorted({logical_id(n.queue, "Queue") for n in notifications})
        properties: dict[str, Any] = {
            "BucketName": bucket,
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
        }
        if configurations:
            properties["NotificationConfiguration"] = {"QueueConfigurations": configurations}
        resource = _retained("AWS::S3::Bucket", properties)
        # S3 checks that it may send to each queue when the notification is set.
        resource["DependsOn"] = [f"{queue_id}Policy" for queue_id in queues]
        self._add(logical_id(bucket, "Bucket"), resource)

    # -- functions --------------------------------------------------------------------------

    def _function(self, handler: HandlerSpec) -> None:
        function_id = logical_id(handler.name, "Function")
        name = f"{self.app.name}-{handler.name}"
        if len(name) > MAX_FUNCTION_NAME:
            raise errors.InvalidParameterValue(
                f"function name {name!r} is over {MAX_FUNCTION_NAME} characters"
            )
        logs_id, role_id = self._log_group(function_id, name), f"{function_id}Role"
        self._add(role_id, _role(self._statements(handler, logs_id)))
        properties: dict[str, Any] = {
            "FunctionName": name,
            "Handler": ENTRY_POINT,
            "Role": _arn(role_id),
            "Timeout": handler.timeout_seconds,
            "MemorySize": handler.memory_limit_in_mb,
            "Environment": {"Variables": self._variables(handler)},
            "Events": {"Queue": {"Type": "SQS", "Properties": self._event_source(handler)}},
        }
        if handler.provisioned_concurrency:
            # Provisioned concurrency lives on a version: SAM publishes one under an alias,
            # and the queue's event source mapping then invokes the alias.
            properties["AutoPublishAlias"] = PROVISIONED_ALIAS
            properties["ProvisionedConcurrencyConfig"] = {
                "ProvisionedConcurrentExecutions": handler.provisioned_concurrency
            }
        if handler.mapping.max_concurrency < MIN_MAXIMUM_CONCURRENCY:
            properties["ReservedConcurrentExecutions"] = handler.mapping.max_concurrency
            self.notes.append(
                f"handler {handler.name}: max_concurrency=1 is MaximumConcurrency 2 (AWS's"
                " minimum) plus 1 reserved concurrent execution; Lambda may throttle the"
                " second poller's batch, which then returns after the visibility timeout"
            )
        self._add(
            function_id,
            {
                "Type": "AWS::Serverless::Function",
                # Its role may not create log groups: its own must exist first.
                "DependsOn": [logs_id],
                "Properties": properties,
            },
        )

    def _log_group(self, function_id: str, name: str) -> str:
        logs_id = f"{function_id}Logs"
        self._add(
            logs_id,
            {
                "Type": "AWS::Logs::LogGroup",
                "Properties": {
                    "LogGroupName": f"/aws/lambda/{name}",
                    "RetentionInDays": LOG_RETENTION_DAYS,
                },
            },
        )
        return logs_id

    def _variables(self, handler: HandlerSpec) -> dict[str, Any]:
        return {
            APP_VARIABLE: self.app_path,
            HANDLER_VARIABLE: handler.name,
            "VAULTQ_URL": {
                "Fn::Sub": f"aws://?region=${{AWS::Region}}&jobs_table=${{{JOB_TABLE}}}"
            },
            **self._variable_parameters(self.variables.handlers),
        }

    def _variable_parameters(self, names: tuple[str, ...]) -> dict[str, Any]:
        """Declare ``names`` as template parameters; the variables that read them."""
        refs = {}
        for name in names:
            parameter = variable_parameter(name)
            self.parameters[parameter] = {
                "Type": "String",
                "Default": "",
                "NoEcho": True,
                "Description": f"Sets {name} (empty: unset).",
            }
            refs[name] = {"Ref": parameter}
        return refs

    def _event_source(self, handler: HandlerSpec) -> dict[str, Any]:
        mapping = handler.mapping
        fifo = self.app.queues[mapping.queue].attributes.fifo
        window = mapping.batching_window_seconds
        if fifo and (window > 0 or mapping.batch_size > FIFO_MAX_BATCH_SIZE):
            raise errors.InvalidParameterValue(
                f"handler {handler.name}: Lambda reads a FIFO queue in batches of at most"
                f" {FIFO_MAX_BATCH_SIZE}, without a batching window"
            )
        source: dict[str, Any] = {
            "Queue": _arn(logical_id(mapping.queue, "Queue")),
            "BatchSize": mapping.batch_size,
            "ScalingConfig": {
                "MaximumConcurrency": max(mapping.max_concurrency, MIN_MAXIMUM_CONCURRENCY)
            },
        }
        if not fifo:
            source["MaximumBatchingWindowInSeconds"] = math.ceil(window)
            if window != math.ceil(window):
                self.notes.append(
                    f"handler {handler.name}: batching window {window} s rounded up to"
                    f" {math.ceil(window)} s (Lambda counts whole seconds)"
                )
        if mapping.report_batch_item_failures:
            source["FunctionResponseTypes"] = ["ReportBatchItemFailures"]
        return source

    def _statements(self, handler: HandlerSpec, logs_id: str) -> list[dict[str, Any]]:
        table = _arn(JOB_TABLE)
        statements = [
            _allow("WriteOwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [_arn(logs_id)]),
            _allow(
                "ConsumeOwnQueue",
                CONSUMER_ACTIONS,
                [_arn(logical_id(handler.mapping.queue, "Queue"))],
            ),
            _allow("UseJobItems", JOB_ITEM_ACTIONS, [table]),
            _allow(
                "QueryJobIndexes",
                ["dynamodb:Query"],
                [{"Fn::Sub": f"${{{JOB_TABLE}.Arn}}/index/*"}],
            ),
        ]
        uploads = [
            _object_arn(bucket, notification)
            for bucket, notifications in self.app.buckets.items()
            for notification in notifications
            if notification.queue == handler.mapping.queue
        ]
        if uploads:
            statements.append(_allow("ReadNotifiedObjects", ["s3:GetObject"], uploads))
        job_files = sorted(
            {
                route.bucket
                for route in self.app.job_routes.values()
                if route.bucket is not None and handler.mapping.queue in route.queues
            }
        )
        if job_files:
            # A job's handler reads the files submitted with it and writes its outputs beside
            # them, under jobs/<tenant>/<client>/<job>/.
            statements.append(
                _allow(
                    "UseJobFiles",
                    ["s3:GetObject", "s3:PutObject"],
                    [_s3_arn(f"{bucket}/jobs/*") for bucket in job_files],
                )
            )
        return statements

    # -- the HTTP API -------------------------------------------------------------------------

    def _http_api(self) -> None:
        self._add(STATE_TABLE, _retained("AWS::DynamoDB::Table", state_table_properties()))
        url = {
            "Fn::Sub": "aws://?region=${AWS::Region}"
            f"&jobs_table=${{{JOB_TABLE}}}&state_table=${{{STATE_TABLE}}}"
        }
        self._api_function(url)
        self._service_function(
            DRAIN_FUNCTION,
            "outbox-drain",
            self._drain_statements,
            {
                "Handler": DRAIN_ENTRY_POINT,
                "Timeout": DRAIN_TIMEOUT_SECONDS,
                "Environment": {"Variables": {"VAULTQ_URL": url}},
                "Events": {
                    "Every": {"Type": "Schedule", "Properties": {"Schedule": DRAIN_SCHEDULE}}
                },
            },
        )
        self.outputs |= {
            "ApiUrl": {
                "Value": {
                    "Fn::Sub": "https://${ServerlessHttpApi}.execute-api.${AWS::Region}"
                    ".${AWS::URLSuffix}/"
                }
            },
            "StateTableName": {"Value": {"Ref": STATE_TABLE}},
        }

    def _api_function(self, url: dict[str, Any]) -> None:
        """The API behind API Gateway's default HTTP API: ``/`` and ``/{proxy+}``."""
        events = {
            name: {
                "Type": "HttpApi",
                "Properties": {"Path": path, "Method": "ANY", "PayloadFormatVersion": "2.0"},
            }
            for name, path in (("Root", "/"), ("Proxy", "/{proxy+}"))
        }
        variables = {
            APP_VARIABLE: self.app_path,
            "VAULTQ_URL": url,
            **self._auth_parameters(),
            **self._variable_parameters(self.variables.api),
        }
        self._service_function(
            API_FUNCTION,
            "api",
            self._api_statements,
            {
                "Handler": API_ENTRY_POINT,
                "Timeout": API_TIMEOUT_SECONDS,
                "MemorySize": API_MEMORY_MB,
                "Environment": {"Variables": variables},
                "Events": events,
            },
        )

    def _auth_parameters(self) -> dict[str, Any]:
        """Declare the token settings as parameters; the variables that read them."""
        for parameter, variable in AUTH_PARAMETERS.items():
            self.parameters[parameter] = {
                "Type": "String",
                "Default": "",
                "Description": f"Sets {variable} of the API (empty: unset).",
            }
        self.parameters["AuthHs256Secret"]["NoEcho"] = True
        return {variable: {"Ref": parameter} for parameter, variable in AUTH_PARAMETERS.items()}

    def _service_function(
        self,
        function_id: str,
        suffix: str,
        statements: Callable[[str], list[dict[str, Any]]],
        properties: dict[str, Any],
    ) -> None:
        name = f"{self.app.name}-{suffix}"
        if len(name) > MAX_FUNCTION_NAME:
            raise errors.InvalidParameterValue(
                f"function name {name!r} is over {MAX_FUNCTION_NAME} characters"
            )
        logs_id, role_id = self._log_group(function_id, name), f"{function_id}Role"
        self._add(role_id, _role(statements(logs_id)))
        self._add(
            function_id,
            {
                "Type": "AWS::Serverless::Function",
                "DependsOn": [logs_id],
                "Properties": {"FunctionName": name, "Role": _arn(role_id), **properties},
            },
        )

    def _job_queues(self) -> list[dict[str, Any]]:
        queues = sorted({queue for route in self.app.job_routes.values() for queue in route.queues})
        return [_arn(logical_id(queue, "Queue")) for queue in queues]

    def _api_statements(self, logs_id: str) -> list[dict[str, Any]]:
        statements = [
            _allow("WriteOwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [_arn(logs_id)]),
            _allow("SendToJobQueues", PRODUCER_ACTIONS, self._job_queues()),
            _allow("UseJobItems", JOB_ITEM_ACTIONS, [_arn(JOB_TABLE)]),
            _allow(
                "QueryJobIndexes",
                ["dynamodb:Query"],
                [{"Fn::Sub": f"${{{JOB_TABLE}.Arn}}/index/*"}],
            ),
            _allow("UseStateItems", STATE_ITEM_ACTIONS, [_arn(STATE_TABLE)]),
            _allow("CountOutbox", ["dynamodb:Query"], [_outbox_index()]),
        ]
        buckets = sorted(
            {route.bucket for route in self.app.job_routes.values() if route.bucket is not None}
        )
        if buckets:
            # A multipart submission stores its files under jobs/<tenant>/<client>/<job>/ and
            # a download URL is signed for them.
            statements.append(
                _allow(
                    "UseJobFiles",
                    ["s3:GetObject", "s3:PutObject"],
                    [_s3_arn(f"{bucket}/jobs/*") for bucket in buckets],
                )
            )
        return statements

    def _drain_statements(self, logs_id: str) -> list[dict[str, Any]]:
        return [
            _allow("WriteOwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [_arn(logs_id)]),
            _allow("SendToJobQueues", PRODUCER_ACTIONS, self._job_queues()),
            _allow("ClaimAndRemoveSends", DRAIN_ITEM_ACTIONS, [_arn(STATE_TABLE)]),
            _allow("ListDueSends", ["dynamodb:Query"], [_outbox_index()]),
        ]

    def _producer_policy(self) -> None:
        queues = [_arn(logical_id(name, "Queue")) for name in self.app.queues]
        self._add(
            PRODUCER_POLICY,
            {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {
                    "Description": f"Send to the queues of vaultq app {self.app.name}, only.",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [_allow("SendToAppQueues", PRODUCER_ACTIONS, queues)],
                    },
                },
            },
        )


def state_table_properties() -> dict[str, Any]:
    """The state table (``vaultq._dynamodb.state_table_spec``, restated: only
    ``vaultq.wiring`` names adapters), encrypted, with point-in-time recovery and TTL."""
    return {
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"}
            for name in ("pk", "sk", "outbox_shard", "outbox_order")
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": OUTBOX_INDEX,
                "KeySchema": [
                    {"AttributeName": "outbox_shard", "KeyType": "HASH"},
                    {"AttributeName": "outbox_order", "KeyType": "RANGE"},
                ],
                "Projection": {
                    "ProjectionType": "INCLUDE",
                    "NonKeyAttributes": ["claimed_until_ms"],
                },
            }
        ],
        "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        "SSESpecification": {"SSEEnabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
    }


def _outbox_index() -> dict[str, Any]:
    return {"Fn::Sub": f"${{{STATE_TABLE}.Arn}}/index/{OUTBOX_INDEX}"}


def _queue_properties(
    name: str, attributes: QueueAttributes, *, dead_letter: bool = False
) -> dict[str, Any]:
    properties: dict[str, Any] = {"QueueName": name, "SqsManagedSseEnabled": True}
    if not dead_letter:
        properties |= {
            "MessageRetentionPeriod": attributes.message_retention_seconds,
            "DelaySeconds": attributes.delay_seconds,
            "MaximumMessageSize": attributes.maximum_message_size_bytes,
            "ReceiveMessageWaitTimeSeconds": attributes.receive_wait_time_seconds,
        }
    if attributes.fifo:
        properties["FifoQueue"] = True
        if not dead_letter:
            properties["ContentBasedDeduplication"] = attributes.content_based_deduplication
        if attributes.deduplication_scope == "message_group" and not dead_letter:
            properties["DeduplicationScope"] = "messageGroup"
            properties["FifoThroughputLimit"] = "perMessageGroupId"
    return properties


def _retained(resource_type: str, properties: dict[str, Any]) -> dict[str, Any]:
    """State a stack deletion or replacement must not destroy: messages, jobs, uploads."""
    return {
        "Type": resource_type,
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": properties,
    }


def _role(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            },
            "Policies": [
                {
                    "PolicyName": "least-privilege",
                    "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
                }
            ],
        },
    }


def _s3_may_send(queue_id: str, bucket: str) -> dict[str, Any]:
    return {
        "Sid": logical_id(bucket, "MaySend"),
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": _arn(queue_id),
        "Condition": {
            "ArnEquals": {"aws:SourceArn": {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::{bucket}"}},
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        },
    }


def _queue_configuration(notification: BucketNotification, event: str) -> dict[str, Any]:
    configuration: dict[str, Any] = {
        "Event": event,
        "Queue": _arn(logical_id(notification.queue, "Queue")),
    }
    rules = [
        {"Name": name, "Value": value}
        for name, value in (("prefix", notification.prefix), ("suffix", notification.suffix))
        if value
    ]
    if rules:
        configuration["Filter"] = {"S3Key": {"Rules": rules}}
    return configuration


def _object_arn(bucket: str, notification: BucketNotification) -> dict[str, Any]:
    """The objects whose events reach the queue: ``bucket/<prefix>*<suffix>``."""
    return _s3_arn(f"{bucket}/{notification.prefix}*{notification.suffix}")


def _s3_arn(objects: str) -> dict[str, Any]:
    return {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::", objects]]}
