"""S3 upload events on AWS: the App's bucket declaration becomes a real S3 bucket notification
to a real SQS queue (moto's HTTP server), with the event shape vaultq's handlers rely on. The
last tests show that signed URLs are S3's own presigned URLs, which vaultq checks itself.

Queues are made with boto3 here: the store needs only that they exist. Known moto 5.2
deviations, checked against AWS's documentation ("Event message structure", "Configuring
notifications with object key name filtering"):

- moto sends events for Put, Copy and multipart uploads only, never ``ObjectRemoved``; the
  delete test checks the configuration S3 keeps, which is what AWS acts on.
- moto URL-encodes ``/`` in event keys (``a%2Fb``); AWS leaves it as is. Both decode with
  ``unquote_plus``, which is what handlers must do, so the tests compare decoded keys.
- moto does not check that the queue policy lets S3 send; AWS refuses the configuration
  without it, so a test reads the policy back.

As AWS documents, putting a configuration sends one ``s3:TestEvent`` message (no
``Records``) to each queue; moto does too, and handlers must skip it.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import boto3
import pytest

from vaultq import errors
from vaultq.app import App
from vaultq.blobs import BucketNotification
from vaultq.blobs.s3 import S3Blobs
from vaultq.queues.sqlite import SqliteQueues

from ..aws_server import REGION
from . import blobs_fixtures

aws_session = blobs_fixtures.aws_session

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


@pytest.fixture
def sqs(aws_endpoint: str, aws_session: boto3.Session) -> Iterator[Any]:
    client = aws_session.client("sqs", endpoint_url=aws_endpoint)
    yield client
    client.close()


@pytest.fixture
def s3(aws_endpoint: str, aws_session: boto3.Session) -> Iterator[Any]:
    client = aws_session.client("s3", endpoint_url=aws_endpoint)
    before = blobs_fixtures.bucket_names(client)
    yield client
    blobs_fixtures.remove_buckets(client, blobs_fixtures.bucket_names(client) - before)
    client.close()


@pytest.fixture
def names() -> tuple[str, str]:
    """A bucket name and a queue name no other test uses."""
    suffix = uuid.uuid4().hex[:12]
    return f"b-{suffix}", f"q-{suffix}"


def _create_queue(sqs: Any, name: str) -> str:
    url: str = sqs.create_queue(QueueName=name)["QueueUrl"]
    return url


def _messages(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=300
        )
        if not answer.get("Messages"):
            return bodies
        bodies.extend(json.loads(message["Body"]) for message in answer["Messages"])


def _records(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """The event records on the queue, without the ``s3:TestEvent`` S3 sends on setup."""
    bodies = _messages(sqs, queue_url)
    return [record for body in bodies if "Records" in body for record in body["Records"]]


@pytest.fixture
def make_store(
    tmp_path: Path, aws_endpoint: str, aws_session: boto3.Session, s3: Any
) -> Iterator[Callable[..., S3Blobs]]:
    """Builds an S3 store given the App's notifier, as the composition root does. The
    notifier's own queue backend is never used on S3: S3 delivers the events itself."""
    with contextlib.ExitStack() as closing:

        def make(bucket: str, *notifications: BucketNotification) -> S3Blobs:
            app = App("uploads")
            for notification in notifications:
                app.queue(notification.queue)
            app.bucket(bucket, notifications=notifications)
            queues = SqliteQueues(tmp_path / "unused.db")
            closing.callback(queues.close)
            store = S3Blobs(
                region=REGION,
                endpoint_url=aws_endpoint,
                session=aws_session,
                notifier=app.notifier(queues),
            )
            closing.callback(store.close)
            return store

        yield make


def test_a_put_on_s3_sends_the_s3_event_to_the_configured_queue(
    make_store: Callable[..., S3Blobs], sqs: Any, names: tuple[str, str]
) -> None:
    bucket, queue = names
    queue_url = _create_queue(sqs, queue)
    store = make_store(bucket, BucketNotification(queue))
    store.create_bucket(bucket)

    info = store.put(bucket, "tenant 1/msg+1.bin", b"sealed")

    [record] = _records(sqs, queue_url)
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["eventSource"] == "aws:s3"
    assert record["awsRegion"] == REGION
    s3 = record["s3"]
    assert s3["configurationId"] == f"vaultq-{queue}"
    assert s3["bucket"]["name"] == bucket
    assert s3["bucket"]["arn"] == f"arn:aws:s3:::{bucket}"
    # AWS: "tenant+1/msg%2B1.bin"; moto 5.2 also encodes the "/" (see the module docstring).
    assert s3["object"]["key"].startswith("tenant+1")
    assert unquote_plus(s3["object"]["key"]) == info.key
    assert s3["object"]["size"] == 6
    assert s3["object"]["eTag"] == info.etag


def test_setting_up_notifications_sends_s3s_test_event_first(
    make_store: Callable[..., S3Blobs], sqs: Any, names: tuple[str, str]
) -> None:
    bucket, queue = names
    queue_url = _create_queue(sqs, queue)
    store = make_store(bucket, BucketNotification(queue))

    store.create_bucket(bucket)

    [test_event] = _messages(sqs, queue_url)
    assert test_event["Service"] == "Amazon S3"
    assert test_event["Event"] == "s3:TestEvent"
    assert test_event["Bucket"] == bucket


