"""Per-job data keys, wrapped to the worker fleet with HPKE (steps 2 and 4 of the key flow).

A client makes a data key per job (``new_data_key``), seals texts with it
(``vaultq.privacy.envelope``) and wraps it to the fleet's public key (``wrap_data_key``).
A worker holds the fleet's private keys in a ``KeyRing`` and unwraps.

HPKE is RFC 9180 base mode, suite DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, as
implemented by ``cryptography.hazmat.primitives.hpke``. Its ``info`` is
``vaultq/v1|<tenant>|<job_id>``, so a key wrapped for one job opens for no other job or
tenant. A tenant's vector key (32 random bytes its client keeps) travels the same way, for
one job or query id, with ``info = vaultq/v1|vector-key|<tenant>|<id>``: one more
separator than a data key's info (ids cannot hold ``|``), so neither opens as the other.

Worker keys: a key id is the first 8 bytes of SHA-256 over the raw 32-byte public key, in
hex, so a sender needs only the public key. A key ring is written as base64 (standard
alphabet) raw 32-byte X25519 private keys, separated by commas or whitespace; in a file,
``#`` starts a comment. Several keys may be active at once: to rotate, add the new key,
switch senders to its public key, and remove the old key once no job wrapped to it remains.

Wrapped key format, version 1 (bytes)::

    0x01 | key id length (1 byte) | key id (ASCII) | enc (32 bytes) | ciphertext (48 bytes)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from vaultq.errors import DecryptionFailed, InvalidParameterValue, InvalidSettings, UnknownKeyId
from vaultq.privacy.envelope import DATA_KEY_BYTES, bound_context
from vaultq.privacy.zeroise import wipe

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "KEYS_ENV_VARIABLE",
    "VECTOR_KEY_BYTES",
    "KeyRing",
    "WorkerKey",
    "WrappedKey",
    "generate_worker_key",
    "key_id_for",
    "new_data_key",
    "wrap_data_key",
    "wrap_vector_key",
]

KEYS_ENV_VARIABLE = "VAULTQ_WORKER_KEYS"
WRAPPED_FORMAT_VERSION = 1
_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)
VECTOR_KEY_BYTES = DATA_KEY_BYTES
_VECTOR_KEY_CONTEXT = b"vaultq/v1|vector-key|"
_ENC_BYTES = 32
_WRAPPED_CIPHERTEXT_BYTES = DATA_KEY_BYTES + 16
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENTRY_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class WrappedKey:
    """A data key encrypted to one worker key; safe to store next to the job."""

    key_id: str  #: id of the worker key it is wrapped to
    enc: bytes  #: HPKE encapsulated key (the sender's ephemeral X25519 public key)
    ciphertext: bytes  #: the data key, AES-256-GCM encrypted, with its tag

    def __post_init__(self) -> None:
        if not _KEY_ID.fullmatch(self.key_id):
            raise InvalidParameterValue("a key id is 1-64 characters of A-Z a-z 0-9 . _ -")

    def to_bytes(self) -> bytes:
        key_id = self.key_id.encode("ascii")
        return bytes((WRAPPED_FORMAT_VERSION, len(key_id))) + key_id + self.enc + self.ciphertext

    @classmethod
    def from_bytes(cls, data: bytes) -> WrappedKey:
        """Parse ``to_bytes`` output; raises ``DecryptionFailed`` for anything else."""
        if len(data) < 2 or data[0] != WRAPPED_FORMAT_VERSION:
            raise DecryptionFailed("wrapped key has an unknown format version or is empty")
        end_of_id = 2 + data[1]
        if len(data) != end_of_id + _ENC_BYTES + _WRAPPED_CIPHERTEXT_BYTES:
            raise DecryptionFailed(f"wrapped key has the wrong length ({len(data)} bytes)")
        try:
            key_id = data[2:end_of_id].decode("ascii")
            return cls(
                key_id=key_id,
                enc=data[end_of_id : end_of_id + _ENC_BYTES],
                ciphertext=data[end_of_id + _ENC_BYTES :],
            )
        except (UnicodeDecodeError, InvalidParameterValue):
            raise DecryptionFailed("wrapped key has a malformed key id") from None


class WorkerKey(NamedTuple):
    """A fresh worker key pair; ``private_key`` is raw (32 bytes), keep it secret."""

    key_id: str
    private_key: bytes
    public_key: bytes


def key_id_for(public_key: bytes) -> str:
    """The key id of a raw 32-byte X25519 public key."""
    return hashlib.sha256(public_key).digest()[:8].hex()


def generate_worker_key() -> WorkerKey:
    """Make a new worker key pair (for tests and ``vaultq keys``)."""
    private = X25519PrivateKey.generate()
    public_key = private.public_key().public_bytes_raw()
    return WorkerKey(key_id_for(public_key), private.private_bytes_raw(), public_key)


def new_data_key() -> bytearray:
    """A random 256-bit data key in a buffer the caller wipes when the job is sealed."""
    return bytearray(os.urandom(DATA_KEY_BYTES))


def wrap_data_key(
    data_key: bytes | bytearray, *, public_key: bytes, tenant: str, job_id: str
) -> WrappedKey:
    """Encrypt ``data_key`` to a worker public key (raw 32 bytes) for one job of one tenant."""
    return _wrap(data_key, public_key, bound_context(tenant=tenant, object_id=job_id))


def wrap_vector_key(
    vector_key: bytes | bytearray, *, public_key: bytes, tenant: str, job_id: str
) -> WrappedKey:
    """Encrypt a tenant's vector key to a worker public key for one job (or query) id."""
    return _wrap(vector_key, public_key, _vector_key_info(tenant, job_id))


