"""Upload events: which writes notify which queue, and the exact S3 event JSON they carry.

A :class:`BucketNotification` is S3's queue configuration (event types, a key prefix and a
suffix). :func:`s3_event` builds the message S3 sends to SQS, event version 2.1, so that a
handler written for S3 events runs unchanged. :class:`QueueNotifier` puts those messages on
vaultq queues; a store records them in its outbox first, so that none is lost (see
``vaultq.blobs.local``).
"""

from __future__ import annotations

import json
import re
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote_plus

from vaultq import errors
from vaultq.blobs.protocol import validate_bucket_name, validate_prefix
from vaultq.queues.protocol import OutgoingMessage, validate_queue_name

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from vaultq.queues.protocol import QueueBackend

ObjectEventName = Literal["ObjectCreated:Put", "ObjectRemoved:Delete"]
OBJECT_CREATED_PUT: ObjectEventName = "ObjectCreated:Put"
OBJECT_REMOVED_DELETE: ObjectEventName = "ObjectRemoved:Delete"
#: The event types a configuration may name: the ones vaultq emits, with their wildcards.
SUPPORTED_EVENT_TYPES = frozenset(
    {"s3:ObjectCreated:*", "s3:ObjectCreated:Put", "s3:ObjectRemoved:*", "s3:ObjectRemoved:Delete"}
)
EVENT_VERSION = "2.1"
S3_SCHEMA_VERSION = "1.0"
SEQUENCER_HEX_DIGITS = 18  # as wide as the sequencers in S3's own examples

_CONFIGURATION_ID = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True, slots=True)
class BucketNotification:
    """S3's queue configuration: send ``events`` on keys with ``prefix`` and ``suffix`` to
    ``queue``. Filters compare the plain key (S3 takes them URL-encoded)."""

    queue: str
    _: KW_ONLY
    events: tuple[str, ...] = ("s3:ObjectCreated:*",)
    prefix: str = ""
    suffix: str = ""
    #: The ``configurationId`` in the events; ``vaultq-<queue>`` when not given.
    configuration_id: str = ""

    def __post_init__(self) -> None:
        validate_queue_name(self.queue)
        if self.queue.endswith(".fifo"):
            raise errors.InvalidParameterValue("S3 cannot notify FIFO queues; use a standard one")
        _validate_events(self.events)
        validate_prefix(self.prefix)
        validate_prefix(self.suffix)
        if not self.configuration_id:
            object.__setattr__(self, "configuration_id", f"vaultq-{self.queue}")
        if not _CONFIGURATION_ID.match(self.configuration_id):
            raise errors.InvalidParameterValue("a configuration id is 1-255 printable chars")

    def matches(self, event_name: ObjectEventName, key: str) -> bool:
        family = event_name.split(":", 1)[0]
        wanted = f"s3:{event_name}" in self.events or f"s3:{family}:*" in self.events
        return wanted and key.startswith(self.prefix) and key.endswith(self.suffix)

    def overlaps(self, other: BucketNotification) -> bool:
        """True when one key and event type could match both, which S3 refuses."""
        shared_event = any(_event_types_meet(a, b) for a in self.events for b in other.events)
        prefixes = self.prefix.startswith(other.prefix) or other.prefix.startswith(self.prefix)
        suffixes = self.suffix.endswith(other.suffix) or other.suffix.endswith(self.suffix)
        return shared_event and prefixes and suffixes


@dataclass(frozen=True, slots=True, kw_only=True)
class EventOrigin:
    """Who and where, as an S3 event reports them. Defaults describe the embedded store."""

    region: str = "us-east-1"
    #: ``userIdentity.principalId``: who made the request.
    principal_id: str = "vaultq"
    #: ``bucket.ownerIdentity.principalId``.
    owner_principal_id: str = "vaultq"
    source_ip_address: str = "127.0.0.1"
    #: ``x-amz-id-2``: the host that processed the request.
    host_id: str = "vaultq-local"


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectEvent:
    """A write that happened: the input of :func:`s3_event`."""

    name: ObjectEventName
    bucket: str
    key: str
    #: Hex, increasing per key (see :func:`format_sequencer`).
    sequencer: str
    time_ms: int
    request_id: str
    #: Given for ``ObjectCreated`` events; S3 leaves both out of ``ObjectRemoved`` events.
    size_bytes: int | None = None
    etag: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventMessage:
    """One S3 event message (a JSON string) for one queue."""

    queue: str
    body: str


class Notifier(Protocol):
    """What a blob store asks of its notifier: the messages a write causes, and a send."""

    def messages_for(self, event: ObjectEvent) -> list[EventMessage]:
        """Pure: the messages to record (in the store's outbox) for ``event``."""
        ...

    def send(self, message: EventMessage) -> None:
        """Send one message; raises a ``VaultqError`` when it could not be sent."""
        ...

    @property
    def notifications(self) -> Mapping[str, tuple[BucketNotification, ...]]:
        """Each declared bucket's configurations; a store on S3 hands them to S3."""
        ...


