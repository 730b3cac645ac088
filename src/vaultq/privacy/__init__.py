"""Privacy: redaction of what vaultq stores or shows about failures."""

from __future__ import annotations

from vaultq.privacy.envelope import open_sealed, seal
from vaultq.privacy.keys import (
    Kem,
    KeyRing,
    WorkerKey,
    WrappedKey,
    generate_worker_key,
    key_id_for,
    new_data_key,
    wrap_data_key,
)
from vaultq.privacy.zeroise import wipe, wiping

__all__ = [
    "Kem",
    "KeyRing",
    "WorkerKey",
    "WrappedKey",
    "generate_worker_key",
    "key_id_for",
    "new_data_key",
    "open_sealed",
    "seal",
    "wipe",
    "wiping",
    "wrap_data_key",
]
