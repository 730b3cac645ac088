"""The blob contract: S3's object verbs, synchronous, with S3's names and limits.

Values are frozen dataclasses; times are milliseconds since the epoch (``*_ms``), sizes bytes
(``*_bytes``). Validation lives here once, so every backend refuses the same names: bucket
names follow S3's rules; object keys follow S3's rules and a few more, so that no key can be
read as a path that leaves its bucket (see :func:`validate_key`).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from vaultq import errors

if TYPE_CHECKING:
    import builtins

MAX_KEY_BYTES = 1024
#: S3's limit for one PUT; a store may be given a smaller one.
DEFAULT_MAX_OBJECT_SIZE_BYTES = 5 * 1024**3
MAX_LIST_LIMIT = 1000
#: S3's limit for presigned URLs (seven days).
MAX_SIGNED_URL_SECONDS = 7 * 24 * 60 * 60
DEFAULT_CONTENT_TYPE = "binary/octet-stream"  # what S3 stores when none is given
MAX_CONTENT_TYPE_LENGTH = 256

SignedMethod = Literal["GET", "PUT"]
SIGNED_METHODS: frozenset[str] = frozenset({"GET", "PUT"})

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
# Printable ASCII without separators that would let a header carry a second header.
_CONTENT_TYPE = re.compile(r"^[\x20-\x7e]+$")


@dataclass(frozen=True, slots=True, kw_only=True)
class BucketInfo:
    name: str
    created_at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectInfo:
    """What S3's HeadObject answers. ``etag`` is the MD5 of the bytes in lower-case hex,
    without the quotes S3 puts around it in HTTP headers."""

    bucket: str
    key: str
    size_bytes: int
    etag: str
    last_modified_ms: int
    content_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectListing:
    """One page of a listing, in UTF-8 byte order of the keys as S3 lists them."""

    objects: tuple[ObjectInfo, ...]
    #: Pass to ``list`` for the next page; None on the last page. Opaque.
    next_cursor: str | None = None


class BlobStore(Protocol):
    """An S3-shaped object store.

    Writes are atomic: a reader sees the whole previous object or the whole new one, never
    a part, and ``get`` returns bytes and metadata of the same write.
    """

    def create_bucket(self, name: str) -> BucketInfo:
        """Create a bucket; idempotent (an existing bucket is returned as it is)."""
        ...

    def list_buckets(self) -> builtins.list[BucketInfo]:
        """Every bucket, by name."""
        ...

    def put(
        self, bucket: str, key: str, data: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        """Store ``data`` under ``key``, replacing any object there. Durable once it returns.

        Raises ``NoSuchBucket``, ``InvalidObjectKey`` or ``EntityTooLarge``."""
        ...

    def get(self, bucket: str, key: str) -> tuple[bytes, ObjectInfo]:
        """The object's bytes and metadata; ``NoSuchKey`` when there is none."""
        ...

    def head(self, bucket: str, key: str) -> ObjectInfo:
        """The object's metadata; ``NoSuchKey`` when there is none."""
        ...

    def delete(self, bucket: str, key: str) -> None:
        """Delete the object; idempotent, as S3: deleting a missing key is not an error."""
        ...

    def list(
        self,
        bucket: str,
        prefix: str = "",
        *,
        limit: int = MAX_LIST_LIMIT,
        cursor: str | None = None,
    ) -> ObjectListing:
        """Up to ``limit`` (1-1000) objects whose keys start with ``prefix``, after ``cursor``."""
        ...

    def signed_url(
        self, bucket: str, key: str, *, expires_in_seconds: int, method: SignedMethod = "GET"
    ) -> str:
        """A URL that lets its holder ``method`` the object until it expires (1 s - 7 days).

        Signing does not check that the object exists, as S3 presigning does not."""
        ...

    def verify_signed_url(self, url: str, *, method: SignedMethod = "GET") -> tuple[str, str]:
        """The ``(bucket, key)`` a URL from ``signed_url`` grants ``method`` on.

        Raises ``SignatureExpired`` after its expiry and ``InvalidSignature`` when the URL was
        not signed by this store's secret, was changed, or is used with another method."""
        ...

    def close(self) -> None: ...


