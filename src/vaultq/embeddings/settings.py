"""Which embedding provider a deployment uses: ``VAULTQ_EMBEDDINGS_*`` (environment or
``.env``), read by ``EmbeddingSettings.from_env`` and built by ``open_provider``.

Without ``VAULTQ_EMBEDDINGS_URL`` every vector comes from the local all-MiniLM-L6-v2. With
it, texts go to ``{URL}/v1/embeddings`` (``..._MODEL`` and ``..._DIMENSION`` are then
required), each request first taking a token of the limiter the caller passes (shared by
every worker process of the deployment: ``..._RATE_PER_MINUTE``, default 500, and
``..._BURST``). The API key comes from ``..._API_KEY`` or, better, a file
(``..._API_KEY_FILE``, e.g. a mounted secret); it is held as a ``SecretStr``, sent only in
the ``Authorization`` header and never logged.

``..._FALLBACK=local`` (the default) embeds a batch with the local model when the endpoint
failed it after its retries, and keeps sending batches there for
``..._RETRY_REMOTE_AFTER_SECONDS``. A collection holds vectors of one model only, so the
fallback needs an endpoint serving the local model's space: its dimension must be 384, and
each process checks once, on the first batch the endpoint embeds, that the local model
agrees with it (``FallbackProvider(verify_same_model=True)``); another model is refused
with ``InvalidSettings`` rather than mixed in. ``..._FALLBACK=none`` sends batches to the
endpoint only: what keeps failing fails the message (``EMBEDDING_API_ERROR`` /
``EMBEDDING_API_TIMEOUT``), which is retried and then dead-lettered.

``..._COLLECTION`` (default ``message_embeddings``) names the collection the vectors go to,
and ``..._MODE`` (``sealed``, the default, or ``indexed``) what it stores: ciphertext only
the tenant's vector key opens, or plain vectors the store searches itself. The store (the
embedded file or pgvector) is ``VAULTQ_VECTORS_URL``'s (``vaultq.wiring.open_vectors``).
"""

from __future__ import annotations

import os
from pathlib import Path  # noqa: TC003 - pydantic reads the annotation at run time
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from vaultq import errors
from vaultq.runtime.rate_limit import TokenBucket
from vaultq.vectors.protocol import MODEL_NAME_CHARACTERS, Mode, validate_collection_name

if TYPE_CHECKING:
    from vaultq.embeddings.protocol import EmbeddingProvider
    from vaultq.runtime.rate_limit import RateLimiter

__all__ = ["ENV_PREFIX", "EmbeddingSettings", "open_provider"]

ENV_PREFIX = "VAULTQ_EMBEDDINGS_"
#: The limiter key every worker spends a token of before each request to the endpoint.
LIMITER_KEY = "embeddings"


