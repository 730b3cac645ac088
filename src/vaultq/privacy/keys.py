"""Per-job data keys, wrapped to the worker fleet with HPKE (steps 2 and 4 of the key flow).

A client makes a data key per job (``new_data_key``), seals texts with it
(``vaultq.privacy.envelope``) and wraps it to the fleet's public key (``wrap_data_key``).
A worker holds the fleet's private keys in a ``KeyRing`` and unwraps.

HPKE is RFC 9180 base mode with HKDF-SHA256 and AES-256-GCM, as implemented by
``cryptography.hazmat.primitives.hpke``, and one of two KEMs, chosen per worker key (``Kem``):

- ``x25519``: DHKEM(X25519, HKDF-SHA256) (RFC 9180), the default;
- ``mlkem768-x25519``: the hybrid post-quantum KEM ML-KEM-768 + X25519 (X-Wing,
  draft-connolly-cfrg-xwing-kem, HPKE KEM id 0x647A in draft-ietf-hpke-pq). A wrapped key
  stays secret while either ML-KEM-768 or X25519 holds.

Its ``info`` is ``vaultq/v1|<tenant>|<job_id>``, so a key wrapped for one job opens for no
other job or tenant. A tenant's vector key (32 random bytes its client keeps) travels the
same way, for one job or query id, with ``info = vaultq/v1|vector-key|<tenant>|<id>``: one
more separator than a data key's info (ids cannot hold ``|``), so neither opens as the other.

Worker keys: a public key is raw bytes, 32 for ``x25519`` and 1,216 for ``mlkem768-x25519``
(ML-KEM-768's 1,184 then X25519's 32, X-Wing's encoding), so its length names its suite (a
future suite of the same length would need a tagged public key). A key id is the first 8
bytes of SHA-256 over the raw public key, in hex, so a sender needs only the public key. A
private key is 32 bytes in both suites (the hybrid's is X-Wing's seed), so a key ring entry
names its suite: ``<kem>:<base64>``; a bare base64 entry is ``x25519``, as every ring written
before the hybrid suite (and a release that predates it refuses a hybrid entry rather than
load it as an X25519 key). Entries are separated by commas or whitespace; in a file, ``#``
starts a comment. Several keys, of either suite, may be active at once: to rotate (e.g. from
x25519 to the hybrid), add the new key, switch senders to its public key, re-wrap the stored
uploads to it (``vaultq keys rewrap``, ``KeyRing.rewrap``), and remove the old key once no
job wrapped to it remains.

Wrapped key formats (bytes); vaultq reads both and writes version 1 for ``x25519`` (so that
workers which predate the hybrid suite still open classic keys) and version 2 otherwise::

    version 1: 0x01 | key id length (1 byte) | key id (ASCII) | enc (32) | ciphertext (48)
    version 2: 0x02 | suite (KEM, KDF, AEAD ids, 2 bytes each, RFC 9180) | key id length |
               key id | enc (the KEM's: 1,120 bytes for mlkem768-x25519) | ciphertext (48)
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import (
    AEAD,
    KDF,
    KEM,
    MLKEM768X25519PrivateKey,
    MLKEM768X25519PublicKey,
    Suite,
)

from vaultq.errors import DecryptionFailed, InvalidParameterValue, InvalidSettings, UnknownKeyId
from vaultq.privacy.envelope import DATA_KEY_BYTES, bound_context
from vaultq.privacy.zeroise import wipe, wiping

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "KEYS_ENV_VARIABLE",
    "VECTOR_KEY_BYTES",
    "Kem",
    "KeyRing",
    "RingEntry",
    "WorkerKey",
    "WrappedKey",
    "generate_worker_key",
    "kem_of_public_key",
    "key_id_for",
    "new_data_key",
    "public_key_from_base64",
    "wrap_data_key",
    "wrap_vector_key",
]

KEYS_ENV_VARIABLE = "VAULTQ_WORKER_KEYS"
VECTOR_KEY_BYTES = DATA_KEY_BYTES
_VECTOR_KEY_CONTEXT = b"vaultq/v1|vector-key|"
_PRIVATE_KEY_BYTES = 32
_WRAPPED_CIPHERTEXT_BYTES = DATA_KEY_BYTES + 16
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENTRY_SEPARATORS = re.compile(r"[\s,]+")


class Kem(StrEnum):
    """The HPKE KEM of a worker key: with HKDF-SHA256 and AES-256-GCM, its suite."""

    X25519 = "x25519"  #: DHKEM(X25519, HKDF-SHA256), RFC 9180: classic, the default
    MLKEM768_X25519 = "mlkem768-x25519"  #: ML-KEM-768 + X25519 (X-Wing): hybrid post-quantum


_PrivateKey = X25519PrivateKey | MLKEM768X25519PrivateKey
_PublicKey = X25519PublicKey | MLKEM768X25519PublicKey


@dataclass(frozen=True, slots=True)
class _Scheme:
    hpke_kem: KEM
    #: RFC 9180's KEM, KDF (HKDF-SHA256 = 1) and AEAD (AES-256-GCM = 2) ids, as HPKE's suite_id.
    suite_id: bytes
    public_key_bytes: int
    enc_bytes: int
    #: A raw private key -> the key object and its raw public key; ValueError if malformed.
    load_private: Callable[[bytes | bytearray], tuple[_PrivateKey, bytes]]
    #: A raw public key of ``public_key_bytes`` -> the key object; ValueError if malformed.
    load_public: Callable[[bytes], _PublicKey]


def _x25519_private(raw: bytes | bytearray) -> tuple[_PrivateKey, bytes]:
    private = X25519PrivateKey.from_private_bytes(raw)
    return private, private.public_key().public_bytes_raw()


_MLKEM768_PUBLIC_KEY_BYTES = 1184


def _xwing_private(seed: bytes | bytearray) -> tuple[_PrivateKey, bytes]:
    if len(seed) != _PRIVATE_KEY_BYTES:
        raise ValueError("an X-Wing seed is 32 bytes")
    # X-Wing's key generation: SHAKE256 expands the seed into ML-KEM-768's 64-byte seed and
    # the X25519 private key. The expansion is immutable bytes (see zeroise.py).
    expanded = hashlib.shake_256(seed).digest(96)
    mlkem, x25519 = (
        MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
        X25519PrivateKey.from_private_bytes(expanded[64:]),
    )
    public = mlkem.public_key().public_bytes_raw() + x25519.public_key().public_bytes_raw()
    return MLKEM768X25519PrivateKey(mlkem, x25519), public


def _xwing_public(raw: bytes) -> _PublicKey:
    return MLKEM768X25519PublicKey(
        MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM768_PUBLIC_KEY_BYTES]),
        X25519PublicKey.from_public_bytes(raw[_MLKEM768_PUBLIC_KEY_BYTES:]),
    )


_SUITE_ID_TAIL = bytes((0x00, 0x01, 0x00, 0x02))  # HKDF-SHA256, AES-256-GCM
_SCHEMES = {
    Kem.X25519: _Scheme(
        hpke_kem=KEM.X25519,
        suite_id=b"\x00\x20" + _SUITE_ID_TAIL,
        public_key_bytes=32,
        enc_bytes=32,
        load_private=_x25519_private,
        load_public=X25519PublicKey.from_public_bytes,
    ),
    Kem.MLKEM768_X25519: _Scheme(
        hpke_kem=KEM.MLKEM768_X25519,
        suite_id=b"\x64\x7a" + _SUITE_ID_TAIL,
        public_key_bytes=_MLKEM768_PUBLIC_KEY_BYTES + 32,
        enc_bytes=1088 + 32,  # ML-KEM-768 ciphertext, X25519 ephemeral key
        load_private=_xwing_private,
        load_public=_xwing_public,
    ),
}


@functools.cache
def _suite(kem: Kem) -> Suite:
    # Built on first use: a cryptography build without ML-KEM still imports this module.
    return Suite(_SCHEMES[kem].hpke_kem, KDF.HKDF_SHA256, AEAD.AES_256_GCM)


_KEM_BY_SUITE_ID = {scheme.suite_id: kem for kem, scheme in _SCHEMES.items()}
_KEM_BY_PUBLIC_KEY_BYTES = {scheme.public_key_bytes: kem for kem, scheme in _SCHEMES.items()}
_KNOWN_PUBLIC_KEYS = " or ".join(
    f"{scheme.public_key_bytes} bytes ({kem})" for kem, scheme in _SCHEMES.items()
)


@dataclass(frozen=True, slots=True, kw_only=True)
class WrappedKey:
    """A data key encrypted to one worker key; safe to store next to the job."""

    key_id: str  #: id of the worker key it is wrapped to
    enc: bytes  #: HPKE encapsulated key (the sender's ephemeral key share)
    ciphertext: bytes  #: the data key, AES-256-GCM encrypted, with its tag
    kem: Kem = Kem.X25519  #: the worker key's KEM, so a worker knows the suite that opens it

    def __post_init__(self) -> None:
        if not _KEY_ID.fullmatch(self.key_id):
            raise InvalidParameterValue("a key id is 1-64 characters of A-Z a-z 0-9 . _ -")
        scheme = _SCHEMES.get(self.kem)
        if scheme is None or len(self.enc) != scheme.enc_bytes:
            raise InvalidParameterValue("a wrapped key's KEM or encapsulated key is malformed")

    def to_bytes(self) -> bytes:
        key_id = self.key_id.encode("ascii")
        header = b"\x01" if self.kem == Kem.X25519 else b"\x02" + _SCHEMES[self.kem].suite_id
        return header + bytes((len(key_id),)) + key_id + self.enc + self.ciphertext

    @classmethod
    def from_bytes(cls, data: bytes) -> WrappedKey:
        """Parse either format version; raises ``DecryptionFailed`` for anything else."""
        kem, id_at = _wrapped_key_header(data)
        end_of_id = id_at + 1 + data[id_at]
        end_of_enc = end_of_id + _SCHEMES[kem].enc_bytes
        if len(data) != end_of_enc + _WRAPPED_CIPHERTEXT_BYTES:
            raise DecryptionFailed(f"wrapped key has the wrong length ({len(data)} bytes)")
        try:
            return cls(
                kem=kem,
                key_id=data[id_at + 1 : end_of_id].decode("ascii"),
                enc=data[end_of_id:end_of_enc],
                ciphertext=data[end_of_enc:],
            )
        except (UnicodeDecodeError, InvalidParameterValue):
            raise DecryptionFailed("wrapped key has a malformed key id") from None


def _wrapped_key_header(data: bytes) -> tuple[Kem, int]:
    """The KEM a wrapped key's header names, and where its key id length byte is."""
    if data[:1] == b"\x01" and len(data) > 1:
        return Kem.X25519, 1
    if data[:1] == b"\x02" and len(data) > 7:
        kem = _KEM_BY_SUITE_ID.get(data[1:7])
        if kem is None:
            raise DecryptionFailed("wrapped key names an HPKE suite this worker does not know")
        return kem, 7
    raise DecryptionFailed("wrapped key has an unknown format version or is truncated")