def validate_bucket_name(name: str) -> None:
    """S3's rules for general purpose buckets: 3-63 characters of lower-case letters, digits,
    dots and hyphens, starting and ending with a letter or digit, no ``..``, not an IP
    address, none of S3's reserved prefixes and suffixes."""
    if not isinstance(name, str) or not _BUCKET_NAME.match(name) or ".." in name:
        raise errors.InvalidBucketName(
            "bucket names are 3-63 lower-case letters, digits, '.' or '-', starting and "
            f"ending with a letter or digit, without '..': {name!r}"
        )
    if name.startswith(_RESERVED_BUCKET_PREFIXES) or name.endswith(_RESERVED_BUCKET_SUFFIXES):
        raise errors.InvalidBucketName(f"{name!r} uses a prefix or suffix S3 reserves")
    if _is_ip_address(name):
        raise errors.InvalidBucketName(f"a bucket name must not be an IP address: {name!r}")


def validate_key(key: str) -> None:
    """S3's rule (1-1024 bytes of UTF-8) and vaultq's safer ones: no leading ``/``, no empty,
    ``.`` or ``..`` segment, no backslash, no control character (C0, DEL, C1)."""
    if not isinstance(key, str):
        raise errors.InvalidObjectKey("an object key must be a string")
    size = _utf8_size(key, errors.InvalidObjectKey)
    if not 1 <= size <= MAX_KEY_BYTES:
        raise errors.InvalidObjectKey(f"an object key is 1-{MAX_KEY_BYTES} bytes, not {size}")
    if "\\" in key or _has_control_character(key):
        raise errors.InvalidObjectKey("an object key must not hold backslashes or control chars")
    if key.startswith("/"):
        raise errors.InvalidObjectKey("an object key must not start with '/'")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise errors.InvalidObjectKey(
                "an object key must not have empty, '.' or '..' segments (no '//' and no "
                "trailing '/')"
            )


def validate_prefix(prefix: str) -> None:
    """A listing or filter prefix: any start of a valid key (it may end with ``/``)."""
    if not isinstance(prefix, str):
        raise errors.InvalidParameterValue("a prefix must be a string")
    size = _utf8_size(prefix, errors.InvalidParameterValue)
    if size > MAX_KEY_BYTES or "\\" in prefix or _has_control_character(prefix):
        raise errors.InvalidParameterValue(
            f"a prefix is at most {MAX_KEY_BYTES} bytes, without backslashes or control chars"
        )


def validate_content_type(content_type: str) -> None:
    if (
        not isinstance(content_type, str)
        or len(content_type) > MAX_CONTENT_TYPE_LENGTH
        or not _CONTENT_TYPE.match(content_type)
    ):
        raise errors.InvalidParameterValue(
            f"a content type is 1-{MAX_CONTENT_TYPE_LENGTH} printable ASCII characters"
        )


def validate_list_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise errors.InvalidParameterValue(f"limit must be an integer 1..{MAX_LIST_LIMIT}")


def validate_signed_url_request(expires_in_seconds: int, method: str) -> None:
    if (
        isinstance(expires_in_seconds, bool)
        or not isinstance(expires_in_seconds, int)
        or not 1 <= expires_in_seconds <= MAX_SIGNED_URL_SECONDS
    ):
        raise errors.InvalidParameterValue(
            f"expires_in_seconds must be an integer 1..{MAX_SIGNED_URL_SECONDS}"
        )
    if method not in SIGNED_METHODS:
        raise errors.InvalidParameterValue(f"signed URLs are for GET or PUT, not {method!r}")


def _utf8_size(text: str, error: type[errors.InvalidParameterValue]) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise error("the text is not valid UTF-8 (it holds a lone surrogate)") from None


def _has_control_character(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True
