"""Data keys wrapped to the worker fleet open only in the fleet, for their job and tenant."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import traceback

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vaultq.errors import DecryptionFailed, InvalidParameterValue, InvalidSettings, UnknownKeyId
from vaultq.privacy import (
    Kem,
    KeyRing,
    WrappedKey,
    generate_worker_key,
    key_id_for,
    new_data_key,
    wipe,
    wiping,
    wrap_data_key,
)
from vaultq.privacy.keys import (
    WorkerKey,
    kem_of_public_key,
    public_key_from_base64,
    wrap_vector_key,
)

TENANT = "acme"
JOB_ID = "job-a"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# ---------------------------------------------------------------------------------------------
# An independent RFC 9180 base-mode reference (stdlib HMAC-SHA256 for HKDF; X25519 and AES-GCM
# from cryptography), checked against the RFC's own vectors, then used to show that what
# vaultq wraps is standard HPKE that any conforming implementation opens, and the reverse.

KEM_ID_X25519 = 0x0020
KDF_ID_HKDF_SHA256 = 0x0001
AEAD_ID_AES_128_GCM = 0x0001
AEAD_ID_AES_256_GCM = 0x0002


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled_info = length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info
    return _expand(prk, labeled_info, length)


def reference_shared_secret(dh: bytes, enc: bytes, pk_rm: bytes) -> bytes:
    kem_suite = b"KEM" + KEM_ID_X25519.to_bytes(2, "big")
    eae_prk = _labeled_extract(kem_suite, b"", b"eae_prk", dh)
    return _labeled_expand(kem_suite, eae_prk, b"shared_secret", enc + pk_rm, 32)


def reference_key_schedule(
    shared_secret: bytes, info: bytes, *, aead_id: int
) -> tuple[bytes, bytes]:
    """Base mode (no PSK): returns (key, base_nonce)."""
    suite_id = b"HPKE" + b"".join(
        i.to_bytes(2, "big") for i in (KEM_ID_X25519, KDF_ID_HKDF_SHA256, aead_id)
    )
    psk_id_hash = _labeled_extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite_id, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = _labeled_extract(suite_id, shared_secret, b"secret", b"")
    key_length = 16 if aead_id == AEAD_ID_AES_128_GCM else 32
    key = _labeled_expand(suite_id, secret, b"key", context, key_length)
    return key, _labeled_expand(suite_id, secret, b"base_nonce", context, 12)


def reference_open(
    sk_r: X25519PrivateKey,
    enc: bytes,
    ciphertext: bytes,
    info: bytes,
    *,
    aead_id: int,
    aad: bytes = b"",
    seq: int = 0,
) -> bytes:
    pk_rm = sk_r.public_key().public_bytes_raw()
    dh = sk_r.exchange(X25519PublicKey.from_public_bytes(enc))
    key, base_nonce = reference_key_schedule(
        reference_shared_secret(dh, enc, pk_rm), info, aead_id=aead_id
    )
    nonce = bytes(a ^ b for a, b in zip(base_nonce, seq.to_bytes(12, "big"), strict=True))
    return AESGCM(key).decrypt(nonce, ciphertext, aad)


def reference_seal(pk_r: bytes, plaintext: bytes, info: bytes) -> tuple[bytes, bytes]:
    """Single-shot seal with AES-256-GCM and a fresh ephemeral key: returns (enc, ct)."""
    sk_e = X25519PrivateKey.generate()
    enc = sk_e.public_key().public_bytes_raw()
    dh = sk_e.exchange(X25519PublicKey.from_public_bytes(pk_r))
    key, base_nonce = reference_key_schedule(
        reference_shared_secret(dh, enc, pk_r), info, aead_id=AEAD_ID_AES_256_GCM
    )
    return enc, AESGCM(key).encrypt(base_nonce, plaintext, b"")


# RFC 9180, Appendix A.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM.
# A.1.1 Base Setup Information, and A.1.1.1 Encryptions, sequence numbers 0 and 1, as printed.
# (The RFC has no X25519 + AES-256-GCM vector; the KEM and key schedule are the same code.)
RFC_A11 = {
    "info": "4f6465206f6e2061204772656369616e2055726e",
    "pkEm": "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
    "skEm": "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
    "pkRm": "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
    "skRm": "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
    "enc": "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
    "shared_secret": "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc",
    "key": "4531685d41d65f03dc48f6b8302c05b0",
    "base_nonce": "56d890e5accaaf011cff4b7d",
}
RFC_A111_ENCRYPTIONS = [
    # (sequence number, pt, aad, ct)
    (
        0,
        "4265617574792069732074727574682c20747275746820626561757479",
        "436f756e742d30",
        "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
        "6d8770ac83d07bea87e13c512a",
    ),
    (
        1,
        "4265617574792069732074727574682c20747275746820626561757479",
        "436f756e742d31",
        "af2d7e9ac9ae7e270f46ba1f975be53c09f8d875bdc8535458c2494e8a6eab25"
        "1c03d0c22a56b8ca42c2063b84",
    ),
]


def test_the_reference_hpke_matches_the_rfc_9180_a_1_vectors():
    v = {name: bytes.fromhex(value) for name, value in RFC_A11.items()}
    sk_r = X25519PrivateKey.from_private_bytes(v["skRm"])
    sk_e = X25519PrivateKey.from_private_bytes(v["skEm"])
    assert sk_r.public_key().public_bytes_raw() == v["pkRm"]
    assert sk_e.public_key().public_bytes_raw() == v["pkEm"]

    shared = reference_shared_secret(sk_e.exchange(sk_r.public_key()), v["enc"], v["pkRm"])
    key, base_nonce = reference_key_schedule(shared, v["info"], aead_id=AEAD_ID_AES_128_GCM)
    assert (shared, key, base_nonce) == (v["shared_secret"], v["key"], v["base_nonce"])

    for seq, pt, aad, ct in RFC_A111_ENCRYPTIONS:
        opened = reference_open(
            sk_r,
            v["enc"],
            bytes.fromhex(ct),
            v["info"],
            aead_id=AEAD_ID_AES_128_GCM,
            aad=bytes.fromhex(aad),
            seq=seq,
        )
        assert opened == bytes.fromhex(pt)


def test_a_wrapped_key_is_standard_hpke_that_the_reference_opens():
    worker = generate_worker_key()
    data_key = new_data_key()

    wrapped = wrap_data_key(data_key, public_key=worker.public_key, tenant=TENANT, job_id=JOB_ID)
    opened = reference_open(
        X25519PrivateKey.from_private_bytes(worker.private_key),
        wrapped.enc,
        wrapped.ciphertext,
        b"vaultq/v1|acme|job-a",
        aead_id=AEAD_ID_AES_256_GCM,
    )

    assert opened == data_key


def test_the_key_ring_opens_a_key_the_reference_wrapped():
    worker = generate_worker_key()
    data_key = os.urandom(32)
    enc, ciphertext = reference_seal(worker.public_key, data_key, b"vaultq/v1|acme|job-a")
    wrapped = WrappedKey(key_id=worker.key_id, enc=enc, ciphertext=ciphertext)

    assert KeyRing([worker.private_key]).unwrap(wrapped, tenant=TENANT, job_id=JOB_ID) == data_key


# ---------------------------------------------------------------------------------------------
# Behaviour of vaultq's key API, for both suites.

CLASSIC, HYBRID = Kem.X25519, Kem.MLKEM768_X25519
#: Wrapped key sizes a client pays per key (16-character key id): version 1 is 1 + 1 + 16 +
#: 32 + 48; version 2 is 1 + 6 (suite) + 1 + 16 + 1,120 (ML-KEM-768 ciphertext + X25519) + 48.
WRAPPED_BYTES = {CLASSIC: 98, HYBRID: 1192}
#: RFC 9180 suite ids (KEM, KDF, AEAD): X25519 or MLKEM768-X25519, HKDF-SHA256, AES-256-GCM.
SUITE_IDS = {CLASSIC: bytes.fromhex("002000010002"), HYBRID: bytes.fromhex("647a00010002")}


def entry(key: WorkerKey) -> tuple[Kem, bytes]:
    return key.kem, key.private_key


@pytest.fixture(params=list(Kem), ids=str)
def kem(request):
    return request.param


@pytest.fixture
def worker(kem):
    return generate_worker_key(kem=kem)


@pytest.fixture
def ring(worker):
    return KeyRing([entry(worker)])


def test_a_new_data_key_is_32_random_bytes_in_a_wipeable_buffer():
    first, second = new_data_key(), new_data_key()

    assert isinstance(first, bytearray)
    assert len(first) == 32
    assert first != second


def test_a_wrapped_data_key_unwraps_to_the_same_key_for_its_job(worker, ring):
    data_key = new_data_key()

    wrapped = wrap_data_key(data_key, public_key=worker.public_key, tenant=TENANT, job_id=JOB_ID)
    unwrapped = ring.unwrap(wrapped, tenant=TENANT, job_id=JOB_ID)

    assert isinstance(unwrapped, bytearray)
    assert unwrapped == data_key
    assert (wrapped.key_id, wrapped.kem) == (worker.key_id, worker.kem)


def test_a_wrapped_key_survives_its_serialised_form(worker, ring):
    data_key = new_data_key()
    wrapped = wrap_data_key(data_key, public_key=worker.public_key, tenant=TENANT, job_id=JOB_ID)

    data = wrapped.to_bytes()
    again = WrappedKey.from_bytes(data)

    assert again == wrapped
    assert len(data) == WRAPPED_BYTES[worker.kem]
    # Classic keys keep version 1, which workers that predate the hybrid suite open.
    assert data[0] == (1 if worker.kem is CLASSIC else 2)
    assert ring.unwrap(again, tenant=TENANT, job_id=JOB_ID) == data_key


def test_a_version_2_wrapped_key_may_name_the_classic_suite():
    worker = generate_worker_key(kem=CLASSIC)
    ring = KeyRing([entry(worker)])
    data_key = new_data_key()
    v1 = wrap_data_key(data_key, public_key=worker.public_key, tenant=TENANT, job_id=JOB_ID)
    v2 = b"\x02" + SUITE_IDS[CLASSIC] + v1.to_bytes()[1:]

    assert ring.unwrap(WrappedKey.from_bytes(v2), tenant=TENANT, job_id=JOB_ID) == data_key


def test_a_key_wrapped_for_one_job_cannot_be_unwrapped_as_another(worker, ring):
    wrapped = wrap_data_key(
        new_data_key(), public_key=worker.public_key, tenant=TENANT, job_id=JOB_ID
    )

    with pytest.raises(DecryptionFailed):
        ring.unwrap(wrapped, tenant=TENANT, job_id="job-b")


def test_a_key_wrapped_for_one_tenant_cannot_be_unwrapped_by_another(worker, ring):
    wrapped = wrap_data_key(
        new_data_key(), public_key=worker.public_key, tenant=TENANT, job_id=JOB_ID
    )

    with pytest.raises(DecryptionFailed):
        ring.unwrap(wrapped, tenant="globex", job_id=JOB_ID)


def test_changing_any_byte_of_a_wrapped_key_makes_it_fail(worker, ring):
    data = wrap_data_key(
        new_data_key(), public_key=worker.public_key, tenant=TENANT, job_id=JOB_ID
    ).to_bytes()
    id_start = data.index(worker.key_id.encode())
    id_end = id_start + len(worker.key_id)

    for index in range(len(data)):
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        # A changed key id byte is caught as an unknown (or malformed) key id instead.
        expected = (
            (UnknownKeyId, DecryptionFailed) if id_start <= index < id_end else DecryptionFailed
        )
        with pytest.raises(expected):
            ring.unwrap(WrappedKey.from_bytes(bytes(tampered)), tenant=TENANT, job_id=JOB_ID)


def test_a_truncated_wrapped_key_or_unknown_version_is_refused(worker):
    data = wrap_data_key(
        new_data_key(), public_key=worker.public_key, tenant=TENANT, job_id=JOB_ID
    ).to_bytes()

    for length in range(len(data)):
        with pytest.raises(DecryptionFailed):
            WrappedKey.from_bytes(data[:length])
    with pytest.raises(DecryptionFailed, match="unknown format version"):
        WrappedKey.from_bytes(b"\x03" + data[1:])


@pytest.mark.parametrize(
    "suite_id",
    [
        bytes.fromhex("005100010002"),  # MLKEM1024-P384: a KEM vaultq does not offer
        bytes.fromhex("647a00010003"),  # the hybrid KEM with ChaCha20-Poly1305
        bytes.fromhex("647a00030002"),  # ... with HKDF-SHA512
        SUITE_IDS[CLASSIC],  # relabelled classic: the hybrid enc does not fit
    ],
    ids=["unknown-kem", "unknown-aead", "unknown-kdf", "classic"],
)
def test_a_hybrid_wrapped_key_with_a_changed_suite_fails_cleanly(suite_id):
    worker = generate_worker_key(kem=HYBRID)
    data = wrap_data_key(
        new_data_key(), public_key=worker.public_key, tenant=TENANT, job_id=JOB_ID
    ).to_bytes()
    assert data[1:7] == SUITE_IDS[HYBRID]

    with pytest.raises(DecryptionFailed) as caught:
        WrappedKey.from_bytes(data[:1] + suite_id + data[7:])
    assert caught.value.code == "DECRYPTION_FAILED"


def test_a_wrapped_key_naming_another_suite_than_its_worker_key_fails_cleanly():
    classic, hybrid = generate_worker_key(kem=CLASSIC), generate_worker_key(kem=HYBRID)
    ring = KeyRing([entry(classic), entry(hybrid)])
    to_classic = wrap_data_key(
        new_data_key(), public_key=classic.public_key, tenant=TENANT, job_id=JOB_ID
    )
    # A classic wrapped key that claims the hybrid worker key's id.
    forged = WrappedKey(key_id=hybrid.key_id, enc=to_classic.enc, ciphertext=to_classic.ciphertext)

    with pytest.raises(DecryptionFailed, match="suite") as caught:
        ring.unwrap(forged, tenant=TENANT, job_id=JOB_ID)
    assert caught.value.code == "DECRYPTION_FAILED"


def test_a_key_wrapped_to_another_fleet_names_its_unknown_key_id(ring, kem):
    stranger = generate_worker_key(kem=kem)
    wrapped = wrap_data_key(
        new_data_key(), public_key=stranger.public_key, tenant=TENANT, job_id=JOB_ID
    )

    with pytest.raises(UnknownKeyId, match=stranger.key_id) as caught:
        ring.unwrap(wrapped, tenant=TENANT, job_id=JOB_ID)
    assert caught.value.code == "UNKNOWN_KEY_ID"


ROTATIONS = pytest.mark.parametrize(
    ("old_kem", "new_kem"), [(CLASSIC, CLASSIC), (CLASSIC, HYBRID), (HYBRID, HYBRID)]
)


@ROTATIONS
def test_during_rotation_keys_wrapped_to_either_active_key_unwrap(old_kem, new_kem):
    old, new = generate_worker_key(kem=old_kem), generate_worker_key(kem=new_kem)
    ring = KeyRing([entry(old), entry(new)])

    for worker in (old, new):
        data_key = new_data_key()
        wrapped = wrap_data_key(
            data_key, public_key=worker.public_key, tenant=TENANT, job_id=JOB_ID
        )
        assert wrapped.kem is worker.kem
        assert ring.unwrap(wrapped, tenant=TENANT, job_id=JOB_ID) == data_key
    assert ring.key_ids == {old.key_id, new.key_id}


@ROTATIONS
def test_after_rotation_a_key_wrapped_to_the_removed_key_is_an_unknown_key_id(old_kem, new_kem):
    old, new = generate_worker_key(kem=old_kem), generate_worker_key(kem=new_kem)
    wrapped = wrap_data_key(new_data_key(), public_key=old.public_key, tenant=TENANT, job_id=JOB_ID)

    with pytest.raises(UnknownKeyId):
        KeyRing([entry(new)]).unwrap(wrapped, tenant=TENANT, job_id=JOB_ID)


def test_the_key_id_is_derived_from_the_public_key_alone(worker):
    assert key_id_for(worker.public_key) == worker.key_id
    assert KeyRing([entry(worker)]).key_ids == {worker.key_id}


def test_a_classic_worker_key_is_a_raw_x25519_key_pair():
    worker = generate_worker_key()

    assert worker.kem is CLASSIC
    assert (
        X25519PrivateKey.from_private_bytes(worker.private_key).public_key().public_bytes_raw()
        == worker.public_key
    )


# draft-connolly-cfrg-xwing-kem-08, Appendix C, first vector: the 32-byte seed, and the key id
# (SHA-256, first 8 bytes) of the vector's 1,216-byte public key, hashed from the draft's hex.
XWING_SEED = "7f9c2ba4e88f827d616045507605853ed73b8093f6efbc88eb1a6eacfa66ef26"
XWING_PUBLIC_KEY_ID = "2e816deebcd76c5c"


def test_a_hybrid_worker_key_is_an_x_wing_seed_whose_public_key_matches_the_draft():
    ring = KeyRing([(HYBRID, bytes.fromhex(XWING_SEED))])

    assert ring.key_ids == {XWING_PUBLIC_KEY_ID}


def test_a_public_key_names_its_suite_by_its_length(worker):
    assert kem_of_public_key(worker.public_key) is worker.kem
    assert public_key_from_base64(b64(worker.public_key)) == worker.public_key
    for bad in (worker.public_key[:-1], worker.public_key + b"\x00", b""):
        with pytest.raises(InvalidParameterValue, match="1216 bytes"):
            wrap_data_key(new_data_key(), public_key=bad, tenant=TENANT, job_id=JOB_ID)
    with pytest.raises(InvalidParameterValue):
        public_key_from_base64("not base64!")


def test_a_malformed_hybrid_public_key_is_refused():
    # Not an ML-KEM-768 key: its coefficients exceed the modulus.
    with pytest.raises(InvalidParameterValue, match="mlkem768-x25519"):
        wrap_data_key(new_data_key(), public_key=b"\xff" * 1216, tenant=TENANT, job_id=JOB_ID)


def test_a_key_ring_loads_from_a_file_with_comments_and_several_keys(tmp_path):
    old, new = generate_worker_key(), generate_worker_key(kem=HYBRID)
    path = tmp_path / "worker-keys"
    # A bare key (every ring before the hybrid suite) is x25519; the hybrid one names its KEM.
    path.write_text(
        f"# rotated in 2025-01\n{b64(old.private_key)}\n\n"
        f"mlkem768-x25519:{b64(new.private_key)}  # current\n"
    )

    ring = KeyRing.from_file(path)

    assert ring.key_ids == {old.key_id, new.key_id}


def test_a_key_ring_loads_from_the_environment():
    old, new = generate_worker_key(), generate_worker_key(kem=HYBRID)
    keys = f"x25519:{b64(old.private_key)},mlkem768-x25519:{b64(new.private_key)}"
    environ = {"VAULTQ_WORKER_KEYS": keys}

    ring = KeyRing.from_env(environ=environ)

    assert ring.key_ids == {old.key_id, new.key_id}


def test_the_same_seed_is_another_key_in_each_suite():
    seed = os.urandom(32)

    classic, hybrid = KeyRing([(CLASSIC, seed)]), KeyRing([(HYBRID, seed)])

    assert classic.key_ids.isdisjoint(hybrid.key_ids)
    assert KeyRing.from_text(b64(seed)).key_ids == classic.key_ids


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment",
        "not-base64!",
        base64.b64encode(b"short").decode(),
        "mlkem768-x25519:" + base64.b64encode(b"short").decode(),
        "mlkem1024-p384:" + b64(bytes(32)),
        ":" + b64(bytes(32)),
        "mlkem768-x25519:",
    ],
)
def test_a_bad_key_ring_is_a_settings_error(text):
    with pytest.raises(InvalidSettings):
        KeyRing.from_text(text)


def test_a_missing_key_file_or_variable_is_a_settings_error(tmp_path):
    with pytest.raises(InvalidSettings):
        KeyRing.from_file(tmp_path / "absent")
    with pytest.raises(InvalidSettings, match="VAULTQ_WORKER_KEYS"):
        KeyRing.from_env(environ={})


def secret_forms(secret: bytes) -> list[str]:
    raw = [
        secret.hex(),
        secret.hex().upper(),
        b64(secret),
        base64.urlsafe_b64encode(secret).decode(),
    ]
    return [*raw, b64(secret).rstrip("="), secret.decode("latin-1"), repr(secret), secret[:8].hex()]


def rendered(error: BaseException) -> str:
    return "\n".join(
        [str(error), repr(error), *map(str, error.args), *traceback.format_exception(error)]
    )


def test_key_errors_never_show_key_bytes(worker, ring):
    data_key = new_data_key()
    wrapped = wrap_data_key(data_key, public_key=worker.public_key, tenant=TENANT, job_id=JOB_ID)
    prefix = f"{worker.kem}:"
    failures = []
    for call in (
        lambda: ring.unwrap(wrapped, tenant=TENANT, job_id="job-b"),
        lambda: KeyRing([entry(generate_worker_key(kem=worker.kem))]).unwrap(
            wrapped, tenant=TENANT, job_id=JOB_ID
        ),
        lambda: KeyRing.from_text(prefix + b64(worker.private_key[:31])),
        lambda: KeyRing.from_text(prefix + b64(worker.private_key) + "!"),
        lambda: KeyRing.from_text(b64(worker.private_key) + ":" + b64(worker.private_key)),
    ):
        with pytest.raises((DecryptionFailed, UnknownKeyId, InvalidSettings)) as caught:
            call()
        failures.append(rendered(caught.value))

    text = "\n".join(failures)
    for secret in (
        bytes(data_key),
        worker.private_key,
        worker.private_key[:31],
        wrapped.ciphertext,
    ):
        for form in secret_forms(secret):
            assert form not in text


def test_wipe_overwrites_every_byte_in_place():
    buffer = bytearray(os.urandom(64))
    view = memoryview(buffer)  # the same storage, seen from outside

    wipe(buffer)

    assert bytes(view) == bytes(64)
    assert len(buffer) == 64


def test_wiping_clears_the_buffer_even_when_the_block_fails(worker, ring):
    wrapped = wrap_data_key(
        new_data_key(), public_key=worker.public_key, tenant=TENANT, job_id=JOB_ID
    )

    with (
        pytest.raises(RuntimeError),
        wiping(ring.unwrap(wrapped, tenant=TENANT, job_id=JOB_ID)) as data_key,
    ):
        assert data_key != bytes(32)
        raise RuntimeError("handler failed")

    assert data_key == bytearray(32)


def test_a_vector_key_opens_only_as_a_vector_key_for_its_tenant_and_job(worker, ring):
    vector_key = os.urandom(32)
    wrapped = wrap_vector_key(
        vector_key, public_key=worker.public_key, tenant=TENANT, job_id=JOB_ID
    )
    as_data_key = wrap_data_key(
        vector_key, public_key=worker.public_key, tenant=TENANT, job_id=JOB_ID
    )

    assert bytes(ring.unwrap_vector_key(wrapped, tenant=TENANT, job_id=JOB_ID)) == vector_key
    for tenant, job_id in [("rival", JOB_ID), (TENANT, "job-b")]:
        with pytest.raises(DecryptionFailed):
            ring.unwrap_vector_key(wrapped, tenant=tenant, job_id=job_id)
    # Neither kind of wrapped key opens as the other, even for the same tenant and job.
    with pytest.raises(DecryptionFailed):
        ring.unwrap(wrapped, tenant=TENANT, job_id=JOB_ID)
    with pytest.raises(DecryptionFailed):
        ring.unwrap_vector_key(as_data_key, tenant=TENANT, job_id=JOB_ID)