def test_prefix_and_suffix_filters_choose_the_keys_that_notify(
    make_store: Callable[..., S3Blobs], sqs: Any, names: tuple[str, str]
) -> None:
    bucket, queue = names
    queue_url = _create_queue(sqs, queue)
    store = make_store(bucket, BucketNotification(queue, prefix="in/", suffix=".csv"))
    store.create_bucket(bucket)

    for key in ("in/a.csv", "in/a.txt", "out/a.csv", "inbox/a.csv", "in/deep/b.csv"):
        store.put(bucket, key, b"x")

    keys = [unquote_plus(r["s3"]["object"]["key"]) for r in _records(sqs, queue_url)]
    assert sorted(keys) == ["in/a.csv", "in/deep/b.csv"]


def test_s3_keeps_the_declared_configuration_including_delete_events(
    make_store: Callable[..., S3Blobs], sqs: Any, s3: Any, names: tuple[str, str]
) -> None:
    """moto never sends ``ObjectRemoved`` events; AWS does for the configuration kept here."""
    bucket, queue = names
    queue_url = _create_queue(sqs, queue)
    declared = BucketNotification(
        queue, events=("s3:ObjectCreated:*", "s3:ObjectRemoved:*"), prefix="in box/"
    )
    store = make_store(bucket, declared)

    store.create_bucket(bucket)

    [kept] = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    assert kept["QueueArn"] == queue_arn["Attributes"]["QueueArn"]
    assert kept["Id"] == declared.configuration_id
    assert sorted(kept["Events"]) == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    # AWS matches filters against the key as events encode it. AWS answers the rule names
    # capitalised ("Prefix"); moto echoes them as they were put ("prefix").
    rules = kept["Filter"]["Key"]["FilterRules"]
    assert [(rule["Name"].lower(), rule["Value"]) for rule in rules] == [("prefix", "in+box/")]


def test_the_queue_policy_lets_only_this_bucket_send_once_however_often_it_is_created(
    make_store: Callable[..., S3Blobs], sqs: Any, names: tuple[str, str]
) -> None:
    """AWS refuses a queue notification unless the queue's policy lets S3 send; moto does not
    check, so the policy is read back."""
    bucket, queue = names
    queue_url = _create_queue(sqs, queue)
    store = make_store(bucket, BucketNotification(queue))

    store.create_bucket(bucket)
    store.create_bucket(bucket)

    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["Policy", "QueueArn"]
    )["Attributes"]
    [statement] = json.loads(attributes["Policy"])["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == attributes["QueueArn"]
    assert statement["Condition"]["ArnLike"] == {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}


def test_a_bucket_notifying_a_missing_queue_is_refused(
    make_store: Callable[..., S3Blobs], names: tuple[str, str]
) -> None:
    bucket, queue = names
    store = make_store(bucket, BucketNotification(queue))

    with pytest.raises(errors.QueueDoesNotExist):
        store.create_bucket(bucket)


def test_a_presigned_get_url_downloads_the_object_from_s3(
    make_store: Callable[..., S3Blobs], names: tuple[str, str]
) -> None:
    bucket, _queue = names
    store = make_store(bucket)
    store.create_bucket(bucket)
    store.put(bucket, "dir/report 1.csv", b"a,b\n")
    url = store.signed_url(bucket, "dir/report 1.csv", expires_in_seconds=60)

    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - moto on loopback
        assert response.read() == b"a,b\n"
    assert "X-Amz-Signature=" in url
    assert store.verify_signed_url(url) == (bucket, "dir/report 1.csv")


def test_a_presigned_put_url_uploads_to_s3(
    make_store: Callable[..., S3Blobs], names: tuple[str, str]
) -> None:
    bucket, _queue = names
    store = make_store(bucket)
    store.create_bucket(bucket)
    url = store.signed_url(bucket, "in/upload.bin", expires_in_seconds=60, method="PUT")

    upload = urllib.request.Request(  # noqa: S310 - moto on loopback
        url,
        data=b"sealed bytes",
        method="PUT",
        # urllib's default (form-encoded) makes moto read the body as a form and store nothing.
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(upload, timeout=5):  # noqa: S310 - moto on loopback
        pass

    assert store.get(bucket, "in/upload.bin")[0] == b"sealed bytes"
    assert store.verify_signed_url(url, method="PUT") == (bucket, "in/upload.bin")


def test_a_url_presigned_with_other_credentials_is_refused(
    make_store: Callable[..., S3Blobs], aws_endpoint: str, names: tuple[str, str]
) -> None:
    """S3 refuses it (SignatureDoesNotMatch); moto would serve it, so vaultq checks."""
    bucket, _queue = names
    ours = make_store(bucket)
    other_account = boto3.Session(
        aws_access_key_id="AKIDOTHERACCOUNT",
        aws_secret_access_key="another-secret",  # noqa: S106 - a made-up test credential
        region_name=REGION,
    )
    theirs = S3Blobs(region=REGION, endpoint_url=aws_endpoint, session=other_account)
    url = theirs.signed_url(bucket, "k", expires_in_seconds=300)
    theirs.close()

    with pytest.raises(errors.InvalidSignature) as raised:
        ours.verify_signed_url(url)
    assert not isinstance(raised.value, errors.SignatureExpired)
