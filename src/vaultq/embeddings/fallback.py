"""A primary provider that hands its batches to a fallback after repeated failures.

Typically an OpenAI-compatible endpoint backed by the local model. The switch is a circuit
breaker held per instance (so per process): after ``failures_before_fallback`` primary
failures in a row, the batch that failed last and every batch after it go to the fallback;
once ``retry_primary_after_seconds`` have passed, the next batch tries the primary again, and
one success closes the circuit. ``stats()`` says what happened, for metrics.

Only ``EmbeddingApiError`` (timeouts included) counts as a failure. ``Throttled`` (the shared
request budget is spent) and invalid input are raised as they are: they are not the
provider's fault, and the local model would not fix them.
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

__all__ = ["FallbackProvider", "FallbackStats"]

log = logging.getLogger(__name__)


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
    cannot mix vectors of different spaces. They should also be the same model, or vectors
    embedded during a fallback will not compare with the others; the ``name`` of the batch's
    provider is in ``last_provider_name``.
    """

    def __init__(
        self,
        primary: EmbeddingProvider,
        fallback: EmbeddingProvider,
        *,
        failures_before_fallback: int = 3,
        retry_primary_after_seconds: float = 60.0,
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
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None
        self._counts = {"primary_batches": 0, "primary_failures": 0, "consecutive_failures": 0}
        self._counts |= {"fallback_batches": 0, "fallback_texts": 0}
        self.last_provider_name = primary.name

    def embed(self, texts: Sequence[str]) -> Vectors:
        if self._circuit_open():
            return self._embed_with_fallback(texts)
        try:
            vectors = self.primary.embed(texts)
        except errors.EmbeddingApiError as exc:
            if not self._note_failure():
                raise
            log.warning(
                "%s failed (%s): embedding with %s", self.primary.name, exc.code, self.fallback.name
            )
            return self._embed_with_fallback(texts)
        self._note_success()
        return vectors

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