class WorkerKey(NamedTuple):
    """A fresh worker key pair; ``private_key`` is raw (32 bytes; for the hybrid KEM, the
    X-Wing seed), keep it secret. A key ring takes it as ``(kem, private_key)``."""

    key_id: str
    private_key: bytes
    public_key: bytes
    kem: Kem = Kem.X25519


def key_id_for(public_key: bytes) -> str:
    """The key id of a raw worker public key (of either suite)."""
    return hashlib.sha256(public_key).digest()[:8].hex()


def kem_of_public_key(public_key: bytes) -> Kem:
    """The suite of a raw worker public key, told by its length."""
    kem = _KEM_BY_PUBLIC_KEY_BYTES.get(len(public_key))
    if kem is None:
        raise InvalidParameterValue(f"a worker public key is {_KNOWN_PUBLIC_KEYS}")
    return kem


def public_key_from_base64(text: str) -> bytes:
    """Decode a worker public key given as base64 (``vaultq keys generate``'s output)."""
    try:
        public_key = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise InvalidParameterValue("a worker public key is base64") from None
    kem_of_public_key(public_key)
    return public_key


def generate_worker_key(*, kem: Kem = Kem.X25519) -> WorkerKey:
    """Make a new worker key pair (for tests and ``vaultq keys generate``)."""
    # Any 32 random bytes are a private key in both suites (RFC 7748 clamps; X-Wing expands).
    private_key = os.urandom(_PRIVATE_KEY_BYTES)
    _, public_key = _load_private(kem, private_key)
    return WorkerKey(key_id_for(public_key), private_key, public_key, kem)


