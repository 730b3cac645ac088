"""Best-effort zeroisation of key material and plaintext held in ``bytearray`` buffers.

What this can promise: ``wipe`` overwrites every byte of the buffer it is given, in place,
so the memory that buffer owns at that moment holds zeros afterwards.

What Python cannot promise, and vaultq does not claim:

- ``bytes`` and ``str`` are immutable. Any key or plaintext that ever existed as one (a value
  read from a file or an environment variable, a base64 decode, ``os.urandom``) stays in
  memory until the allocator reuses it, and cannot be wiped.
- The cryptography library copies keys into its own (Rust/OpenSSL) objects, e.g. an
  ``AESGCM``, ``X25519PrivateKey`` or ``MLKEM768PrivateKey`` instance, and frees them when
  they are collected; vaultq cannot reach those copies. A hybrid worker key's seed expands
  (SHAKE256) into immutable ``bytes`` too. HPKE decryption returns ``bytes``, so an
  unwrapped data key briefly exists as an immutable copy before it is moved into a
  ``bytearray``.
- A ``bytearray`` that grew may have been moved by the allocator, leaving its old contents
  behind unwiped. Buffers here are created at their final size and never resized.
- The operating system may swap or core-dump process memory; vaultq writes no key material
  to disk itself, and relies on short-lived worker processes for the rest.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["wipe", "wiping"]


def wipe(buffer: bytearray) -> None:
    """Overwrite ``buffer`` with zeros in place (its length is unchanged)."""
    # A memoryview cannot resize the bytearray, so the write lands in its current storage.
    with memoryview(buffer) as view:
        view[:] = bytes(len(view))


@contextmanager
def wiping(buffer: bytearray) -> Iterator[bytearray]:
    """Yield ``buffer`` and wipe it on exit, also when the block raises.

    ``with wiping(keyring.unwrap(wrapped, tenant=t, job_id=j)) as data_key: ...``
    """
    try:
        yield buffer
    finally:
        wipe(buffer)
