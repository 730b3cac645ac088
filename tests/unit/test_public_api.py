"""The curated public API and the promise that the core needs no optional driver."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import vaultq


def test_public_api_is_exactly_what_is_documented() -> None:
    assert sorted(vaultq.__all__) == sorted(
        [
            "App",
            "DeadLetterQueue",
            "DeleteEntry",
            "Failure",
            "FailureReason",
            "MessageAttribute",
            "OutgoingMessage",
            "QueueAttributes",
            "QueueBackend",
            "QueueStats",
            "ReceivedMessage",
            "RedriveAllowPolicy",
            "RedrivePolicy",
            "RetryPolicy",
            "SendEntry",
            "SendResult",
            "Settings",
            "VaultqError",
            "VisibilityEntry",
            "__version__",
            "open_queues",
        ]
    )
    for name in vaultq.__all__:
        assert getattr(vaultq, name) is not None


def test_import_vaultq_loads_no_backend_driver() -> None:
    probe = textwrap.dedent("""
        import sys
        import vaultq
        loaded = {"sqlite3", "boto3", "psycopg", "torch", "vaultq.queues.sqlite"} & set(sys.modules)
        print(",".join(sorted(loaded)))
    """)
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_import_vaultq_works_with_optional_drivers_blocked() -> None:
    probe = textwrap.dedent("""
        import sys
        for name in ("boto3", "botocore", "psycopg", "numpy", "torch"):
            sys.modules[name] = None  # makes any import of it fail
        import vaultq
        print(vaultq.__version__)
    """)
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == vaultq.__version__
