"""NumPy helpers shared by the providers. NumPy is the ``embeddings`` extra."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaultq import errors

try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise errors.MissingDependency(
        "embedding providers need NumPy: pip install 'vaultq[embeddings]'"
    ) from exc

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    Vectors = NDArray[np.float32]


def empty(dimension: int) -> Vectors:
    return np.zeros((0, dimension), dtype=np.float32)


def unit_rows(rows: ArrayLike, *, dimension: int) -> Vectors:
    """``rows`` as C-contiguous float32 unit rows (normalised in float64); ``ValueError`` when
    the shape is not ``(n, dimension)``, or a row is not finite or is zero."""
    matrix = np.asarray(rows, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != dimension:
        raise ValueError(f"expected vectors of {dimension} dimensions, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("a vector holds NaN or infinity")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("a vector is all zeros")
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


def check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise errors.InvalidSettings(f"{name} must be a positive int, not {value!r}")
    return value
