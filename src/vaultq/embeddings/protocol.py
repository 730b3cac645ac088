"""What an embedding provider is, and the checks every provider shares.

This module needs neither NumPy nor torch: ``import vaultq.embeddings`` works without the
``embeddings`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from vaultq import errors

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    from numpy.typing import NDArray

__all__ = ["EmbeddingProvider", "validate_texts"]


class EmbeddingProvider(Protocol):
    """Turns texts into unit vectors, so that a dot product is their cosine similarity."""

    @property
    def name(self) -> str:
        """A stable name for metrics and collection metadata (never a secret)."""
        ...

    @property
    def dimension(self) -> int:
        """The length of every vector this provider returns."""
        ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """One row per text, in order: a C-contiguous float32 array of shape
        ``(len(texts), dimension)`` whose rows have unit L2 norm. No texts give a
        ``(0, dimension)`` array. Raises ``InvalidParameterValue`` for anything but a sequence
        of strings, and a ``VaultqError`` with a ``failure_reason`` when the provider fails.
        """
        ...


def validate_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, or ``InvalidParameterValue``: a bare ``str`` is a sequence of
    strings too, and would be embedded one character at a time."""
    if isinstance(texts, str | bytes) or not hasattr(texts, "__len__"):
        raise errors.InvalidParameterValue("texts must be a sequence of strings, not one string")
    items = list(texts)
    for position, text in enumerate(items):
        if not isinstance(text, str):
            raise errors.InvalidParameterValue(
                f"texts[{position}] is a {type(text).__name__}, not a str"
            )
    return items