class QueueNotifier:
    """Delivers S3 events to vaultq queues, per bucket notification configuration.

    As S3 does, it refuses two configurations of one bucket that could match the same key
    for the same event type: one event goes to one queue (fan out with a handler instead).
    """

    def __init__(
        self,
        queues: QueueBackend,
        notifications: Mapping[str, Sequence[BucketNotification]],
        *,
        origin: EventOrigin | None = None,
    ) -> None:
        self._queues = queues
        self._origin = origin or EventOrigin()
        self._notifications = {bucket: tuple(each) for bucket, each in notifications.items()}
        for bucket, configurations in self._notifications.items():
            validate_bucket_name(bucket)
            check_configurations(bucket, configurations)

    def messages_for(self, event: ObjectEvent) -> list[EventMessage]:
        return [
            EventMessage(
                queue=configuration.queue,
                body=json.dumps(
                    s3_event(
                        event,
                        configuration_id=configuration.configuration_id,
                        origin=self._origin,
                    ),
                    separators=(",", ":"),
                ),
            )
            for configuration in self._notifications.get(event.bucket, ())
            if configuration.matches(event.name, event.key)
        ]

    def send(self, message: EventMessage) -> None:
        self._queues.send(message.queue, OutgoingMessage(body=message.body))

    @property
    def notifications(self) -> Mapping[str, tuple[BucketNotification, ...]]:
        return MappingProxyType(self._notifications)


def s3_event(event: ObjectEvent, *, configuration_id: str, origin: EventOrigin) -> dict[str, Any]:
    """The event S3 sends to SQS for ``event``: ``{"Records": [record]}``, version 2.1."""
    return {
        "Records": [
            {
                "eventVersion": EVENT_VERSION,
                "eventSource": "aws:s3",
                "awsRegion": origin.region,
                "eventTime": format_event_time(event.time_ms),
                "eventName": event.name,
                "userIdentity": {"principalId": origin.principal_id},
                "requestParameters": {"sourceIPAddress": origin.source_ip_address},
                "responseElements": {
                    "x-amz-request-id": event.request_id,
                    "x-amz-id-2": origin.host_id,
                },
                "s3": {
                    "s3SchemaVersion": S3_SCHEMA_VERSION,
                    "configurationId": configuration_id,
                    "bucket": {
                        "name": event.bucket,
                        "ownerIdentity": {"principalId": origin.owner_principal_id},
                        "arn": bucket_arn(event.bucket, region=origin.region),
                    },
                    "object": _object_entry(event),
                },
            }
        ]
    }


def encode_key(key: str) -> str:
    """A key as S3 events carry it: form-encoded (space as ``+``, ``+`` as ``%2B``), with
    ``/`` left as it is. ``urllib.parse.unquote_plus`` gives the key back."""
    return quote_plus(key, safe="/")


def format_event_time(time_ms: int) -> str:
    """ISO-8601 in UTC with milliseconds, as S3 writes it: ``1970-01-01T00:00:00.000Z``."""
    moment = datetime.fromtimestamp(time_ms // 1000, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{time_ms % 1000:03d}Z"


def format_sequencer(value: int) -> str:
    """An increasing counter as S3's hex sequencer; fixed width, so strings sort as numbers."""
    return f"{value:0{SEQUENCER_HEX_DIGITS}X}"


def bucket_arn(bucket: str, *, region: str) -> str:
    return f"arn:{_partition(region)}:s3:::{bucket}"


def _object_entry(event: ObjectEvent) -> dict[str, Any]:
    entry: dict[str, Any] = {"key": encode_key(event.key)}
    if event.name.startswith("ObjectCreated:"):
        entry["size"] = event.size_bytes
        entry["eTag"] = event.etag
    entry["sequencer"] = event.sequencer
    return entry


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _validate_events(events: tuple[str, ...]) -> None:
    if not isinstance(events, tuple) or not events:
        raise errors.InvalidParameterValue("events is a non-empty tuple of S3 event types")
    unknown = sorted(set(events) - SUPPORTED_EVENT_TYPES)
    if unknown:
        raise errors.InvalidParameterValue(
            f"unsupported event types {unknown}; vaultq emits {sorted(SUPPORTED_EVENT_TYPES)}"
        )
    if len(set(events)) != len(events):
        raise errors.InvalidParameterValue("an event type is named twice")


def _event_types_meet(a: str, b: str) -> bool:
    family_a, action_a = a.rsplit(":", 1)
    family_b, action_b = b.rsplit(":", 1)
    return family_a == family_b and (action_a == action_b or "*" in (action_a, action_b))


def check_configurations(bucket: str, configurations: Sequence[BucketNotification]) -> None:
    """Refuse what S3 refuses in one bucket's configuration: repeated ids, overlapping filters."""
    ids = [configuration.configuration_id for configuration in configurations]
    if len(set(ids)) != len(ids):
        raise errors.InvalidParameterValue(f"bucket {bucket!r}: configuration ids must differ")
    for index, first in enumerate(configurations):
        for second in configurations[index + 1 :]:
            if first.overlaps(second):
                raise errors.InvalidParameterValue(
                    f"bucket {bucket!r}: configurations for {first.queue!r} and "
                    f"{second.queue!r} overlap (same event type, overlapping prefix and suffix)"
                )