def new_data_key() -> bytearray:
    """A random 256-bit data key in a buffer the caller wipes when the job is sealed."""
    return bytearray(os.urandom(DATA_KEY_BYTES))


def wrap_data_key(
    data_key: bytes | bytearray, *, public_key: bytes, tenant: str, job_id: str
) -> WrappedKey:
    """Encrypt ``data_key`` to a raw worker public key (its length names its suite) for one
    job of one tenant."""
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
    kem = kem_of_public_key(public_key)
    scheme = _SCHEMES[kem]
    try:
        recipient, suite = scheme.load_public(public_key), _suite(kem)
    except ValueError:
        raise InvalidParameterValue(f"the worker public key is not a valid {kem} key") from None
    except UnsupportedAlgorithm:
        raise _unsupported(kem) from None
    sealed = suite.encrypt(key, recipient, info=info)
    return WrappedKey(
        kem=kem,
        key_id=key_id_for(public_key),
        enc=sealed[: scheme.enc_bytes],
        ciphertext=sealed[scheme.enc_bytes :],
    )


def _load_private(kem: Kem, raw: bytes | bytearray) -> tuple[_PrivateKey, bytes]:
    """Raises ValueError for a malformed key, InvalidSettings where ML-KEM is missing."""
    try:
        return _SCHEMES[kem].load_private(raw)
    except UnsupportedAlgorithm:
        raise _unsupported(kem) from None