class EmbeddingSettings(BaseSettings):
    """The embedding provider's settings; see the module's docstring."""

    # .env also holds other settings, so extras are ignored here; `from_env` checks names.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", env_ignore_empty=True, frozen=True
    )

    #: The endpoint's base URL (``{url}/v1/embeddings``); None: the local model only.
    url: str | None = None
    #: As providers spell them, and short enough to label metrics with.
    model: str | None = Field(default=None, pattern=f"^[{MODEL_NAME_CHARACTERS}]{{1,100}}$")
    dimension: int | None = Field(default=None, ge=1, le=16_000)
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    #: Bounds each network step of a request, as httpx's timeout does.
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    #: Requests per batch before it counts as failed (the first included).
    max_attempts: int = Field(default=4, ge=1, le=20)
    rate_per_minute: float = Field(default=500.0, gt=0, le=1_000_000)
    burst: int = Field(default=10, ge=1, le=100_000)
    fallback: Literal["local", "none"] = "local"
    retry_remote_after_seconds: float = Field(default=60.0, ge=0, le=86_400)
    #: The collection the vectors go to; made on first use, of the provider's dimension.
    collection: str = "message_embeddings"
    #: What the collection stores: ``sealed`` ciphertext or ``indexed`` plain vectors.
    mode: Mode = Mode.SEALED

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, name: str) -> str:
        try:
            return validate_collection_name(name)
        except errors.InvalidParameterValue:
            # The store's rule, in a message that names no value (as every error here).
            raise ValueError(
                "a collection name is 1-63 of a-z 0-9 _ starting with a letter"
            ) from None

    @model_validator(mode="after")
    def _consistent(self) -> EmbeddingSettings:
        if self.url is None:
            return self
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must be an http:// or https:// URL")
        parts = urlsplit(self.url)
        if parts.username or parts.password or parts.query:
            # HTTP clients log request URLs: a secret belongs in api_key or api_key_file.
            raise ValueError("url may hold no user, password or query")
        if self.model is None or self.dimension is None:
            raise ValueError("url needs model and dimension too")
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("give api_key or api_key_file, not both")
        return self

    @classmethod
    def from_env(cls) -> EmbeddingSettings:
        """Read ``VAULTQ_EMBEDDINGS_*``; unknown names are refused (a misspelt variable must
        not silently keep the local model), and errors name variables, never values."""
        known = {f"{ENV_PREFIX}{name}".upper() for name in cls.model_fields}
        unknown = sorted(
            n for n in os.environ if n.upper().startswith(ENV_PREFIX) and n.upper() not in known
        )
        if unknown:
            raise errors.InvalidSettings(f"unknown variable(s) {', '.join(unknown)}")
        try:
            return cls()
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]).upper() or "*"
            raise errors.InvalidSettings(f"{ENV_PREFIX}{where}: {first['msg']}") from None
        except SettingsError as exc:
            raise errors.InvalidSettings(str(exc)) from None

    @property
    def remote(self) -> bool:
        return self.url is not None

    @property
    def bucket(self) -> TokenBucket:
        return TokenBucket.per_minute(self.rate_per_minute, burst=self.burst)

    def api_key_value(self) -> str | None:
        """The API key, read from its file at each call (a provider built once keeps the
        key it was given: a rotated secret is picked up when its processes restart)."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_file is None:
            return None
        try:
            key = self.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise errors.InvalidSettings(
                f"{ENV_PREFIX}API_KEY_FILE cannot be read ({type(exc).__name__})"
            ) from None
        if not key:
            raise errors.InvalidSettings(f"{ENV_PREFIX}API_KEY_FILE is empty")
        return key


def open_provider(
    settings: EmbeddingSettings,
    *,
    local: EmbeddingProvider,
    limiter: RateLimiter | None = None,
) -> EmbeddingProvider:
    """The provider ``settings`` describe: ``local`` alone, the endpoint alone, or the
    endpoint falling back to ``local`` per batch. ``limiter`` should be shared by every
    worker process (``vaultq.wiring.open_rate_limiter(default=settings.bucket)``); without
    one, each process keeps its own bucket. ``InvalidSettings`` when the endpoint's
    dimension cannot fall back to ``local``."""
    if settings.url is None:
        return local
    # Imported here: httpx2 and NumPy are the embeddings extra.
    from vaultq.embeddings.fallback import FallbackProvider  # noqa: PLC0415
    from vaultq.embeddings.openai_compat import (  # noqa: PLC0415
        OpenAICompatibleProvider,
        RetrySettings,
    )

    assert settings.model is not None and settings.dimension is not None  # noqa: S101 - validated
    remote = OpenAICompatibleProvider(
        settings.url,
        model=settings.model,
        dimension=settings.dimension,
        api_key=settings.api_key_value(),
        timeout_seconds=settings.timeout_seconds,
        limiter=limiter,
        limiter_key=LIMITER_KEY,
        retry=RetrySettings(max_attempts=settings.max_attempts),
    )
    if settings.fallback == "none":
        return remote
    if settings.dimension != local.dimension:
        remote.close()
        raise errors.InvalidSettings(
            f"{ENV_PREFIX}DIMENSION is {settings.dimension} but the local fallback "
            f"{local.name} gives {local.dimension}: one collection cannot hold both; set "
            f"{ENV_PREFIX}FALLBACK=none or serve a model of the local model's space"
        )
    return FallbackProvider(
        remote,
        local,
        failures_before_fallback=1,
        retry_primary_after_seconds=settings.retry_remote_after_seconds,
        verify_same_model=True,
    )
