"""``vaultq deploy sam``: the template is valid for cfn-lint and says what the app declares,
with least privilege for every function."""

from __future__ import annotations

import importlib
import json
from typing import TYPE_CHECKING, Any

import cfnlint.api  # type: ignore[import-untyped]
import pytest
from typer.testing import CliRunner

from tests.deploy import apps
from vaultq import errors
from vaultq._dynamodb import state_table_spec
from vaultq.app import App, load_app
from vaultq.cli import app as cli
from vaultq.deploy import job_table
from vaultq.deploy.sam import (
    API_ENTRY_POINT,
    AUTH_PARAMETERS,
    CONSUMER_ACTIONS,
    DRAIN_ENTRY_POINT,
    DeployVariables,
    logical_id,
    sam_template,
    state_table_properties,
)
from vaultq.jobs.dynamodb import TTL_ATTRIBUTE, table_spec

if TYPE_CHECKING:
    from pathlib import Path

APPS = [
    "vaultq.demo:app",
    "examples.private_embeddings.app:app",
    "examples.drawing_jobs.app:app",
    "examples.predictions.app:app",
    "tests.deploy.apps:app",
]


def resources(path: str = "tests.deploy.apps:app", of_type: str | None = None) -> dict[str, Any]:
    found = sam_template(load_app(path), app_path=path).body["Resources"]
    return {k: v for k, v in found.items() if of_type is None or v["Type"] == of_type}


def function(name: str) -> dict[str, Any]:
    properties: dict[str, Any] = resources()[logical_id(name, "Function")]["Properties"]
    return properties


def role_statements(handler: str, path: str = "tests.deploy.apps:app") -> list[dict[str, Any]]:
    role = resources(path)[logical_id(handler, "FunctionRole")]["Properties"]
    return [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def all_statements(path: str) -> list[dict[str, Any]]:
    statements = []
    for resource in resources(path).values():
        properties = resource["Properties"]
        documents = [p["PolicyDocument"] for p in properties.get("Policies", [])]
        if "PolicyDocument" in properties:
            documents.append(properties["PolicyDocument"])
        statements += [s for document in documents for s in document["Statement"]]
    return statements


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def queue_arn(name: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id(name, "Queue"), "Arn"]}


@pytest.mark.parametrize("path", APPS)
def test_the_template_has_no_cfn_lint_errors(path: str) -> None:
    template = sam_template(load_app(path), app_path=path)

    matches = cfnlint.api.lint(template.to_json(), regions=["us-east-1"])

    assert [str(m) for m in matches if m.rule.id.startswith("E")] == []


# -- least privilege ----------------------------------------------------------------------


@pytest.mark.parametrize("path", APPS)
def test_nothing_may_purge_or_delete_a_queue_or_act_on_every_resource(path: str) -> None:
    statements = all_statements(path)
    allowed = [s for s in statements if s["Effect"] == "Allow"]

    assert allowed
    for statement in allowed:
        assert not {"sqs:PurgeQueue", "sqs:DeleteQueue"} & set(actions(statement))
        assert all("*" not in action for action in actions(statement))
        assert "*" not in listed(statement["Resource"])
        assert statement.get("Principal") in (None, {"Service": "s3.amazonaws.com"})


