"""What a failure record says: the reason code once, the type of an error without one."""

from __future__ import annotations

import pytest

from vaultq import errors
from vaultq.runtime.failures import NonRetryableError, describe


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (ValueError("row 3 has no title"), "ValueError: row 3 has no title"),
        (
            errors.UnknownKeyId("no worker key a1 is loaded"),
            "UNKNOWN_KEY_ID: no worker key a1 is loaded",
        ),
        (errors.JobNotFound("no job j1"), "JobNotFound: no job j1"),
        (
            NonRetryableError(
                "DECRYPTION_FAILED: does not authenticate", reason="DECRYPTION_FAILED"
            ),
            "DECRYPTION_FAILED: does not authenticate",
        ),
        (NonRetryableError("bad row"), "NonRetryableError: bad row"),
    ],
)
def test_a_failure_names_its_code_once_or_its_type(exc: Exception, text: str) -> None:
    assert describe(exc) == text
