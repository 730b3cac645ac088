"""``BlobStore`` on Amazon S3 through boto3; the only module that imports it for blobs.

Names, sizes and content types are validated by ``vaultq.blobs.protocol`` before any request,
so S3 refuses nothing that the embedded store accepts. botocore's errors become
``vaultq.errors`` in :func:`_translate_errors`, the one edge.

Signed URLs are S3's own presigned URLs (SigV4, path-style), so a holder can use them on S3
directly. ``verify_signed_url`` checks the signature and the expiry in vaultq, with this
store's credentials and clock: a service handing out or accepting these URLs gets the same
answer on every backend, also where S3 is emulated by something that checks neither (moto).

Upload events are S3's bucket notifications to SQS. ``create_bucket`` puts the bucket's
configurations (from the notifier the App gives every store) and the queue policy statement
that lets S3 send to each queue; S3 then delivers the events itself, so no outbox is needed.
The queues must exist first (``App.provision`` creates them before the buckets).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from vaultq import errors
from vaultq.blobs.notifications import bucket_arn, encode_key
from vaultq.blobs.protocol import (
    DEFAULT_CONTENT_TYPE,
    DEFAULT_MAX_OBJECT_SIZE_BYTES,
    MAX_LIST_LIMIT,
    MAX_SIGNED_URL_SECONDS,
    SIGNED_METHODS,
    BucketInfo,
    ObjectInfo,
    ObjectListing,
    SignedMethod,
    validate_bucket_name,
    validate_content_type,
    validate_key,
    validate_list_limit,
    validate_prefix,
    validate_signed_url_request,
)

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Iterator, Sequence

    from vaultq.blobs.notifications import BucketNotification, Notifier

log = logging.getLogger(__name__)

#: Parallel HEADs per listing page (S3 lists no content type); boto3's pool holds 10.
LIST_HEAD_CONCURRENCY = 8
_SIGNING_ALGORITHM = "AWS4-HMAC-SHA256"
_SIGNATURE_PARAMETER = "X-Amz-Signature"
_SIGNED_PARAMETERS = frozenset(
    {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders"}
)
_TOKEN_PARAMETER = "X-Amz-Security-Token"  # noqa: S105 - a parameter name, not a token
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_DIGITS = re.compile(r"^[0-9]{1,7}$")
_METHOD_OF = {"GET": "get_object", "PUT": "put_object"}

_ERRORS: dict[str, type[errors.VaultqError]] = {
    "NoSuchBucket": errors.NoSuchBucket,
    "NoSuchKey": errors.NoSuchKey,
    "InvalidBucketName": errors.InvalidBucketName,
    "KeyTooLongError": errors.InvalidObjectKey,
    "EntityTooLarge": errors.EntityTooLarge,
    # Bucket names are global: another account's bucket is a name this store cannot use.
    "BucketAlreadyExists": errors.InvalidBucketName,
    "InvalidArgument": errors.InvalidParameterValue,
    "AWS.SimpleQueueService.NonExistentQueue": errors.QueueDoesNotExist,
    "QueueDoesNotExist": errors.QueueDoesNotExist,
}


class S3Blobs:
    """``BlobStore`` on S3. ``region`` and ``endpoint_url`` (for an emulator) pick the service;
    credentials come from ``session`` (default: boto3's chain). ``notifier`` tells which
    buckets send which events to which queues; S3 delivers them. ``clock`` (seconds since
    the epoch) judges signed URL expiry and must be real time in production."""

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        session: Any | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        max_object_size_bytes: int = DEFAULT_MAX_OBJECT_SIZE_BYTES,
    ) -> None:
        if isinstance(max_object_size_bytes, bool) or not isinstance(max_object_size_bytes, int):
            raise errors.InvalidSettings("max_object_size_bytes must be an integer")
        if not 0 <= max_object_size_bytes <= DEFAULT_MAX_OBJECT_SIZE_BYTES:
            raise errors.InvalidSettings(
                f"max_object_size_bytes must be 0..{DEFAULT_MAX_OBJECT_SIZE_BYTES}"
            )
        self._region = region
        self._session = session or boto3.Session(region_name=region)
        # Path-style URLs name the bucket in the path, so that verify_signed_url can read it
        # back whatever the endpoint (S3 still serves path-style requests).
        config = Config(signature_version="s3v4", s3={"addressing_style": "path"})
        with _translate_errors():
            self._s3 = self._session.client(
                "s3", region_name=region, endpoint_url=endpoint_url, config=config
            )
            self._sqs = self._session.client("sqs", region_name=region, endpoint_url=endpoint_url)
        self._notifier = notifier
        self._clock = clock
        self._max_object_size_bytes = max_object_size_bytes

    # -- buckets --------------------------------------------------------------------------

    def create_bucket(self, name: str) -> BucketInfo:
        validate_bucket_name(name)
        request: dict[str, Any] = {"Bucket": name}
        if self._region != "us-east-1":  # S3 refuses a location constraint naming us-east-1
            request["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        with _translate_errors():
            try:
                self._s3.create_bucket(**request)
            except ClientError as exc:
                if _code(exc) != "BucketAlreadyOwnedByYou":
                    raise
        if self._notifier is not None and name in self._notifier.notifications:
            self._configure_notifications(name, self._notifier.notifications[name])
        for info in self._list_buckets(prefix=name):
            if info.name == name:
                return info
        raise errors.BackendUnavailable(f"S3 does not list bucket {name!r} yet; try again")

    def list_buckets(self) -> builtins.list[BucketInfo]:
        return self._list_buckets(prefix="")

    # -- objects --------------------------------------------------------------------------

    def put(
        self, bucket: str, key: str, data: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        _check_address(bucket, key)
        validate_content_type(content_type)
        if not isinstance(data, bytes):
            raise errors.InvalidParameterValue("object data must be bytes")
        if len(data) > self._max_object_size_bytes:
            raise errors.EntityTooLarge(
                f"{len(data)} bytes; this store takes at most {self._max_object_size_bytes}"
            )
        digest = hashlib.md5(data, usedforsecurity=False)
        with _translate_errors():
            put = self._s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                ContentMD5=base64.b64encode(digest.digest()).decode("ascii"),
            )
        # PutObject answers no Last-Modified; HEAD does, for this write unless another writer
        # replaced the object since: then this write's time is its response's Date.
        info = self._head(bucket, key)
        if info.etag == digest.hexdigest() and info.size_bytes == len(data):
            return info
        date = parsedate_to_datetime(put["ResponseMetadata"]["HTTPHeaders"]["date"])
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size_bytes=len(data),
            etag=digest.hexdigest(),
            last_modified_ms=_ms(date),
            content_type=content_type,
        )

    def get(self, bucket: str, key: str) -> tuple[bytes, ObjectInfo]:
        _check_address(bucket, key)
        with _translate_errors():
            response = self._s3.get_object(Bucket=bucket, Key=key)
            data: bytes = response["Body"].read()
        return data, _info(bucket, key, response)

    def head(self, bucket: str, key: str) -> ObjectInfo:
        _check_address(bucket, key)
        return self._head(bucket, key)

    def delete(self, bucket: str, key: str) -> None:
        _check_address(bucket, key)
        with _translate_errors():
            self._s3.delete_object(Bucket=bucket, Key=key)

    def list(
        self,
        bucket: str,
        prefix: str = "",
        *,
        limit: int = MAX_LIST_LIMIT,
        cursor: str | None = None,
    ) -> ObjectListing:
        validate_bucket_name(bucket)
        validate_prefix(prefix)
        validate_list_limit(limit)
        after = "" if cursor is None else _decode_cursor(cursor, prefix)
        with _translate_errors():
            page = self._s3.list_objects_v2(
                Bucket=bucket, Prefix=prefix, StartAfter=after, MaxKeys=limit
            )
        keys = [entry["Key"] for entry in page.get("Contents", ())]
        objects = tuple(info for info in self._heads(bucket, keys) if info is not None)
        more = bool(page.get("IsTruncated")) and bool(keys)
        return ObjectListing(
            objects=objects, next_cursor=_encode_cursor(prefix, keys[-1]) if more else None
        )

    # -- signed URLs ----------------------------------------------------------------------

    def signed_url(
        self, bucket: str, key: str, *, expires_in_seconds: int, method: SignedMethod = "GET"
    ) -> str:
        _check_address(bucket, key)
        validate_signed_url_request(expires_in_seconds, method)
        with _translate_errors():
            url: str = self._s3.generate_presigned_url(
                _METHOD_OF[method],
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=expires_in_seconds,
            )
        return url

    def verify_signed_url(self, url: str, *, method: SignedMethod = "GET") -> tuple[str, str]:
        """Recompute the URL's SigV4 signature with this store's credentials, then check its
        expiry against ``clock``: the checks S3 makes, made here so that an emulator that
        skips them cannot hide a tampered or expired URL."""
        if method not in SIGNED_METHODS:
            raise errors.InvalidParameterValue(f"signed URLs are for GET or PUT, not {method!r}")
        request = _parse_signed_url(url)
        with _translate_errors():
            ours = urlsplit(self.signed_url(request.bucket, request.key, expires_in_seconds=1))
            credentials = self._session.get_credentials()
        if (ours.scheme, ours.netloc, ours.path) != request.location:
            raise errors.InvalidSignature("not a URL signed by this store")
        if credentials is None:
            raise errors.BackendUnavailable("no AWS credentials to check signatures with")
        signer = S3SigV4QueryAuth(credentials.get_frozen_credentials(), "s3", self._region)
        unsigned = AWSRequest(method=method, url=request.unsigned_url)
        unsigned.context["timestamp"] = request.amz_date
        expected = signer.signature(
            signer.string_to_sign(unsigned, signer.canonical_request(unsigned)), unsigned
        )
        if not secrets.compare_digest(expected, request.signature):
            raise errors.InvalidSignature("the signature does not match this URL and method")
        if self._clock() > request.expires_at_seconds:
            raise errors.SignatureExpired("the signed URL has expired")
        return request.bucket, request.key

    def close(self) -> None:
        self._s3.close()
        self._sqs.close()

    # -- internals ------------------------------------------------------------------------

    def _list_buckets(self, *, prefix: str) -> builtins.list[BucketInfo]:
        buckets: builtins.list[BucketInfo] = []
        with _translate_errors():
            for page in self._s3.get_paginator("list_buckets").paginate(Prefix=prefix):
                buckets.extend(
                    BucketInfo(name=entry["Name"], created_at_ms=_ms(entry["CreationDate"]))
                    for entry in page.get("Buckets", ())
                )
        return sorted(buckets, key=lambda bucket: bucket.name)

    def _heads(self, bucket: str, keys: Sequence[str]) -> builtins.list[ObjectInfo | None]:
        """HEAD each listed key (for its content type); None for a key deleted since."""

        def head(key: str) -> ObjectInfo | None:
            try:
                return self._head(bucket, key)
            except errors.NoSuchKey:
                return None

        if len(keys) <= 1:
            return [head(key) for key in keys]
        with ThreadPoolExecutor(max_workers=LIST_HEAD_CONCURRENCY) as pool:
            return list(pool.map(head, keys))

    def _head(self, bucket: str, key: str) -> ObjectInfo:
        """HEAD answers a bare 404 for a missing bucket and a missing key alike: tell them
        apart, as the contract does, with one more request on that path only."""
        try:
            with _translate_errors():
                response = self._s3.head_object(Bucket=bucket, Key=key)
        except errors.NoSuchKey:
            with _translate_errors():
                try:
                    self._s3.head_bucket(Bucket=bucket)
                except ClientError as exc:
                    if _code(exc) in ("404", "NoSuchBucket"):
                        raise errors.NoSuchBucket(f"no bucket named {bucket!r}") from exc
                    raise
            raise
        return _info(bucket, key, response)

    def _configure_notifications(
        self, bucket: str, notifications: Sequence[BucketNotification]
    ) -> None:
        """Make S3 send ``bucket``'s events to the queues: each queue's policy first (S3
        checks that it may send before it accepts the configuration), then the bucket's
        whole configuration, replacing what was there."""
        configurations = []
        for notification in notifications:
            queue_arn = self._allow_s3_to_send(notification.queue, bucket)
            configurations.append(_queue_configuration(notification, queue_arn))
        with _translate_errors():
            self._s3.put_bucket_notification_configuration(
                Bucket=bucket,
                NotificationConfiguration={"QueueConfigurations": configurations},
            )
        log.info("bucket notifications set: %d configurations", len(configurations))

    def _allow_s3_to_send(self, queue: str, bucket: str) -> str:
        """Add (once) a statement to the queue's policy letting this bucket send to it."""
        with _translate_errors():
            queue_url = self._sqs.get_queue_url(QueueName=queue)["QueueUrl"]
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["QueueArn", "Policy"]
            )["Attributes"]
            queue_arn: str = attributes["QueueArn"]
            policy = json.loads(attributes.get("Policy") or '{"Version": "2012-10-17"}')
            statement = _send_statement(queue_arn, bucket_arn(bucket, region=self._region))
            statements = policy.get("Statement", [])
            if statement not in statements:
                policy["Statement"] = [s for s in statements if s.get("Sid") != statement["Sid"]]
                policy["Statement"].append(statement)
                self._sqs.set_queue_attributes(
                    QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)}
                )
        return queue_arn


