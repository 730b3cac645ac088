"""Signed URLs of the embedded store: HMAC-SHA256 over method, bucket, key and expiry.

A URL is ``<prefix>/<bucket>/<key, percent-encoded>?X-Vaultq-Expires=<epoch seconds>&
X-Vaultq-Signature=<hex>``. Bucket names and keys hold no newline (both are validated), so
the newline-joined string that is signed names exactly one request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlsplit

from vaultq import errors
from vaultq.blobs.protocol import validate_bucket_name, validate_key

EXPIRES_PARAMETER = "X-Vaultq-Expires"
SIGNATURE_PARAMETER = "X-Vaultq-Signature"
MIN_SECRET_BYTES = 32
_CONTEXT = "vaultq-signed-url-v1"
_DIGITS = re.compile(r"^[0-9]{1,12}$")
_HEX_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedRequest:
    bucket: str
    key: str
    expires_at_seconds: int
    signature: str


def signature(secret: bytes, *, method: str, bucket: str, key: str, expires_at: int) -> str:
    message = "\n".join((_CONTEXT, method, bucket, key, str(expires_at)))
    return hmac.new(secret, message.encode("utf-8"), hashlib.sha256).hexdigest()


def build_url(url_prefix: str, request: SignedRequest) -> str:
    path = f"{url_prefix}/{request.bucket}/{quote(request.key, safe='/')}"
    return (
        f"{path}?{EXPIRES_PARAMETER}={request.expires_at_seconds}"
        f"&{SIGNATURE_PARAMETER}={request.signature}"
    )


def parse_url(url: str, url_prefix: str) -> SignedRequest:
    """Read a signed URL back; anything that ``build_url`` could not have written raises
    ``InvalidSignature``."""
    try:
        parts = urlsplit(url)
        bucket, key = _bucket_and_key(parts.path, url_prefix)
        expires, signed = _query(parts.query)
    except (ValueError, errors.InvalidParameterValue):
        raise errors.InvalidSignature("not a URL signed by this store") from None
    return SignedRequest(bucket=bucket, key=key, expires_at_seconds=expires, signature=signed)


def _bucket_and_key(path: str, url_prefix: str) -> tuple[str, str]:
    if not path.startswith(url_prefix + "/"):
        raise ValueError("outside the signed URL prefix")
    bucket, _, quoted_key = path[len(url_prefix) + 1 :].partition("/")
    key = unquote(quoted_key, errors="strict")
    validate_bucket_name(bucket)
    validate_key(key)
    return bucket, key


def _query(query: str) -> tuple[int, str]:
    fields = parse_qs(query, keep_blank_values=True, strict_parsing=True)
    if set(fields) != {EXPIRES_PARAMETER, SIGNATURE_PARAMETER}:
        raise ValueError("unexpected query parameters")
    [expires] = fields[EXPIRES_PARAMETER]
    [signed] = fields[SIGNATURE_PARAMETER]
    if not _DIGITS.match(expires) or not _HEX_SIGNATURE.match(signed):
        raise ValueError("malformed expiry or signature")
    return int(expires), signed