def _vector_key_info(tenant: str, job_id: str) -> bytes:
    bound = bound_context(tenant=tenant, object_id=job_id)
    return _VECTOR_KEY_CONTEXT + bound.split(b"|", 1)[1]


def _wrap(key: bytes | bytearray, public_key: bytes, info: bytes) -> WrappedKey:
    if len(key) != DATA_KEY_BYTES:
        raise InvalidParameterValue(f"a data or vector key is {DATA_KEY_BYTES} bytes")
    try:
        recipient = X25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise InvalidParameterValue("a worker public key is 32 raw X25519 bytes") from None
    sealed = _SUITE.encrypt(key, recipient, info=info)
    return WrappedKey(
        key_id=key_id_for(public_key), enc=sealed[:_ENC_BYTES], ciphertext=sealed[_ENC_BYTES:]
    )


class KeyRing:
    """The worker fleet's private keys, by key id; unwraps data keys wrapped to any of them."""

    def __init__(self, private_keys: Iterable[bytes | bytearray]) -> None:
        self._keys: dict[str, X25519PrivateKey] = {}
        for number, raw in enumerate(private_keys, start=1):
            try:
                private = X25519PrivateKey.from_private_bytes(raw)
            except ValueError:
                raise InvalidSettings(f"worker key {number} is not 32 raw X25519 bytes") from None
            self._keys[key_id_for(private.public_key().public_bytes_raw())] = private
        if not self._keys:
            raise InvalidSettings("the key ring holds no worker key")

    @classmethod
    def from_text(cls, text: str) -> KeyRing:
        """Parse base64 private keys separated by commas or whitespace; ``#`` comments."""
        uncommented = "\n".join(line.partition("#")[0] for line in text.splitlines())
        entries = [entry for entry in _ENTRY_SEPARATORS.split(uncommented) if entry]
        return cls(_decode_entry(number, entry) for number, entry in enumerate(entries, 1))

    @classmethod
    def from_file(cls, path: Path | str) -> KeyRing:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidSettings(f"cannot read the worker key file {path}") from exc
        return cls.from_text(text)

    @classmethod
    def from_env(cls, *, environ: Mapping[str, str] | None = None) -> KeyRing:
        """Read the keys from ``VAULTQ_WORKER_KEYS``."""
        text = (os.environ if environ is None else environ).get(KEYS_ENV_VARIABLE, "")
        if not text.strip():
            raise InvalidSettings(f"{KEYS_ENV_VARIABLE} is not set")
        return cls.from_text(text)

    @property
    def key_ids(self) -> frozenset[str]:
        """Ids of the loaded keys (public information)."""
        return frozenset(self._keys)

    def unwrap(self, wrapped: WrappedKey, *, tenant: str, job_id: str) -> bytearray:
        """Decrypt the data key of one job into a buffer the caller wipes after use."""
        return self._open(wrapped, bound_context(tenant=tenant, object_id=job_id))

    def unwrap_vector_key(self, wrapped: WrappedKey, *, tenant: str, job_id: str) -> bytearray:
        """Decrypt a tenant's vector key wrapped for one job (or query) id into a buffer the
        caller wipes after use."""
        return self._open(wrapped, _vector_key_info(tenant, job_id))

    def _open(self, wrapped: WrappedKey, info: bytes) -> bytearray:
        private = self._keys.get(wrapped.key_id)
        if private is None:
            raise UnknownKeyId(f"no worker key with id {wrapped.key_id} is loaded")
        try:
            # HPKE returns immutable bytes; the copy below is the one vaultq can wipe.
            key = bytearray(_SUITE.decrypt(wrapped.enc + wrapped.ciphertext, private, info))
        except (InvalidTag, ValueError):
            raise DecryptionFailed(
                "wrapped key does not authenticate: wrong tenant or job id, or changed"
            ) from None
        if len(key) != DATA_KEY_BYTES:
            wipe(key)
            raise DecryptionFailed("wrapped key does not hold a 32-byte key")
        return key


def _decode_entry(number: int, entry: str) -> bytes:
    try:
        return base64.b64decode(entry, validate=True)
    except binascii.Error:
        raise InvalidSettings(f"worker key {number} is not base64") from None
