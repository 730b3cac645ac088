"""Seal one text under a per-job data key (step 1 of DESIGN.md's key flow).

Format, version 1 (bytes; callers that need text base64-encode the whole)::

    0x01 | nonce (12 random bytes) | AES-256-GCM ciphertext | tag (16 bytes)

The associated data is ``vaultq/v1|<tenant>|<message_id>`` (UTF-8), so a sealed text opens
only for the tenant and message it was sealed for. Tenants and ids may not contain ``|``:
otherwise ``("a|b", "c")`` and ``("a", "b|c")`` would bind to the same bytes.

What is not protected: the length of the text (ciphertext length = text length + 29), and
the tenant and message id, which travel in the clear next to the sealed bytes.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vaultq.errors import DecryptionFailed, InvalidParameterValue
from vaultq.privacy.zeroise import wipe

__all__ = ["DATA_KEY_BYTES", "FORMAT_VERSION", "bound_context", "open_sealed", "seal"]

FORMAT_VERSION = 1
DATA_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER_BYTES = 1 + NONCE_BYTES
_CONTEXT_PREFIX = "vaultq/v1"
_SEPARATOR = "|"


def bound_context(*, tenant: str, object_id: str) -> bytes:
    """The bytes ``vaultq/v1|tenant|object_id`` that a ciphertext is bound to.

    Used as AES-GCM associated data (``object_id`` = message id) and as HPKE ``info``
    (``object_id`` = job id).
    """
    for name, value in (("tenant", tenant), ("id", object_id)):
        if not value or _SEPARATOR in value:
            raise InvalidParameterValue(f"the {name} must be non-empty and must not contain '|'")
    return _SEPARATOR.join((_CONTEXT_PREFIX, tenant, object_id)).encode()


def seal(
    data_key: bytes | bytearray, *, tenant: str, message_id: str, plaintext: bytes | bytearray
) -> bytes:
    """Encrypt ``plaintext`` for one message of one tenant; returns the version-1 format."""
    aad = bound_context(tenant=tenant, object_id=message_id)
    cipher = _cipher(data_key)
    nonce = os.urandom(NONCE_BYTES)
    sealed = bytearray(_HEADER_BYTES + len(plaintext) + TAG_BYTES)
    sealed[0] = FORMAT_VERSION
    sealed[1:_HEADER_BYTES] = nonce
    with memoryview(sealed) as view:
        cipher.encrypt_into(nonce, plaintext, aad, view[_HEADER_BYTES:])
    return bytes(sealed)


def open_sealed(
    data_key: bytes | bytearray, *, tenant: str, message_id: str, sealed: bytes | bytearray
) -> bytearray:
    """Decrypt a sealed text into a new ``bytearray`` the caller should wipe after use.

    Raises ``DecryptionFailed`` for anything that does not authenticate: a changed byte, the
    wrong key, another tenant or message id, an unknown version, a truncated input. A data
    key that is not 32 bytes long is a caller's bug: ``InvalidParameterValue``.
    """
    aad = bound_context(tenant=tenant, object_id=message_id)
    cipher = _cipher(data_key)
    if len(sealed) < _HEADER_BYTES + TAG_BYTES:
        raise DecryptionFailed(f"sealed text is truncated ({len(sealed)} bytes)")
    if sealed[0] != FORMAT_VERSION:
        raise DecryptionFailed(f"sealed text has unknown format version {sealed[0]}")
    plaintext = bytearray(len(sealed) - _HEADER_BYTES - TAG_BYTES)
    with memoryview(sealed) as view:
        try:
            cipher.decrypt_into(view[1:_HEADER_BYTES], view[_HEADER_BYTES:], aad, plaintext)
        except InvalidTag:
            # The buffer may hold unauthenticated plaintext: never hand it out.
            wipe(plaintext)
            raise DecryptionFailed(
                f"sealed text does not authenticate ({len(sealed)} bytes): wrong key, "
                "tenant or message id, or changed"
            ) from None
    return plaintext


def _cipher(data_key: bytes | bytearray) -> AESGCM:
    if len(data_key) != DATA_KEY_BYTES:
        raise InvalidParameterValue(f"a data key is {DATA_KEY_BYTES} bytes")
    return AESGCM(data_key)