@dataclass(frozen=True, slots=True, kw_only=True)
class _SignedRequest:
    bucket: str
    key: str
    amz_date: str
    expires_at_seconds: int
    signature: str
    #: The URL without its signature parameter: what was signed.
    unsigned_url: str
    #: Scheme, host and path: where the URL points.
    location: tuple[str, str, str]


def _parse_signed_url(url: str) -> _SignedRequest:
    """Read a presigned URL back; anything ``signed_url`` could not have written raises
    ``InvalidSignature``."""
    try:
        parts = urlsplit(url)
        bucket, _, quoted_key = parts.path.removeprefix("/").partition("/")
        key = unquote(quoted_key, errors="strict")
        validate_bucket_name(bucket)
        validate_key(key)
        fields = _query_fields(parts.query)
        signed_at = datetime.strptime(fields["X-Amz-Date"], _AMZ_DATE).replace(tzinfo=UTC)
    except (ValueError, KeyError, errors.InvalidParameterValue):
        raise errors.InvalidSignature("not a URL signed by this store") from None
    unsigned_query = "&".join(
        pair for pair in parts.query.split("&") if not pair.startswith(f"{_SIGNATURE_PARAMETER}=")
    )
    return _SignedRequest(
        bucket=bucket,
        key=key,
        amz_date=fields["X-Amz-Date"],
        expires_at_seconds=int(signed_at.timestamp()) + int(fields["X-Amz-Expires"]),
        signature=fields[_SIGNATURE_PARAMETER],
        unsigned_url=parts._replace(query=unsigned_query).geturl(),
        location=(parts.scheme, parts.netloc, parts.path),
    )


