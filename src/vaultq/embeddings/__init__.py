"""Embedding providers: the local all-MiniLM-L6-v2, any OpenAI-compatible endpoint, and a
fallback from one to the other.

Importing this package imports neither NumPy, httpx2 nor torch: each provider is imported on
first access (``from vaultq.embeddings import LocalSentenceModel``), and the local model
loads torch only when it first embeds. A missing optional dependency raises
``MissingDependency`` naming the ``embeddings`` extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vaultq.embeddings.protocol import EmbeddingProvider

if TYPE_CHECKING:
    from vaultq.embeddings.fallback import FallbackProvider, FallbackStats
    from vaultq.embeddings.local import LocalSentenceModel, Precision
    from vaultq.embeddings.openai_compat import (
        DEFAULT_BUCKET,
        OpenAICompatibleProvider,
        RetrySettings,
    )

__all__ = [
    "DEFAULT_BUCKET",
    "EmbeddingProvider",
    "FallbackProvider",
    "FallbackStats",
    "LocalSentenceModel",
    "OpenAICompatibleProvider",
    "Precision",
    "RetrySettings",
]

_LAZY = {
    "DEFAULT_BUCKET": "vaultq.embeddings.openai_compat",
    "FallbackProvider": "vaultq.embeddings.fallback",
    "FallbackStats": "vaultq.embeddings.fallback",
    "LocalSentenceModel": "vaultq.embeddings.local",
    "OpenAICompatibleProvider": "vaultq.embeddings.openai_compat",
    "Precision": "vaultq.embeddings.local",
    "RetrySettings": "vaultq.embeddings.openai_compat",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vaultq.embeddings' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