@pytest.mark.parametrize("path", APPS)
def test_every_queue_denies_purge_to_everyone(path: str) -> None:
    found = resources(path)
    queues = [k for k, v in found.items() if v["Type"] == "AWS::SQS::Queue"]
    denied = {
        s["Resource"]["Fn::GetAtt"][0]
        for k, v in found.items()
        if v["Type"] == "AWS::SQS::QueuePolicy"
        for s in v["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s["Action"] == "sqs:PurgeQueue" and s["Principal"] == "*"
    }

    assert sorted(denied) == sorted(queues)


@pytest.mark.parametrize("path", APPS)
def test_functions_have_their_own_role_and_no_managed_policy(path: str) -> None:
    found = resources(path)
    functions = [v for v in found.values() if v["Type"] == "AWS::Serverless::Function"]
    roles = [v for v in found.values() if v["Type"] == "AWS::IAM::Role"]

    assert len({json.dumps(f["Properties"]["Role"]) for f in functions}) == len(functions)
    # With an explicit Role, SAM attaches none of its own (broad) managed policies.
    assert all("Policies" not in f["Properties"] for f in functions)
    assert all("ManagedPolicyArns" not in r["Properties"] for r in roles)


def test_a_consumer_only_receives_deletes_and_extends_on_its_own_queue() -> None:
    sqs = [s for s in role_statements("ordered") if any(a.startswith("sqs:") for a in actions(s))]

    assert [(sorted(actions(s)), s["Resource"]) for s in sqs] == [
        (sorted(CONSUMER_ACTIONS), [queue_arn("ordered.fifo")])
    ]


def test_a_consumer_reads_only_the_objects_whose_uploads_reach_its_queue() -> None:
    s3 = [s for s in role_statements("uploads") if any(a.startswith("s3:") for a in actions(s))]
    [objects] = s3[0]["Resource"]

    assert [actions(s) for s in s3] == [["s3:GetObject"]]
    assert objects["Fn::Join"][1][-1] == "deploytest-inbox/in/*.json"
    assert not any(a.startswith("s3:") for s in role_statements("plain") for a in actions(s))


def test_a_job_handler_reads_and_writes_only_its_jobs_files() -> None:
    statements = role_statements("process_drawing", "examples.drawing_jobs.app:app")
    s3 = [s for s in statements if any(a.startswith("s3:") for a in actions(s))]
    [objects] = s3[0]["Resource"]

    assert [sorted(actions(s)) for s in s3] == [["s3:GetObject", "s3:PutObject"]]
    assert objects["Fn::Join"][1][-1] == "drawings/jobs/*"


def test_job_table_actions_reach_only_the_job_table() -> None:
    dynamodb = [
        s
        for handler in apps.app.handlers
        for s in role_statements(handler)
        if any(a.startswith("dynamodb:") for a in actions(s))
    ]

    assert dynamodb
    for statement in dynamodb:
        assert not {"dynamodb:DeleteTable", "dynamodb:Scan"} & set(actions(statement))
        for resource in statement["Resource"]:
            assert "JobTable" in json.dumps(resource)


def test_producers_may_only_send_to_the_app_queues() -> None:
    policy = resources()["ProducerPolicy"]["Properties"]["PolicyDocument"]
    [statement] = policy["Statement"]

    assert set(actions(statement)) == {
        "sqs:SendMessage",
        "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes",
    }
    assert statement["Resource"] == [queue_arn(q) for q in apps.app.queues]


# -- queues, functions and event sources ----------------------------------------------------


@pytest.mark.parametrize("path", APPS)
def test_every_queue_outlasts_six_of_its_functions_timeouts(path: str) -> None:
    found = resources(path)
    for resource in found.values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        if "Queue" not in resource["Properties"]["Events"]:
            continue  # the API and the outbox drain read no queue
        source = resource["Properties"]["Events"]["Queue"]["Properties"]
        queue = found[source["Queue"]["Fn::GetAtt"][0]]["Properties"]
        needed = 6 * resource["Properties"]["Timeout"]
        assert queue["VisibilityTimeout"] >= needed + source.get(
            "MaximumBatchingWindowInSeconds", 0
        )


def test_a_visibility_timeout_already_long_enough_is_kept() -> None:
    app = App("keep")
    app.queue("long", visibility_timeout_seconds=1000)
    app.handler(queue="long", name="h", timeout_seconds=10)(lambda event, context: None)

    template = sam_template(app, app_path="x:app")

    assert template.body["Resources"]["LongQueue"]["Properties"]["VisibilityTimeout"] == 1000
    assert template.notes == ()


def test_the_fifo_event_source_keeps_order_and_reports_partial_failures() -> None:
    ordered = function("ordered")

    assert ordered["Handler"] == "vaultq.deploy.lambda_handler"
    assert ordered["Environment"]["Variables"]["VAULTQ_APP"] == "tests.deploy.apps:app"
    assert ordered["Environment"]["Variables"]["VAULTQ_HANDLER"] == "ordered"
    assert (ordered["Timeout"], ordered["MemorySize"]) == (20, 128)
    assert ordered["Events"]["Queue"]["Properties"] == {
        "Queue": queue_arn("ordered.fifo"),
        "BatchSize": 10,
        "ScalingConfig": {"MaximumConcurrency": 2},
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
    }
    # max_concurrency=1: AWS's minimum is 2, so one reserved execution keeps it to one.
    assert ordered["ReservedConcurrentExecutions"] == 1


def test_provisioned_concurrency_is_published_on_an_alias_the_queue_invokes() -> None:
    app = App("warm")
    app.queue("work")
    app.handler(queue="work", name="h", max_concurrency=4, provisioned_concurrency=2)(print)
    app.handler(queue="work", name="cold")(print)

    template = sam_template(app, app_path="x:app")

    warm = template.body["Resources"]["HFunction"]["Properties"]
    assert warm["AutoPublishAlias"] == "live"
    assert warm["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": 2}
    assert "AutoPublishAlias" not in template.body["Resources"]["ColdFunction"]["Properties"]
    matches = cfnlint.api.lint(template.to_json(), regions=["us-east-1"])
    assert [str(m) for m in matches if m.rule.id.startswith("E")] == []


def test_a_standard_event_source_carries_its_batching_window() -> None:
    uploads = function("uploads")

    assert uploads["MemorySize"] == 512
    assert uploads["Events"]["Queue"]["Properties"] == {
        "Queue": queue_arn("uploads"),
        "BatchSize": 100,
        "ScalingConfig": {"MaximumConcurrency": 5},
        "MaximumBatchingWindowInSeconds": 3,
    }
    assert "ReservedConcurrentExecutions" not in uploads


def test_fifo_queues_keep_their_dead_letter_queue_and_deduplication() -> None:
    found = resources()
    queue = found["OrderedFifoQueue"]["Properties"]
    dlq = found["OrderedFifoDeadLetterQueue"]["Properties"]

    assert queue["FifoQueue"] and queue["ContentBasedDeduplication"]
    assert queue["MessageRetentionPeriod"] == 86_400
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["OrderedFifoDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    assert (dlq["QueueName"], dlq["FifoQueue"]) == ("ordered-dlq.fifo", True)
    assert "RedrivePolicy" not in found["PlainQueue"]["Properties"]


def test_a_fifo_handler_with_a_batching_window_is_refused() -> None:
    app = App("fifo")
    app.queue("f.fifo", fifo=True)
    app.handler(queue="f.fifo", name="h", batching_window_seconds=1)(lambda event, context: None)

    with pytest.raises(errors.InvalidParameterValue, match="FIFO"):
        sam_template(app, app_path="x:app")


def test_names_that_collide_as_logical_ids_are_refused() -> None:
    app = App("clash")
    app.queue("a-b")
    app.queue("a_b")

    with pytest.raises(errors.InvalidParameterValue, match="logical id"):
        sam_template(app, app_path="x:app")


# -- buckets, the job table, alarms ---------------------------------------------------------


def test_a_bucket_notifies_its_queue_which_lets_only_that_bucket_send() -> None:
    found = resources()
    bucket = found["DeploytestInboxBucket"]
    policy = found["UploadsQueuePolicy"]["Properties"]["PolicyDocument"]
    [s3_may_send] = [s for s in policy["Statement"] if s["Effect"] == "Allow"]

    assert bucket["DependsOn"] == ["UploadsQueuePolicy"]
    assert bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"] == [
        {
            "Event": "s3:ObjectCreated:*",
            "Queue": queue_arn("uploads"),
            "Filter": {
                "S3Key": {
                    "Rules": [
                        {"Name": "prefix", "Value": "in/"},
                        {"Name": "suffix", "Value": ".json"},
                    ]
                }
            },
        }
    ]
    assert (s3_may_send["Principal"], s3_may_send["Action"]) == (
        {"Service": "s3.amazonaws.com"},
        "sqs:SendMessage",
    )
    assert s3_may_send["Condition"]["ArnEquals"]["aws:SourceArn"] == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::deploytest-inbox"
    }


