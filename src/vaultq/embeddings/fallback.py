"""A primary provider that hands its batches to a fallback after repeated failures.

Typically an OpenAI-compatible endpoint backed by the local model. The switch is a circuit
breaker held per instance (so per process): after ``failures_before_fallback`` primary
failures in a row, the batch that failed last and every batch after it go to the fallback;
once ``retry_primary_after_seconds`` have passed, the next batch tries the primary again, and
one success closes the circuit. ``stats()`` says what happened, for metrics.

Only ``EmbeddingApiError`` (timeouts included) counts as a failure. ``Throttled`` (the shared
request budget is spent) and invalid input are raised as they are: they are not the
provider's fault, and the local model would not fix them.

One collection must hold vectors of one model. Equal dimensions are required, but two
models of equal dimension still embed into unrelated spaces, so with
``verify_same_model=True`` the first batch the primary embeds (once per instance) is
checked: the fallback embeds its first text too, and a cosine below
``SAME_MODEL_MIN_COSINE`` raises ``InvalidSettings`` before any of the primary's vectors
is returned. ``embed_reporting`` says which provider embedded a batch, so its vectors can be
labelled with their model.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vaultq import errors
from vaultq.embeddings._vectors import check_positive_int

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from vaultq.embeddings._vectors import Vectors
    from vaultq.embeddings.protocol import EmbeddingProvider

__all__ = ["SAME_MODEL_MIN_COSINE", "FallbackProvider", "FallbackStats"]

log = logging.getLogger(__name__)

#: The same model served elsewhere (another runtime, fp16) agrees to ~0.9999 on a text;
#: unrelated models of one dimension agree about as well as random directions, near 0.
SAME_MODEL_MIN_COSINE = 0.99


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackStats:
    """Counters since the provider was made, and the circuit's state now."""

    primary_batches: int
    primary_failures: int
    fallback_batches: int
    fallback_texts: int
    consecutive_failures: int
    #: True while batches go straight to the fallback.
    using_fallback: bool
    #: True when the last batch was embedded by the fallback.
    last_batch_used_fallback: bool


class FallbackProvider:
    """``EmbeddingProvider`` that embeds with ``primary`` and falls back to ``fallback``.

    Both must have the same ``dimension`` (``InvalidSettings`` otherwise): a collection
    cannot mix vectors of different spaces. They must also be the same model, or vectors
    embedded during a fallback will not compare with the others: ``verify_same_model``
    checks it (see the module). The ``name`` of the last batch's provider is in
    ``last_provider_name``.
    """

    def __init__(
        self,
        primary: EmbeddingProvider,
        fallback: EmbeddingProvider,
        *,
        failures_before_fallback: int = 3,
        retry_primary_after_seconds: float = 60.0,
        verify_same_model: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if primary.dimension != fallback.dimension:
            raise errors.InvalidSettings(
                f"the fallback gives {fallback.dimension} dimensions, the primary "
                f"{primary.dimension}: they must be equal"
            )
        if not (math.isfinite(retry_primary_after_seconds) and retry_primary_after_seconds >= 0):
            raise errors.InvalidSettings("retry_primary_after_seconds must be >= 0")
        self.primary = primary
        self.fallback = fallback
        self.name = f"{primary.name}|fallback:{fallback.name}"
        self.dimension = primary.dimension
        self.failures_before_fallback = check_positive_int(
            "failures_before_fallback", failures_before_fallback
        )
        self._retry_primary_after_seconds = retry_primary_after_seconds
        self._unverified = verify_same_model
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None
        self._counts = {"primary_batches": 0, "primary_failures": 0, "consecutive_failures": 0}
        self._counts |= {"fallback_batches": 0, "fallback_texts": 0}
        self.last_provider_name = primary.name

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self.embed_reporting(texts)[0]

    def embed_reporting(self, texts: Sequence[str]) -> tuple[Vectors, EmbeddingProvider]:
        """``embed``, and the provider (``primary`` or ``fallback``) that embedded them."""
        if self._circuit_open():
            return self._embed_with_fallback(texts), self.fallback
        try:
            vectors = self.primary.embed(texts)
        except errors.EmbeddingApiError as exc:
            # Until the endpoint's space was checked, the local model must not stand in for
            # it: its vectors might be another model's.
            if self._unverified or not self._note_failure():
                raise
            log.warning(
                "%s failed (%s): embedding with %s", self.primary.name, exc.code, self.fallback.name
            )
            return self._embed_with_fallback(texts), self.fallback
        if self._unverified and len(vectors):
            self._verify_same_model(texts[0], vectors[0])
        self._note_success()
        return vectors, self.primary

    def _verify_same_model(self, text: str, vector: Vectors) -> None:
        cosine = float(self.fallback.embed([text])[0] @ vector)
        if cosine < SAME_MODEL_MIN_COSINE:
            raise errors.InvalidSettings(
                f"{self.primary.name} and {self.fallback.name} embed one text "
                f"{cosine:.2f} apart (cosine): they are different models, whose vectors must "
                "not share a collection; do not fall back from one to the other"
            )
        self._unverified = False
        log.info("%s agrees with %s (cosine %.4f)", self.primary.name, self.fallback.name, cosine)

    def stats(self) -> FallbackStats:
        with self._lock:
            return FallbackStats(
                **self._counts,
                using_fallback=self._open_until is not None,
                last_batch_used_fallback=self.last_provider_name != self.primary.name,
            )

    def _circuit_open(self) -> bool:
        with self._lock:
            if self._open_until is None:
                return False
            if self._clock() < self._open_until:
                return True
            # Half-open: this batch tries the primary; one more failure reopens at once.
            self._open_until = None
            self._counts["consecutive_failures"] = self.failures_before_fallback - 1
            return False

    def _note_failure(self) -> bool:
        """Count a primary failure; True when the batch should go to the fallback."""
        with self._lock:
            self._counts["primary_batches"] += 1
            self._counts["primary_failures"] += 1
            self._counts["consecutive_failures"] += 1
            if self._counts["consecutive_failures"] < self.failures_before_fallback:
                return False
            self._open_until = self._clock() + self._retry_primary_after_seconds
            return True

    def _note_success(self) -> None:
        with self._lock:
            self._counts["primary_batches"] += 1
            self._counts["consecutive_failures"] = 0
            self.last_provider_name = self.primary.name

    def _embed_with_fallback(self, texts: Sequence[str]) -> Vectors:
        vectors = self.fallback.embed(texts)
        with self._lock:
            self._counts["fallback_batches"] += 1
            self._counts["fallback_texts"] += len(vectors)
            self.last_provider_name = self.fallback.name
        return vectors


if TYPE_CHECKING:

    def _satisfies_protocol(provider: FallbackProvider) -> EmbeddingProvider:
        """mypy proves here that ``FallbackProvider`` is an ``EmbeddingProvider``."""
        return provider