def _query_fields(query: str) -> dict[str, str]:
    """The presigned URL's parameters: exactly SigV4's, each once, with sane values."""
    fields = parse_qs(query, keep_blank_values=True, strict_parsing=True)
    names = set(fields) - {_TOKEN_PARAMETER}
    if names != _SIGNED_PARAMETERS | {_SIGNATURE_PARAMETER}:
        raise ValueError("unexpected query parameters")
    if any(len(values) != 1 for values in fields.values()):
        raise ValueError("a repeated query parameter")
    single = {name: values[0] for name, values in fields.items()}
    if single["X-Amz-Algorithm"] != _SIGNING_ALGORITHM or single["X-Amz-SignedHeaders"] != "host":
        raise ValueError("not a SigV4 query signature over the host alone")
    expires = single["X-Amz-Expires"]
    if not _DIGITS.match(expires) or not 1 <= int(expires) <= MAX_SIGNED_URL_SECONDS:
        raise ValueError("a malformed lifetime")
    return single


def _queue_configuration(notification: BucketNotification, queue_arn: str) -> dict[str, Any]:
    configuration: dict[str, Any] = {
        "Id": notification.configuration_id,
        "QueueArn": queue_arn,
        "Events": list(notification.events),
    }
    # S3 matches filter values against the encoded key, as its events carry it.
    rules = [
        {"Name": name, "Value": encode_key(value)}
        for name, value in (("prefix", notification.prefix), ("suffix", notification.suffix))
        if value
    ]
    if rules:
        configuration["Filter"] = {"Key": {"FilterRules": rules}}
    return configuration