def test_the_job_table_is_the_one_the_dynamodb_adapter_creates() -> None:
    properties = resources()["JobTable"]["Properties"]
    created = table_spec("t")
    del created["TableName"]

    assert {k: properties[k] for k in created} == created
    assert properties["TimeToLiveSpecification"] == {
        "AttributeName": TTL_ATTRIBUTE,
        "Enabled": True,
    }
    assert job_table.TTL_ATTRIBUTE == TTL_ATTRIBUTE


def test_functions_find_the_job_table_through_their_url() -> None:
    url = function("plain")["Environment"]["Variables"]["VAULTQ_URL"]

    assert url == {"Fn::Sub": "aws://?region=${AWS::Region}&jobs_table=${JobTable}"}


def test_declared_alarms_become_cloudwatch_alarms() -> None:
    alarms = {k: v["Properties"] for k, v in resources(of_type="AWS::CloudWatch::Alarm").items()}

    assert sorted(alarms) == [
        "ErrorsAlarm",
        "OrderedDlqFifoNotEmptyAlarm",
        "OrderedErrorsAlarm",
        "PlainStuckAlarm",
        "UploadsDeadLettersAlarm",
    ]
    errors_alarm = alarms["ErrorsAlarm"]
    assert errors_alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert errors_alarm["Metrics"][-1]["Expression"] == "errors0 + errors1 + errors2"
    assert {m["MetricStat"]["Period"] for m in errors_alarm["Metrics"][:-1]} == {300}


