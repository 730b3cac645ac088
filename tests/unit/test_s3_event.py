"""The S3 event JSON and the notification configuration, against S3's documented shape.

``tests/events/s3_put.json`` is an ``ObjectCreated:Put`` record in the shape of AWS's
"Event message structure" page (version 2.1), with concrete values.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaultq import errors
from vaultq.blobs import BucketNotification, EventOrigin, ObjectEvent, QueueNotifier, s3_event
from vaultq.blobs.notifications import encode_key, format_event_time, format_sequencer
from vaultq.blobs.protocol import validate_key
from vaultq.queues.sqlite import SqliteQueues

if TYPE_CHECKING:
    from collections.abc import Iterator

CANONICAL_PUT = Path(__file__).resolve().parents[1] / "events" / "s3_put.json"

CANONICAL_ORIGIN = EventOrigin(
    region="us-west-2",
    principal_id="AWS:AIDAEXAMPLEPRINCIPAL",
    owner_principal_id="A3NL1KOZZKEXAMPLE",
    source_ip_address="203.0.113.7",
    host_id="FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
)
CANONICAL_EVENT = ObjectEvent(
    name="ObjectCreated:Put",
    bucket="private-messages",
    key="tenant-1/inbox/hello world+1.bin",
    sequencer="0055AED6DCD90281E5",
    time_ms=1714979289123,  # 2024-05-06T07:08:09.123Z
    request_id="C3D13FE58DE4C810",
    size_bytes=1024,
    etag="0123456789abcdef0123456789abcdef",
)


def _object(event: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = event["Records"][0]["s3"]["object"]
    return entry


def test_a_put_event_is_exactly_the_canonical_s3_record() -> None:
    canonical = json.loads(CANONICAL_PUT.read_text())

    built = s3_event(CANONICAL_EVENT, configuration_id="embed-uploads", origin=CANONICAL_ORIGIN)

    assert built == canonical


def test_a_put_event_keeps_s3s_field_order() -> None:
    # Order does not change the JSON's meaning, but a diff against a real S3 event is
    # easier to read when it matches; this pins the order of the documented example.
    canonical = json.loads(CANONICAL_PUT.read_text())

    built = s3_event(CANONICAL_EVENT, configuration_id="embed-uploads", origin=CANONICAL_ORIGIN)

    assert list(built["Records"][0]) == list(canonical["Records"][0])
    assert list(_object(built)) == list(_object(canonical))


def test_a_delete_event_carries_only_key_and_sequencer() -> None:
    event = ObjectEvent(
        name="ObjectRemoved:Delete",
        bucket="private-messages",
        key="a b",
        sequencer=format_sequencer(7),
        time_ms=0,
        request_id="0000000000000001",
    )

    built = s3_event(event, configuration_id="changes", origin=EventOrigin())

    assert built["Records"][0]["eventName"] == "ObjectRemoved:Delete"
    assert _object(built) == {"key": "a+b", "sequencer": "000000000000000007"}


@pytest.mark.parametrize(
    ("key", "encoded"),
    [
        ("red flower.jpg", "red+flower.jpg"),  # AWS's own example
        ("a@b", "a%40b"),  # as recorded from S3
        ("this im + age.txt", "this+im+%2B+age.txt"),  # as recorded from S3
        ("dir/sub dir/file", "dir/sub+dir/file"),
        ("semi;colon:eq=amp&", "semi%3Bcolon%3Aeq%3Damp%26"),
        ("100%", "100%25"),
        ("ключ", "%D0%BA%D0%BB%D1%8E%D1%87"),
    ],
)
def test_keys_are_form_encoded_as_s3_events_carry_them(key: str, encoded: str) -> None:
    assert encode_key(key) == encoded


_KEY_CHARACTERS = st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters=("/", "\\"))
_SEGMENTS = st.text(_KEY_CHARACTERS, min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))


@given(st.lists(_SEGMENTS, min_size=1, max_size=5).map("/".join))
def test_unquote_plus_gives_back_every_valid_key(key: str) -> None:
    validate_key(key)

    assert unquote_plus(encode_key(key)) == key


@pytest.mark.parametrize(
    ("time_ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1714979289123, "2024-05-06T07:08:09.123Z"),
        (1714979289005, "2024-05-06T07:08:09.005Z"),
    ],
)
def test_event_time_is_iso_8601_utc_with_milliseconds(time_ms: int, text: str) -> None:
    assert format_event_time(time_ms) == text


def test_sequencers_are_fixed_width_hex_that_sort_as_numbers() -> None:
    values = [0, 9, 10, 255, 4096, 2**40]

    sequencers = [format_sequencer(v) for v in values]

    assert sequencers == sorted(sequencers)
    assert format_sequencer(255) == "0000000000000000FF"
    assert {len(s) for s in sequencers} == {18}


@pytest.mark.parametrize(
    ("region", "arn"),
    [
        ("eu-central-1", "arn:aws:s3:::bucket"),
        ("cn-north-1", "arn:aws-cn:s3:::bucket"),
        ("us-gov-west-1", "arn:aws-us-gov:s3:::bucket"),
    ],
)
def test_bucket_arns_name_the_partition_of_the_region(region: str, arn: str) -> None:
    event = s3_event(CANONICAL_EVENT, configuration_id="c", origin=EventOrigin(region=region))

    record = event["Records"][0]
    assert record["s3"]["bucket"]["arn"] == arn.replace("bucket", CANONICAL_EVENT.bucket)
    assert record["awsRegion"] == region


# -- notification configurations ----------------------------------------------------------


def test_a_notification_matches_its_events_prefix_and_suffix() -> None:
    uploads = BucketNotification("csv-jobs", prefix="in/", suffix=".csv")

    assert uploads.matches("ObjectCreated:Put", "in/data.csv")
    assert not uploads.matches("ObjectCreated:Put", "in/data.txt")
    assert not uploads.matches("ObjectCreated:Put", "out/data.csv")
    assert not uploads.matches("ObjectRemoved:Delete", "in/data.csv")


def test_a_wildcard_matches_every_event_of_its_family() -> None:
    removals = BucketNotification("gone", events=("s3:ObjectRemoved:*",))

    assert removals.matches("ObjectRemoved:Delete", "k")
    assert not removals.matches("ObjectCreated:Put", "k")


def test_the_configuration_id_defaults_to_the_queue() -> None:
    assert BucketNotification("uploads").configuration_id == "vaultq-uploads"
    assert BucketNotification("uploads", configuration_id="mine").configuration_id == "mine"


@pytest.mark.parametrize(
    "make",
    [
        lambda: BucketNotification("uploads", events=("s3:ObjectCreated:Copy",)),
        lambda: BucketNotification("uploads", events=("s3:ObjectCreated:*",) * 2),
        lambda: BucketNotification("uploads", events=()),
        lambda: BucketNotification("uploads", events="s3:ObjectCreated:*"),  # type: ignore[arg-type]
        lambda: BucketNotification("jobs.fifo"),
        lambda: BucketNotification("not a queue name"),
        lambda: BucketNotification("uploads", prefix="bad\x00prefix"),
        lambda: BucketNotification("uploads", configuration_id="has space"),
    ],
    ids=[
        "event vaultq never emits",
        "event named twice",
        "no events",
        "events as a string",
        "fifo queue",
        "bad queue name",
        "control character in prefix",
        "bad configuration id",
    ],
)
def test_invalid_notifications_are_refused(make: Any) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        make()


@pytest.fixture
def queues(tmp_path: Path) -> Iterator[SqliteQueues]:
    backend = SqliteQueues(tmp_path / "q.db")
    yield backend
    backend.close()


def test_overlapping_configurations_of_a_bucket_are_refused(queues: SqliteQueues) -> None:
    with pytest.raises(errors.InvalidParameterValue, match="overlap"):
        QueueNotifier(
            queues,
            {
                "uploads": [
                    BucketNotification("all", prefix="in/"),
                    BucketNotification("csv", prefix="in/csv/", events=("s3:ObjectCreated:Put",)),
                ]
            },
        )


def test_disjoint_configurations_of_a_bucket_are_accepted(queues: SqliteQueues) -> None:
    notifier = QueueNotifier(
        queues,
        {
            "uploads": [
                BucketNotification("csv", prefix="in/", suffix=".csv"),
                BucketNotification("json", prefix="in/", suffix=".json"),
                BucketNotification("gone", prefix="in/", events=("s3:ObjectRemoved:*",)),
            ]
        },
    )
    event = ObjectEvent(
        name="ObjectCreated:Put",
        bucket="uploads",
        key="in/a.csv",
        sequencer=format_sequencer(1),
        time_ms=0,
        request_id="0000000000000001",
        size_bytes=1,
        etag="0" * 32,
    )

    [message] = notifier.messages_for(event)

    assert message.queue == "csv"
    assert json.loads(message.body) == s3_event(
        event, configuration_id="vaultq-csv", origin=EventOrigin()
    )


def test_a_notifier_refuses_an_invalid_bucket_name(queues: SqliteQueues) -> None:
    with pytest.raises(errors.InvalidBucketName):
        QueueNotifier(queues, {"Not_A_Bucket": [BucketNotification("q")]})


def test_a_notifier_sends_the_message_to_its_queue(queues: SqliteQueues) -> None:
    queues.create_queue("csv")
    notifier = QueueNotifier(queues, {"uploads": [BucketNotification("csv")]})
    [message] = notifier.messages_for(dataclasses.replace(CANONICAL_EVENT, bucket="uploads"))

    notifier.send(message)

    [received] = queues.receive("csv")
    assert received.body == message.body