def _send_statement(queue_arn: str, source_arn: str) -> dict[str, Any]:
    """The policy statement AWS documents for S3 event notifications to SQS."""
    account = queue_arn.split(":")[4]
    return {
        "Sid": "vaultqS3" + hashlib.sha256(source_arn.encode()).hexdigest()[:16],
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {
            "ArnLike": {"aws:SourceArn": source_arn},
            "StringEquals": {"aws:SourceAccount": account},
        },
    }


def _check_address(bucket: str, key: str) -> None:
    validate_bucket_name(bucket)
    validate_key(key)


def _info(bucket: str, key: str, response: dict[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size_bytes=response["ContentLength"],
        etag=response["ETag"].strip('"').lower(),
        last_modified_ms=_ms(response["LastModified"]),
        content_type=response.get("ContentType", DEFAULT_CONTENT_TYPE),
    )


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _code(exc: ClientError) -> str:
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code


def _encode_cursor(prefix: str, after: str) -> str:
    raw = json.dumps({"v": 1, "prefix": prefix, "after": after}).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _decode_cursor(cursor: str, prefix: str) -> str:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeError, AttributeError):
        decoded = None
    valid = (
        isinstance(decoded, dict)
        and decoded.get("v") == 1
        and isinstance(decoded.get("after"), str)
        and decoded.get("prefix") == prefix
    )
    if not valid:
        raise errors.InvalidParameterValue("the cursor is not one this listing returned")
    after: str = decoded["after"]
    return after


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    """The edge: botocore's errors in, ``vaultq.errors`` out, the cause chained."""
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        if code in ("404", "NotFound"):  # HEAD has no body to name the error
            raise errors.NoSuchKey("the bucket holds no object under that key") from exc
        error = _ERRORS.get(code, errors.BackendUnavailable)
        raise error(f"S3: {code or 'error'}") from exc
    except BotoCoreError as exc:
        raise errors.BackendUnavailable(f"AWS: {type(exc).__name__}") from exc


if TYPE_CHECKING:
    from vaultq.blobs.protocol import BlobStore

    # mypy proves here that the S3 store meets the contract.
    _FITS_PROTOCOL: type[BlobStore] = S3Blobs