def _unsupported(kem: Kem) -> InvalidSettings:
    return InvalidSettings(f"this build of the cryptography package cannot do {kem} (ML-KEM)")


#: A key ring entry: a raw x25519 private key, or a raw private key with its KEM.
RingEntry = bytes | bytearray | tuple[Kem, bytes | bytearray]


class KeyRing:
    """The worker fleet's private keys, by key id; unwraps keys wrapped to any of them."""

    def __init__(self, private_keys: Iterable[RingEntry]) -> None:
        self._keys: dict[str, tuple[Kem, _PrivateKey]] = {}
        for number, entry in enumerate(private_keys, start=1):
            kem, raw = entry if isinstance(entry, tuple) else (Kem.X25519, entry)
            try:
                private, public_key = _load_private(kem, raw)
            except ValueError:
                raise InvalidSettings(f"worker key {number} is not 32 raw {kem} bytes") from None
            self._keys[key_id_for(public_key)] = (kem, private)
        if not self._keys:
            raise InvalidSettings("the key ring holds no worker key")

    @classmethod
    def from_text(cls, text: str) -> KeyRing:
        """Parse ``[<kem>:]<base64>`` private keys separated by commas or whitespace (a bare
        key is x25519); ``#`` starts a comment."""
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

    def rewrap(
        self, wrapped: WrappedKey, *, public_key: bytes, tenant: str, job_id: str
    ) -> WrappedKey:
        """The same data key, wrapped to another worker ``public_key`` for the same tenant
        and job (``vaultq keys rewrap``); the unwrapped copy is wiped."""
        return self._rewrap(wrapped, public_key, bound_context(tenant=tenant, object_id=job_id))

    def rewrap_vector_key(
        self, wrapped: WrappedKey, *, public_key: bytes, tenant: str, job_id: str
    ) -> WrappedKey:
        """``rewrap`` for a tenant's vector key wrapped for one job (or query) id."""
        return self._rewrap(wrapped, public_key, _vector_key_info(tenant, job_id))

    def _rewrap(self, wrapped: WrappedKey, public_key: bytes, info: bytes) -> WrappedKey:
        # One info for both directions: a re-wrapped key stays bound to its tenant and job.
        with wiping(self._open(wrapped, info)) as key:
            return _wrap(key, public_key, info)

    def _open(self, wrapped: WrappedKey, info: bytes) -> bytearray:
        entry = self._keys.get(wrapped.key_id)
        if entry is None:
            raise UnknownKeyId(f"no worker key with id {wrapped.key_id} is loaded")
        kem, private = entry
        if wrapped.kem != kem:
            raise DecryptionFailed(
                f"wrapped key names suite {wrapped.kem}, worker key {wrapped.key_id} is {kem}"
            )
        try:
            # HPKE returns immutable bytes; the copy below is the one vaultq can wipe.
            sealed = wrapped.enc + wrapped.ciphertext
            key = bytearray(_suite(kem).decrypt(sealed, private, info))
        except (InvalidTag, ValueError):
            raise DecryptionFailed(
                "wrapped key does not authenticate: wrong tenant or job id, or changed"
            ) from None
        if len(key) != DATA_KEY_BYTES:
            wipe(key)
            raise DecryptionFailed("wrapped key does not hold a 32-byte key")
        return key


def _decode_entry(number: int, entry: str) -> tuple[Kem, bytes]:
    name, colon, encoded = entry.rpartition(":")
    try:
        kem = Kem(name if colon else Kem.X25519)
    except ValueError:
        # The name is not echoed: a mangled entry could hold key material.
        raise InvalidSettings(
            f"worker key {number} names an unknown suite (known: {', '.join(Kem)})"
        ) from None
    try:
        return kem, base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise InvalidSettings(f"worker key {number} is not base64") from None