def test_a_dead_letter_queue_without_a_declared_alarm_gets_one() -> None:
    alarm = resources()["OrderedDlqFifoNotEmptyAlarm"]["Properties"]
    reads = [m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m]

    assert {r["Dimensions"][0]["Value"] for r in reads} == {"ordered-dlq.fifo"}
    assert alarm["Metrics"][-1]["Expression"] == "visible + inflight + delayed"
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


# -- the command ---------------------------------------------------------------------------


def test_vaultq_deploy_sam_writes_the_template_and_tells_what_it_changed(tmp_path: Path) -> None:
    output = tmp_path / "template.yaml"

    result = CliRunner().invoke(cli, ["deploy", "sam", "tests.deploy.apps:app", "-o", str(output)])

    assert result.exit_code == 0, result.output
    assert (
        json.loads(output.read_text())
        == sam_template(apps.app, app_path="tests.deploy.apps:app").body
    )
    assert "visibility timeout raised from 600 s to 5400 s" in result.output


# -- the HTTP API -----------------------------------------------------------------------------

DRAWINGS = "examples.drawing_jobs.app:app"


def api_statements(function_id: str, path: str = DRAWINGS) -> dict[str, dict[str, Any]]:
    """The function's role statements by Sid."""
    role = resources(path)[f"{function_id}Role"]["Properties"]
    return {
        s["Sid"]: s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]
    }


