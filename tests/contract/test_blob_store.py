"""The blob contract: S3's object verbs, key and bucket rules, listings and signed URLs.

The first part runs against every backend (``blobs``: the embedded store and S3 on moto's
HTTP server); the last part tests what only the embedded store has: its files on disk, its
upload events and their outbox (S3's own notifications: ``test_blob_notifications_s3.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import stat
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus, urlsplit

import pytest

from vaultq import errors
from vaultq.blobs import BucketNotification, QueueNotifier
from vaultq.blobs.local import LocalBlobs
from vaultq.blobs.protocol import MAX_SIGNED_URL_SECONDS
from vaultq.queues.sqlite import SqliteQueues

from . import blobs_fixtures
from .blobs_fixtures import MAX_OBJECT_SIZE_BYTES, SIGNING_SECRET

# The blob fixtures live beside the shared conftest; naming them here makes them visible.
blobs = blobs_fixtures.blobs
bucket = blobs_fixtures.bucket
local_blobs = blobs_fixtures.local_blobs
s3_blobs = blobs_fixtures.s3_blobs
aws_session = blobs_fixtures.aws_session

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from vaultq.blobs import BlobStore
    from vaultq.queues import QueueBackend

    from .conftest import Clock


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# -- buckets ------------------------------------------------------------------------------


def test_a_created_bucket_is_listed(blobs: BlobStore, clock: Clock) -> None:
    created = blobs.create_bucket("reports")

    assert created.name == "reports"
    assert abs(created.created_at_ms - clock() * 1000) < 5_000
    assert "reports" in [b.name for b in blobs.list_buckets()]


def test_buckets_are_listed_by_name(blobs: BlobStore) -> None:
    for name in ("zeta", "alpha", "mid.dle"):
        blobs.create_bucket(name)

    names = [b.name for b in blobs.list_buckets()]

    assert names == sorted(names)


def test_creating_a_bucket_again_changes_nothing(blobs: BlobStore, clock: Clock) -> None:
    first = blobs.create_bucket("uploads")
    blobs.put("uploads", "k", b"kept")
    clock.advance(60)

    again = blobs.create_bucket("uploads")

    assert again == first
    assert [b.name for b in blobs.list_buckets()].count("uploads") == 1
    assert blobs.get("uploads", "k")[0] == b"kept"


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "Uploads",
        "under_score",
        "-leading-hyphen",
        "trailing-hyphen-",
        ".leading-dot",
        "double..dot",
        "has space",
        "192.168.5.4",
        "xn--punycode",
        "sthree-bucket",
        "amzn-s3-demo-bucket",
        "bucket-s3alias",
        "bucket--ol-s3",
        "_vaultq",
    ],
)
def test_bucket_names_outside_s3_rules_are_refused(blobs: BlobStore, name: str) -> None:
    with pytest.raises(errors.InvalidBucketName) as raised:
        blobs.create_bucket(name)
    assert raised.value.code == "InvalidBucketName"
    assert name not in [b.name for b in blobs.list_buckets()]


@pytest.mark.parametrize("name", ["abc", "a" * 63, "my.bucket-1", "1.2.3", "0bucket9"])
def test_bucket_names_inside_s3_rules_are_accepted(blobs: BlobStore, name: str) -> None:
    assert blobs.create_bucket(name).name == name


@pytest.mark.parametrize(
    "operation",
    [
        lambda store: store.put("missing", "k", b"x"),
        lambda store: store.get("missing", "k"),
        lambda store: store.head("missing", "k"),
        lambda store: store.delete("missing", "k"),
        lambda store: store.list("missing"),
    ],
    ids=["put", "get", "head", "delete", "list"],
)
def test_object_operations_on_a_missing_bucket_raise_no_such_bucket(
    blobs: BlobStore, operation: Callable[[BlobStore], object]
) -> None:
    with pytest.raises(errors.NoSuchBucket) as raised:
        operation(blobs)
    assert raised.value.code == "NoSuchBucket"


# -- objects ------------------------------------------------------------------------------


def test_put_then_get_returns_the_bytes_and_their_metadata(
    blobs: BlobStore, bucket: str, clock: Clock
) -> None:
    data = b"ciphertext \x00\xff bytes"

    stored = blobs.put(bucket, "tenant/message-1", data, content_type="application/octet-stream")
    got, info = blobs.get(bucket, "tenant/message-1")

    assert got == data
    assert info == stored
    assert info.etag == _md5(data)  # S3's ETag of a single-part upload
    assert info.size_bytes == len(data)
    assert info.content_type == "application/octet-stream"
    assert abs(info.last_modified_ms - clock() * 1000) < 5_000


def test_content_type_defaults_to_s3s_binary_octet_stream(blobs: BlobStore, bucket: str) -> None:
    assert blobs.put(bucket, "k", b"x").content_type == "binary/octet-stream"


@pytest.mark.parametrize("content_type", ["", "text/plain\r\nX-Injected: 1", "é/x", "a" * 257])
def test_malformed_content_types_are_refused(
    blobs: BlobStore, bucket: str, content_type: str
) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        blobs.put(bucket, "k", b"x", content_type=content_type)
    with pytest.raises(errors.NoSuchKey):
        blobs.head(bucket, "k")


def test_head_answers_what_get_answers(blobs: BlobStore, bucket: str) -> None:
    blobs.put(bucket, "k", b"payload", content_type="text/csv")

    assert blobs.head(bucket, "k") == blobs.get(bucket, "k")[1]


def test_put_replaces_the_whole_object(blobs: BlobStore, bucket: str, clock: Clock) -> None:
    blobs.put(bucket, "k", b"a much longer first version", content_type="text/plain")
    clock.advance(5)

    second = blobs.put(bucket, "k", b"v2", content_type="application/json")

    data, info = blobs.get(bucket, "k")
    assert data == b"v2"
    assert info == second
    assert info.etag == _md5(b"v2")
    assert info.content_type == "application/json"


def test_an_empty_object_round_trips(blobs: BlobStore, bucket: str) -> None:
    blobs.put(bucket, "empty", b"")

    data, info = blobs.get(bucket, "empty")

    assert data == b""
    assert info.size_bytes == 0
    assert info.etag == "d41d8cd98f00b204e9800998ecf8427e"


def test_every_byte_value_round_trips(blobs: BlobStore, bucket: str) -> None:
    data = bytes(range(256)) * 16

    blobs.put(bucket, "binary", data)

    assert blobs.get(bucket, "binary")[0] == data


def test_getting_a_missing_key_raises_no_such_key(blobs: BlobStore, bucket: str) -> None:
    with pytest.raises(errors.NoSuchKey) as raised:
        blobs.get(bucket, "never-written")
    assert raised.value.code == "NoSuchKey"
    with pytest.raises(errors.NoSuchKey):
        blobs.head(bucket, "never-written")


def test_a_deleted_object_is_gone(blobs: BlobStore, bucket: str) -> None:
    blobs.put(bucket, "k", b"x")

    blobs.delete(bucket, "k")

    with pytest.raises(errors.NoSuchKey):
        blobs.get(bucket, "k")
    assert blobs.list(bucket).objects == ()


def test_deleting_a_missing_key_is_not_an_error(blobs: BlobStore, bucket: str) -> None:
    blobs.put(bucket, "other", b"x")

    blobs.delete(bucket, "never-written")
    blobs.delete(bucket, "never-written")

    assert [o.key for o in blobs.list(bucket).objects] == ["other"]


def test_an_object_of_the_maximum_size_is_stored(blobs: BlobStore, bucket: str) -> None:
    data = b"m" * MAX_OBJECT_SIZE_BYTES

    blobs.put(bucket, "max", data)

    assert blobs.get(bucket, "max")[0] == data


def test_an_object_over_the_maximum_size_is_refused(blobs: BlobStore, bucket: str) -> None:
    with pytest.raises(errors.EntityTooLarge) as raised:
        blobs.put(bucket, "big", b"m" * (MAX_OBJECT_SIZE_BYTES + 1))
    assert raised.value.code == "EntityTooLarge"
    with pytest.raises(errors.NoSuchKey):
        blobs.head(bucket, "big")


def test_keys_a_file_system_cannot_hold_side_by_side_are_separate_objects(
    blobs: BlobStore, bucket: str
) -> None:
    # "a" and "a/b" (file and directory), "A" and "a" (case-insensitive disks), and a
    # segment longer than a file name may be (255 bytes) are all valid S3 keys.
    keys = ["a", "a/b", "A", "a/b/c", "s" * 300, "s" * 300 + "/t"]
    for key in keys:
        blobs.put(bucket, key, key.encode())

    for key in keys:
        assert blobs.get(bucket, key)[0] == key.encode()


BAD_KEYS = [
    "",
    "/absolute",
    "..",
    "../escape",
    "a/../../escape",
    "a/..",
    ".",
    "a/./b",
    "a//b",
    "trailing/",
    "back\\slash",
    "..\\escape",
    "nul\x00byte",
    "new\nline",
    "tab\tchar",
    "del\x7f",
    "c1\x85control",
    "x" * 1025,
    "é" * 513,  # 1026 bytes of UTF-8
    "lone\ud800surrogate",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_outside_the_rules_are_refused(blobs: BlobStore, bucket: str, key: str) -> None:
    with pytest.raises(errors.InvalidObjectKey) as raised:
        blobs.put(bucket, key, b"x")
    assert raised.value.code == "InvalidObjectKey"
    assert blobs.list(bucket).objects == ()


@pytest.mark.parametrize(
    "operation",
    [
        lambda store, bucket: store.get(bucket, "../x"),
        lambda store, bucket: store.head(bucket, "../x"),
        lambda store, bucket: store.delete(bucket, "../x"),
        lambda store, bucket: store.signed_url(bucket, "../x", expires_in_seconds=60),
    ],
    ids=["get", "head", "delete", "signed_url"],
)
def test_every_operation_refuses_a_traversal_key(
    blobs: BlobStore, bucket: str, operation: Callable[[BlobStore, str], object]
) -> None:
    with pytest.raises(errors.InvalidObjectKey):
        operation(blobs, bucket)


@pytest.mark.parametrize(
    "key",
    [
        "x" * 1024,
        "é" * 512,
        "..hidden",
        "a..b/c..",
        "a/.profile",
        "%2e%2e/%2f",
        "spaces and+plus&equals=?#",
        "ключ/文件.bin",
    ],
)
def test_unusual_but_valid_keys_round_trip(blobs: BlobStore, bucket: str, key: str) -> None:
    blobs.put(bucket, key, b"value")

    assert blobs.get(bucket, key)[0] == b"value"
    assert [o.key for o in blobs.list(bucket).objects] == [key]


# -- listing ------------------------------------------------------------------------------


def test_list_returns_keys_in_utf8_byte_order(blobs: BlobStore, bucket: str) -> None:
    keys = ["b", "a/b", "Z", "ä", "a", "a-b", "文"]
    for key in keys:
        blobs.put(bucket, key, b"x")

    listed = [o.key for o in blobs.list(bucket).objects]

    assert listed == sorted(keys, key=lambda k: k.encode())


def test_list_carries_each_objects_metadata(blobs: BlobStore, bucket: str) -> None:
    stored = blobs.put(bucket, "k", b"data", content_type="text/plain")

    assert blobs.list(bucket).objects == (stored,)


def test_list_filters_by_prefix(blobs: BlobStore, bucket: str) -> None:
    for key in ("in/a.csv", "in/b.csv", "inbox/c.csv", "out/a.csv", "in"):
        blobs.put(bucket, key, b"x")

    listed = [o.key for o in blobs.list(bucket, "in/").objects]

    assert listed == ["in/a.csv", "in/b.csv"]


def test_list_pages_through_every_object_once(blobs: BlobStore, bucket: str) -> None:
    keys = {f"k{i:03d}" for i in range(25)}
    for key in keys:
        blobs.put(bucket, key, b"x")

    pages, cursor = [], None
    while True:
        page = blobs.list(bucket, limit=10, cursor=cursor)
        pages.append([o.key for o in page.objects])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert [len(p) for p in pages] == [10, 10, 5]
    assert [k for p in pages for k in p] == sorted(keys)


def test_a_page_that_ends_the_listing_has_no_cursor(blobs: BlobStore, bucket: str) -> None:
    for i in range(10):
        blobs.put(bucket, f"k{i}", b"x")

    page = blobs.list(bucket, limit=10)

    assert len(page.objects) == 10
    assert page.next_cursor is None


def test_paging_keeps_the_prefix(blobs: BlobStore, bucket: str) -> None:
    for key in ("p/1", "p/2", "p/3", "q/1"):
        blobs.put(bucket, key, b"x")

    first = blobs.list(bucket, "p/", limit=2)
    second = blobs.list(bucket, "p/", limit=2, cursor=first.next_cursor)

    assert [o.key for o in second.objects] == ["p/3"]
    assert second.next_cursor is None


def test_an_empty_bucket_lists_nothing(blobs: BlobStore, bucket: str) -> None:
    page = blobs.list(bucket)

    assert page.objects == ()
    assert page.next_cursor is None


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_list_limits_outside_1_to_1000_are_refused(
    blobs: BlobStore, bucket: str, limit: int
) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        blobs.list(bucket, limit=limit)


def test_a_cursor_not_from_this_listing_is_refused(blobs: BlobStore, bucket: str) -> None:
    for key in ("p/1", "p/2", "q/1"):
        blobs.put(bucket, key, b"x")
    cursor = blobs.list(bucket, "p/", limit=1).next_cursor
    assert cursor is not None

    with pytest.raises(errors.InvalidParameterValue):
        blobs.list(bucket, "q/", cursor=cursor)
    with pytest.raises(errors.InvalidParameterValue):
        blobs.list(bucket, cursor="not a cursor")


# -- signed URLs --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["report.csv", "dir/sub dir/a+b%c?d#e&f=g", "ключ/文件"])
def test_a_signed_url_grants_its_bucket_and_key(blobs: BlobStore, bucket: str, key: str) -> None:
    url = blobs.signed_url(bucket, key, expires_in_seconds=300)

    assert blobs.verify_signed_url(url) == (bucket, key)


def test_a_signed_url_is_valid_until_its_expiry(
    blobs: BlobStore, bucket: str, clock: Clock
) -> None:
    url = blobs.signed_url(bucket, "k", expires_in_seconds=60)
    clock.advance(59)

    assert blobs.verify_signed_url(url) == (bucket, "k")


def test_a_signed_url_expires(blobs: BlobStore, bucket: str, clock: Clock) -> None:
    url = blobs.signed_url(bucket, "k", expires_in_seconds=60)
    clock.advance(62)

    with pytest.raises(errors.SignatureExpired) as raised:
        blobs.verify_signed_url(url)
    assert raised.value.code == "SignatureExpired"


# The tampers name the URL's parts by role, not by backend: the expiry parameter is the one
# whose name ends with "Expires" (X-Vaultq-Expires, or SigV4's X-Amz-Expires on S3) and the
# signature the one ending with "Signature". moto checks neither, so on S3 these refusals are
# vaultq's own check, which must agree with what S3 documents for presigned URLs.
def _parameter_named(url: str, ending: str) -> str:
    [name] = [
        pair.partition("=")[0]
        for pair in urlsplit(url).query.split("&")
        if pair.partition("=")[0].endswith(ending)
    ]
    return name


def _swap_key(url: str) -> str:
    return url.replace("/secret.csv?", "/other.csv?")


def _extend_expiry(url: str) -> str:
    name = _parameter_named(url, "Expires")
    head, _, rest = url.partition(f"{name}=")
    expires, separator, tail = rest.partition("&")
    return f"{head}{name}={int(expires) + 3600}{separator}{tail}"


def _flip_signature_digit(url: str) -> str:
    assert _parameter_named(url, "Signature") in url.rpartition("&")[2]  # the last parameter
    last = url[-1]
    return url[:-1] + ("0" if last != "0" else "1")


def _drop_signature(url: str) -> str:
    name = _parameter_named(url, "Signature")
    head, _, _rest = url.partition(f"&{name}=")
    return head


def _other_bucket(url: str) -> str:
    changed = re.sub(r"/([^/?]+)/secret\.csv\?", r"/x\1/secret.csv?", url, count=1)
    assert changed != url
    return changed


TAMPERS = {
    "other key": _swap_key,
    "longer expiry": _extend_expiry,
    "changed signature": _flip_signature_digit,
    "no signature": _drop_signature,
    "extra parameter": lambda url: url + f"&{_parameter_named(url, 'Expires')}=1",
    "other bucket": _other_bucket,
    "not a url": lambda url: "garbage",
}


@pytest.mark.parametrize("tamper", TAMPERS.values(), ids=TAMPERS.keys())
def test_a_changed_signed_url_is_refused(
    blobs: BlobStore, bucket: str, tamper: Callable[[str], str]
) -> None:
    url = blobs.signed_url(bucket, "secret.csv", expires_in_seconds=300)

    with pytest.raises(errors.InvalidSignature) as raised:
        blobs.verify_signed_url(tamper(url))
    assert not isinstance(raised.value, errors.SignatureExpired)
    assert raised.value.code == "SignatureDoesNotMatch"


def test_a_url_signed_for_get_does_not_allow_put(blobs: BlobStore, bucket: str) -> None:
    url = blobs.signed_url(bucket, "k", expires_in_seconds=300)

    with pytest.raises(errors.InvalidSignature):
        blobs.verify_signed_url(url, method="PUT")


def test_a_url_signed_for_put_allows_put(blobs: BlobStore, bucket: str) -> None:
    url = blobs.signed_url(bucket, "upload/1", expires_in_seconds=300, method="PUT")

    assert blobs.verify_signed_url(url, method="PUT") == (bucket, "upload/1")


@pytest.mark.parametrize("seconds", [0, -5, MAX_SIGNED_URL_SECONDS + 1])
def test_signed_url_lifetimes_outside_one_second_to_seven_days_are_refused(
    blobs: BlobStore, bucket: str, seconds: int
) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        blobs.signed_url(bucket, "k", expires_in_seconds=seconds)


def test_a_seven_day_signed_url_is_allowed(blobs: BlobStore, bucket: str, clock: Clock) -> None:
    url = blobs.signed_url(bucket, "k", expires_in_seconds=MAX_SIGNED_URL_SECONDS)
    clock.advance(MAX_SIGNED_URL_SECONDS - 10)

    assert blobs.verify_signed_url(url) == (bucket, "k")


# -- the embedded store: files, events and the outbox ------------------------------------


def _files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


def test_no_key_can_place_a_file_outside_its_bucket(local_blobs: LocalBlobs) -> None:
    root = local_blobs.root
    local_blobs.create_bucket("box")
    for key in BAD_KEYS:
        with pytest.raises(errors.InvalidObjectKey):
            local_blobs.put("box", key, b"x")
    for key in ("..hidden", "%2e%2e/%2fetc", "a/.b/..c", "spaces and+plus"):
        local_blobs.put("box", key, b"x")

    outside = {
        path
        for path in _files_under(root.parent)
        if not path.is_relative_to(root / "box") and not path.is_relative_to(root / "_vaultq")
    }
    assert outside == set()
    assert len(_files_under(root / "box")) == 4


def test_object_files_are_readable_by_their_owner_only(local_blobs: LocalBlobs) -> None:
    local_blobs.create_bucket("box")
    local_blobs.put("box", "private", b"ciphertext")

    [path] = _files_under(local_blobs.root / "box")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"ciphertext"


@pytest.fixture
def closing() -> Iterator[contextlib.ExitStack]:
    """Closes what a test opens, whether it passes or fails."""
    with contextlib.ExitStack() as stack:
        yield stack


def _open(closing: contextlib.ExitStack, root: Path, **options: Any) -> LocalBlobs:
    options.setdefault("signing_secret", SIGNING_SECRET)
    store = LocalBlobs(root, **options)
    closing.callback(store.close)
    return store


def test_a_reader_never_sees_part_of_an_object(
    tmp_path: Path, closing: contextlib.ExitStack
) -> None:
    store = _open(closing, tmp_path)
    store.create_bucket("box")
    versions = [bytes([i]) * (512 * 1024 + i) for i in range(4)]
    store.put("box", "hot", versions[0])
    done = threading.Event()

    def writer() -> None:
        for i in range(40):
            store.put("box", "hot", versions[i % 4])
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set():
        data, info = store.get("box", "hot")
        assert data in versions
        assert info.etag == _md5(data)
        reads += 1
    thread.join()
    assert reads > 0


def test_objects_survive_reopening_the_store(tmp_path: Path, closing: contextlib.ExitStack) -> None:
    store = _open(closing, tmp_path)
    store.create_bucket("box")
    stored = store.put("box", "k", b"durable")
    store.close()

    reopened = _open(closing, tmp_path)

    assert reopened.get("box", "k") == (b"durable", stored)
    assert [b.name for b in reopened.list_buckets()] == ["box"]


def test_a_url_signed_by_another_secret_is_refused(
    tmp_path: Path, closing: contextlib.ExitStack
) -> None:
    ours = _open(closing, tmp_path / "ours")
    theirs = _open(
        closing, tmp_path / "theirs", signing_secret=b"another-secret-of-32-bytes-length"
    )
    url = theirs.signed_url("box", "k", expires_in_seconds=300)

    with pytest.raises(errors.InvalidSignature):
        ours.verify_signed_url(url)


@pytest.mark.parametrize("secret", [b"", b"short", b"x" * 31])
def test_a_short_signing_secret_is_refused(tmp_path: Path, secret: bytes) -> None:
    with pytest.raises(errors.InvalidSettings):
        LocalBlobs(tmp_path, signing_secret=secret)


def test_garbage_collection_removes_only_unreferenced_old_files(
    local_blobs: LocalBlobs, clock: Clock
) -> None:
    local_blobs.create_bucket("box")
    local_blobs.put("box", "kept", b"still here")
    orphan = local_blobs.root / "box" / "ab" / ("ab" + "0" * 30)
    orphan.parent.mkdir()
    orphan.write_bytes(b"left by a crashed put")
    half_written = local_blobs.root / "_vaultq" / "tmp" / ("cd" + "0" * 30)
    half_written.write_bytes(b"half")

    assert local_blobs.collect_garbage() == 0  # young files may belong to a put in progress
    clock.advance(2 * 60 * 60)
    removed = local_blobs.collect_garbage()

    assert removed == 2
    assert not orphan.exists()
    assert not half_written.exists()
    assert local_blobs.get("box", "kept")[0] == b"still here"


def test_replaced_and_deleted_objects_leave_no_files(local_blobs: LocalBlobs) -> None:
    local_blobs.create_bucket("box")
    for i in range(3):
        local_blobs.put("box", "k", f"version {i}".encode())
    local_blobs.put("box", "gone", b"x")
    local_blobs.delete("box", "gone")

    assert len(_files_under(local_blobs.root / "box")) == 1


@pytest.fixture
def event_queues(tmp_path: Path, clock: Clock) -> Iterator[SqliteQueues]:
    queues = SqliteQueues(tmp_path / "queues.db", clock=clock)
    yield queues
    queues.close()


def _store_with(
    closing: contextlib.ExitStack,
    tmp_path: Path,
    clock: Clock,
    queues: QueueBackend,
    *notifications: BucketNotification,
) -> LocalBlobs:
    notifier = QueueNotifier(queues, {"box": list(notifications)})
    store = _open(closing, tmp_path / "blobs", notifier=notifier, clock=clock)
    store.create_bucket("box")
    return store


def _records(queues: QueueBackend, queue: str) -> list[dict[str, Any]]:
    records = []
    while batch := queues.receive(queue, max_messages=10, visibility_timeout_seconds=300):
        for message in batch:
            records.extend(json.loads(message.body)["Records"])
    return records


def test_a_put_sends_one_s3_put_event_to_the_configured_queue(
    tmp_path: Path, clock: Clock, event_queues: SqliteQueues, closing: contextlib.ExitStack
) -> None:
    event_queues.create_queue("uploads")
    store = _store_with(closing, tmp_path, clock, event_queues, BucketNotification("uploads"))

    info = store.put("box", "tenant 1/msg+1.bin", b"sealed")

    [record] = _records(event_queues, "uploads")
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["eventSource"] == "aws:s3"
    s3 = record["s3"]
    assert s3["bucket"]["name"] == "box"
    assert s3["object"]["key"] == "tenant+1/msg%2B1.bin"
    assert unquote_plus(s3["object"]["key"]) == info.key
    assert s3["object"]["size"] == 6
    assert s3["object"]["eTag"] == info.etag
    assert store.pending_count() == 0


def test_a_delete_sends_an_s3_delete_event_when_asked_for(
    tmp_path: Path, clock: Clock, event_queues: SqliteQueues, closing: contextlib.ExitStack
) -> None:
    event_queues.create_queue("changes")
    store = _store_with(
        closing,
        tmp_path,
        clock,
        event_queues,
        BucketNotification("changes", events=("s3:ObjectCreated:*", "s3:ObjectRemoved:*")),
    )
    store.put("box", "k", b"x")

    store.delete("box", "k")
    store.delete("box", "k")  # nothing left to delete: no second event

    records = _records(event_queues, "changes")
    assert [r["eventName"] for r in records] == ["ObjectCreated:Put", "ObjectRemoved:Delete"]
    assert records[1]["s3"]["object"].keys() == {"key", "sequencer"}


def test_a_delete_sends_nothing_when_only_uploads_are_asked_for(
    tmp_path: Path, clock: Clock, event_queues: SqliteQueues, closing: contextlib.ExitStack
) -> None:
    event_queues.create_queue("uploads")
    store = _store_with(closing, tmp_path, clock, event_queues, BucketNotification("uploads"))
    store.put("box", "k", b"x")

    store.delete("box", "k")

    assert [r["eventName"] for r in _records(event_queues, "uploads")] == ["ObjectCreated:Put"]


def test_prefix_and_suffix_filters_choose_the_keys_that_notify(
    tmp_path: Path, clock: Clock, event_queues: SqliteQueues, closing: contextlib.ExitStack
) -> None:
    event_queues.create_queue("csv")
    store = _store_with(
        closing,
        tmp_path,
        clock,
        event_queues,
        BucketNotification("csv", prefix="in/", suffix=".csv"),
    )

    for key in ("in/a.csv", "in/a.txt", "out/a.csv", "inbox/a.csv", "in/deep/b.csv"):
        store.put("box", key, b"x")

    keys = [r["s3"]["object"]["key"] for r in _records(event_queues, "csv")]
    assert sorted(keys) == ["in/a.csv", "in/deep/b.csv"]


def test_sequencers_increase_for_each_write_of_a_key(
    tmp_path: Path, clock: Clock, event_queues: SqliteQueues, closing: contextlib.ExitStack
) -> None:
    event_queues.create_queue("changes")
    notification = BucketNotification(
        "changes", events=("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
    )
    store = _store_with(closing, tmp_path, clock, event_queues, notification)
    store.put("box", "k", b"1")
    store.put("box", "other", b"x")
    store.put("box", "k", b"2")
    store.delete("box", "k")
    store.close()
    reopened = _store_with(closing, tmp_path, clock, event_queues, notification)
    reopened.put("box", "k", b"3")  # a restarted store keeps counting up

    records = _records(event_queues, "changes")
    sequencers = [
        r["s3"]["object"]["sequencer"] for r in records if r["s3"]["object"]["key"] == "k"
    ]
    assert len(sequencers) == 4
    assert sequencers == sorted(sequencers)
    assert len(set(sequencers)) == 4


def test_an_event_its_queue_refused_waits_in_the_outbox_until_delivered(
    tmp_path: Path, clock: Clock, event_queues: SqliteQueues, closing: contextlib.ExitStack
) -> None:
    store = _store_with(closing, tmp_path, clock, event_queues, BucketNotification("late-queue"))

    store.put("box", "k", b"x")  # the queue does not exist yet: the put still succeeds

    assert store.get("box", "k")[0] == b"x"
    assert store.pending_count() == 1
    assert store.deliver_pending() == 0
    event_queues.create_queue("late-queue")
    assert store.deliver_pending() == 1
    assert store.pending_count() == 0
    [record] = _records(event_queues, "late-queue")
    assert record["s3"]["object"]["key"] == "k"


def test_deliver_pending_leaves_events_younger_than_min_age(
    tmp_path: Path, clock: Clock, event_queues: SqliteQueues, closing: contextlib.ExitStack
) -> None:
    store = _store_with(closing, tmp_path, clock, event_queues, BucketNotification("late-queue"))
    store.put("box", "k", b"x")
    event_queues.create_queue("late-queue")

    assert store.deliver_pending(min_age_seconds=30) == 0
    clock.advance(31)
    assert store.deliver_pending(min_age_seconds=30) == 1
