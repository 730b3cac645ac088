"""The vector store: the Protocol and its values. Backends live in their own modules.

Importing this package never imports NumPy; ``vaultq.vectors.similarity`` (``top_k``) and
``vaultq.vectors.embedded`` need it (the ``embeddings`` extra).
"""

from __future__ import annotations

from vaultq.vectors.protocol import (
    MAX_BATCH,
    MAX_DIMENSION,
    MAX_K,
    MAX_PAGE_SIZE,
    Collection,
    Metric,
    Mode,
    SealedItem,
    SealedPage,
    SearchHit,
    VectorItem,
    VectorStore,
)

__all__ = [
    "MAX_BATCH",
    "MAX_DIMENSION",
    "MAX_K",
    "MAX_PAGE_SIZE",
    "Collection",
    "Metric",
    "Mode",
    "SealedItem",
    "SealedPage",
    "SearchHit",
    "VectorItem",
    "VectorStore",
]
