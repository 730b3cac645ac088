"""A sealed text opens only with its key, for its tenant and message, and unchanged."""

from __future__ import annotations

import base64
import os
import traceback

import pytest

from vaultq.errors import DecryptionFailed, InvalidParameterValue
from vaultq.privacy import open_sealed, seal, wiping

TENANT = "acme"
MESSAGE_ID = "msg-1"
PLAINTEXT = b"Patient 4711: diagnosis confidential"


@pytest.fixture
def data_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def sealed(data_key: bytes) -> bytes:
    return seal(data_key, tenant=TENANT, message_id=MESSAGE_ID, plaintext=PLAINTEXT)


def secret_forms(secret: bytes) -> list[str]:
    """Ways a secret could leak into a message: raw, hex, base64 (padded or not)."""
    forms = [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        base64.b64encode(secret).decode().rstrip("="),
        secret.decode("latin-1"),
        repr(secret),
    ]
    # A prefix of a secret is a leak too; 8 bytes is long enough to rule out coincidence.
    forms += [secret[:8].hex(), base64.b64encode(secret[:9]).decode()]
    return forms


def rendered(error: BaseException) -> str:
    return "\n".join(
        [str(error), repr(error), *map(str, error.args), *traceback.format_exception(error)]
    )


def test_a_sealed_text_opens_to_the_same_bytes_in_a_wipeable_buffer(data_key, sealed):
    opened = open_sealed(data_key, tenant=TENANT, message_id=MESSAGE_ID, sealed=sealed)

    assert isinstance(opened, bytearray)
    assert opened == PLAINTEXT


def test_an_empty_text_round_trips(data_key):
    sealed = seal(data_key, tenant=TENANT, message_id=MESSAGE_ID, plaintext=b"")

    assert open_sealed(data_key, tenant=TENANT, message_id=MESSAGE_ID, sealed=sealed) == b""


def test_the_format_is_a_version_byte_a_nonce_and_the_ciphertext_with_its_tag(sealed):
    assert sealed[0] == 1
    assert len(sealed) == 1 + 12 + len(PLAINTEXT) + 16
    assert PLAINTEXT not in sealed


def test_sealing_the_same_text_twice_uses_a_fresh_nonce(data_key, sealed):
    again = seal(data_key, tenant=TENANT, message_id=MESSAGE_ID, plaintext=PLAINTEXT)

    assert again[1:13] != sealed[1:13]
    assert again != sealed


def test_a_ciphertext_moved_to_another_message_does_not_open(data_key, sealed):
    with pytest.raises(DecryptionFailed):
        open_sealed(data_key, tenant=TENANT, message_id="msg-2", sealed=sealed)


def test_a_ciphertext_moved_to_another_tenant_does_not_open(data_key, sealed):
    with pytest.raises(DecryptionFailed):
        open_sealed(data_key, tenant="globex", message_id=MESSAGE_ID, sealed=sealed)


def test_changing_any_byte_makes_the_sealed_text_fail_to_open(data_key, sealed):
    for index in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[index] ^= 0x01
        with pytest.raises(DecryptionFailed):
            open_sealed(data_key, tenant=TENANT, message_id=MESSAGE_ID, sealed=tampered)


def test_a_truncated_or_extended_sealed_text_does_not_open(data_key, sealed):
    for length in range(len(sealed)):
        with pytest.raises(DecryptionFailed):
            open_sealed(data_key, tenant=TENANT, message_id=MESSAGE_ID, sealed=sealed[:length])
    with pytest.raises(DecryptionFailed):
        open_sealed(data_key, tenant=TENANT, message_id=MESSAGE_ID, sealed=sealed + b"\x00")


def test_another_key_does_not_open_the_sealed_text(sealed):
    with pytest.raises(DecryptionFailed):
        open_sealed(os.urandom(32), tenant=TENANT, message_id=MESSAGE_ID, sealed=sealed)


def test_an_unknown_format_version_is_refused_by_name(data_key, sealed):
    future = bytes([2]) + sealed[1:]

    with pytest.raises(DecryptionFailed, match="unknown format version 2") as caught:
        open_sealed(data_key, tenant=TENANT, message_id=MESSAGE_ID, sealed=future)
    assert caught.value.code == "DECRYPTION_FAILED"
    assert caught.value.failure_reason == "DECRYPTION_FAILED"


@pytest.mark.parametrize(
    ("tenant", "message_id"), [("a|b", "c"), ("a", "b|c"), ("", "m"), ("t", "")]
)
def test_ids_that_would_make_the_binding_ambiguous_are_refused(data_key, tenant, message_id):
    # Without this, ("a|b", "c") and ("a", "b|c") would share associated data.
    with pytest.raises(InvalidParameterValue):
        seal(data_key, tenant=tenant, message_id=message_id, plaintext=PLAINTEXT)


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_a_data_key_of_the_wrong_length_is_refused(length):
    with pytest.raises(InvalidParameterValue):
        seal(os.urandom(length), tenant=TENANT, message_id=MESSAGE_ID, plaintext=PLAINTEXT)


def test_decryption_errors_never_show_the_plaintext_or_the_key(data_key, sealed):
    failures = []
    attempts = [
        (os.urandom(32), MESSAGE_ID, sealed),
        (data_key, "msg-2", sealed),
        (data_key, MESSAGE_ID, sealed[:-1] + bytes([sealed[-1] ^ 1])),
        (data_key, MESSAGE_ID, b"\x02" + sealed[1:]),
        (data_key, MESSAGE_ID, sealed[:20]),
    ]
    for key, message_id, candidate in attempts:
        with pytest.raises(DecryptionFailed) as caught:
            open_sealed(key, tenant=TENANT, message_id=message_id, sealed=candidate)
        failures.append(rendered(caught.value))

    text = "\n".join(failures)
    for secret in (data_key, PLAINTEXT, sealed[13:]):
        for form in secret_forms(secret):
            assert form not in text
    assert PLAINTEXT.decode() not in text


def test_the_opened_text_can_be_wiped_after_use(data_key, sealed):
    with wiping(open_sealed(data_key, tenant=TENANT, message_id=MESSAGE_ID, sealed=sealed)) as text:
        assert text == PLAINTEXT

    assert text == bytearray(len(PLAINTEXT))