def test_an_app_with_job_routes_serves_its_api_from_lambda_behind_an_http_api() -> None:
    api = resources(DRAWINGS)["ApiFunction"]["Properties"]

    assert api["Handler"] == API_ENTRY_POINT
    assert {e["Type"] for e in api["Events"].values()} == {"HttpApi"}
    assert sorted(
        (
            e["Properties"]["Method"],
            e["Properties"]["Path"],
            e["Properties"]["PayloadFormatVersion"],
        )
        for e in api["Events"].values()
    ) == [("ANY", "/", "2.0"), ("ANY", "/{proxy+}", "2.0")]
    assert api["Timeout"] < 30, "API Gateway's integration timeout is 30 s"
    assert api["Environment"]["Variables"]["VAULTQ_URL"] == {
        "Fn::Sub": "aws://?region=${AWS::Region}&jobs_table=${JobTable}&state_table=${StateTable}"
    }
    assert "ApiFunction" not in resources(), "an app without job routes has no API"


def test_the_entry_points_the_template_names_exist() -> None:
    for entry in (API_ENTRY_POINT, DRAIN_ENTRY_POINT):
        module, _, name = entry.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name))


def test_token_keys_are_parameters_and_the_secret_is_never_echoed() -> None:
    body = sam_template(load_app(DRAWINGS), app_path=DRAWINGS).body
    variables = body["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]

    assert set(body["Parameters"]) == set(AUTH_PARAMETERS)
    assert body["Parameters"]["AuthHs256Secret"]["NoEcho"] is True
    assert body["Parameters"]["AuthHs256Secret"]["Default"] == ""
    for parameter, variable in AUTH_PARAMETERS.items():
        assert variables[variable] == {"Ref": parameter}
    drain = body["Resources"]["OutboxDrainFunction"]["Properties"]["Environment"]["Variables"]
    assert not [v for v in drain if v.startswith("VAULTQ_AUTH_")], "the drain needs no keys"


def test_the_api_sends_only_to_its_job_queues_and_uses_only_its_tables_and_job_files() -> None:
    # The demo app has a second queue (uploads) that no job route targets.
    assert api_statements("ApiFunction", "vaultq.demo:app")["SendToJobQueues"]["Resource"] == [
        queue_arn("demo-jobs")
    ]
    statements = api_statements("ApiFunction")

    assert set(actions(statements["SendToJobQueues"])) == {
        "sqs:SendMessage",
        "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes",
    }
    assert statements["UseStateItems"]["Resource"] == [{"Fn::GetAtt": ["StateTable", "Arn"]}]
    assert statements["CountOutbox"]["Resource"] == [
        {"Fn::Sub": "${StateTable.Arn}/index/outbox-due"}
    ]
    [objects] = statements["UseJobFiles"]["Resource"]
    assert objects["Fn::Join"][1][-1] == "drawings/jobs/*"
    everything = [a for s in statements.values() for a in actions(s)]
    assert not {"dynamodb:Scan", "dynamodb:DeleteTable", "sqs:ReceiveMessage"} & set(everything)
    assert not {a for a in everything if a.startswith(("s3:", "sqs:"))} - {
        "s3:GetObject",
        "s3:PutObject",
        "sqs:SendMessage",
        "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes",
    }


def test_the_api_may_send_to_every_queue_a_route_chooses() -> None:
    embeddings = "examples.private_embeddings.app:app"

    sends = api_statements("ApiFunction", embeddings)["SendToJobQueues"]["Resource"]

    # Generate requests go to a queue per priority; search requests to the normal one.
    assert sends == [queue_arn("embed-requests"), queue_arn("embed-requests-high")]


def test_the_outbox_drain_runs_every_minute_and_only_claims_removes_and_sends() -> None:
    drain = resources(DRAWINGS)["OutboxDrainFunction"]["Properties"]
    statements = api_statements("OutboxDrainFunction")

    assert drain["Handler"] == DRAIN_ENTRY_POINT
    assert drain["Events"] == {
        "Every": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)"}}
    }
    assert sorted(statements) == [
        "ClaimAndRemoveSends",
        "ListDueSends",
        "SendToJobQueues",
        "WriteOwnLogs",
    ]
    assert set(actions(statements["ClaimAndRemoveSends"])) == {
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    }


