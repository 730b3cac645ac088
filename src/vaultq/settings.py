"""One settings object, read from the environment (``VAULTQ_*``) or a ``.env`` file."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_URL = "sqlite:///.vaultq/vaultq.db"
SCHEMES = ("sqlite",)


class Settings(BaseSettings):
    """Where vaultq keeps its state. Unknown ``VAULTQ_*`` variables are refused."""

    model_config = SettingsConfigDict(
        env_prefix="VAULTQ_", env_file=".env", extra="forbid", frozen=True
    )

    #: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with an optional
    #: ``?durability=process`` to trade power-loss safety for send speed.
    url: str = Field(default=DEFAULT_URL)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme = url.split("://", 1)[0]
        if "://" not in url or scheme not in SCHEMES:
            raise ValueError(f"VAULTQ_URL must start with one of {', '.join(SCHEMES)}://")
        return url
