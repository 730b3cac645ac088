"""One settings object, read from the environment (``VAULTQ_*``) or a ``.env`` file.

Authentication has its own settings (``VAULTQ_AUTH_*``, see ``vaultq.api.auth``).
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_URL = "sqlite:///.vaultq/vaultq.db"
SCHEMES = ("sqlite", "aws")
#: The embedded vector store, or pgvector (libpq takes both spellings).
VECTOR_SCHEMES = ("sqlite", "postgresql", "postgres")


class Settings(BaseSettings):
    """Where vaultq keeps its state, and how its API behaves."""

    model_config = SettingsConfigDict(
        env_prefix="VAULTQ_", env_file=".env", extra="ignore", frozen=True
    )

    #: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with an optional
    #: ``?durability=process`` to trade power-loss safety for send speed; or
    #: ``aws://?region=R[&endpoint_url=U][&jobs_table=T][&state_table=S][&state=sqlite:///...]``
    #: for SQS, S3 and DynamoDB (the outbox, rate limits and idempotency records in the state
    #: table ``S``, default ``vaultq-state``, or in a local ``state=`` database).
    url: str = Field(default=DEFAULT_URL)
    #: The vector store: ``sqlite:///path.db`` (embedded) or ``postgresql://...`` (pgvector,
    #: which every worker shares). None: ``vectors.db`` beside an embedded ``url``'s
    #: database; an ``aws://`` url needs one. Secret: the URL may hold a password.
    vectors_url: SecretStr | None = None
    #: With the queue disabled the API still accepts jobs; they wait, ``queued``, in the
    #: outbox until the queue is enabled again.
    queue_enabled: bool = True
    #: Largest request body the API reads (JSON); uploads have ``max_blob_bytes``.
    max_request_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_blob_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=5 * 1024**3)
    #: Requests per second per tenant (a token bucket shared by every API process), and burst.
    rate_limit_per_second: float = Field(default=50.0, gt=0, le=100_000)
    rate_limit_burst: int = Field(default=100, ge=1, le=1_000_000)
    #: Origins allowed to call the API from a browser; none by default.
    cors_origins: tuple[str, ...] = ()
    #: The tenant whose admins operate the deployment: only they may purge the app's queues,
    #: which every tenant shares. None (the default) means nobody may purge through the API.
    operator_tenant: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    #: How long a download URL stays valid.
    download_url_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    #: How often ``vaultq up`` evaluates the app's alarms.
    alarm_interval_seconds: float = Field(default=10.0, ge=0.05, le=3600)
    #: A webhook told of every alarm's changes, besides each alarm's own; secret because
    #: webhook URLs often hold a token.
    alarm_webhook_url: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme = url.split("://", 1)[0]
        if "://" not in url or scheme not in SCHEMES:
            raise ValueError(f"VAULTQ_URL must start with one of {', '.join(SCHEMES)}://")
        return url

    @field_validator("vectors_url")
    @classmethod
    def _known_vector_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None:
            return url
        scheme, separator, _rest = url.get_secret_value().partition("://")
        if not separator or scheme not in VECTOR_SCHEMES:
            # The message names the variable only: the value may hold a password.
            raise ValueError(
                f"VAULTQ_VECTORS_URL must start with one of {', '.join(VECTOR_SCHEMES)}://"
            )
        return url