def test_the_state_table_is_the_one_the_state_stores_create() -> None:
    found = resources(DRAWINGS)["StateTable"]
    created = state_table_spec("t")
    del created["TableName"]

    assert {k: found["Properties"][k] for k in created} == created
    assert state_table_properties()["TimeToLiveSpecification"]["AttributeName"] == "expires_at"
    assert found["DeletionPolicy"] == "Retain", "pending sends outlive a stack deletion"


# -- the app's own settings ---------------------------------------------------------------


def test_settings_reach_only_the_functions_named_as_no_echo_parameters() -> None:
    path = "examples.private_embeddings.app:app"
    variables = DeployVariables(
        handlers=("VAULTQ_WORKER_KEYS", "VAULTQ_VECTORS_URL"), api=("VAULTQ_WORKER_PUBLIC_KEY",)
    )
    template = sam_template(load_app(path), app_path=path, variables=variables).body
    functions = {
        name: resource["Properties"]["Environment"]["Variables"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    handlers = [logical_id(name, "Function") for name in load_app(path).handlers]

    for name in handlers:
        assert functions[name]["VAULTQ_WORKER_KEYS"] == {"Ref": "VaultqWorkerKeys"}
        assert functions[name]["VAULTQ_VECTORS_URL"] == {"Ref": "VaultqVectorsUrl"}
        assert "VAULTQ_WORKER_PUBLIC_KEY" not in functions[name]
    # The API seals with the public key and never holds a private one.
    assert functions["ApiFunction"]["VAULTQ_WORKER_PUBLIC_KEY"] == {"Ref": "VaultqWorkerPublicKey"}
    assert "VAULTQ_WORKER_KEYS" not in functions["ApiFunction"]
    for parameter in ("VaultqWorkerKeys", "VaultqVectorsUrl", "VaultqWorkerPublicKey"):
        assert template["Parameters"][parameter]["NoEcho"] is True
        assert template["Parameters"][parameter]["Default"] == ""
    matches = cfnlint.api.lint(json.dumps(template), regions=["us-east-1"])
    assert [str(m) for m in matches if m.rule.id.startswith("E")] == []


@pytest.mark.parametrize(
    "settings",
    [
        {"handlers": ("VAULTQ_URL",)},
        {"handlers": ("AWS_REGION",)},
        {"handlers": ("lower_case",)},
        {"api": ("VAULTQ_AUTH_HS256_SECRET",)},
        {"handlers": ("FOO__BAR", "FOO_BAR")},
        {"api": ("AUTH_ISSUER",)},
    ],
    ids=["set-by-the-template", "aws", "lower-case", "auth-parameter", "same-id", "auth-id"],
)
def test_a_variable_the_template_cannot_set_is_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        DeployVariables(**settings)


def test_api_settings_for_an_app_without_an_api_are_refused() -> None:
    app = App("workers-only")
    app.queue("q")
    app.handler(queue="q", name="h")(print)

    with pytest.raises(errors.InvalidParameterValue, match="no job routes"):
        sam_template(app, app_path="x:app", variables=DeployVariables(api=("VAULTQ_X",)))


def test_the_cli_passes_handler_and_api_settings(tmp_path: Path) -> None:
    output = tmp_path / "template.json"
    result = CliRunner().invoke(
        cli,
        [
            "deploy",
            "sam",
            "examples.private_embeddings.app:app",
            "--handler-variable",
            "VAULTQ_WORKER_KEYS",
            "--api-variable",
            "VAULTQ_WORKER_PUBLIC_KEY",
            "-o",
            str(output),
        ],
    )

    assert result.exit_code == 0, result.output
    parameters = json.loads(output.read_text())["Parameters"]
    assert {"VaultqWorkerKeys", "VaultqWorkerPublicKey"} <= set(parameters)
