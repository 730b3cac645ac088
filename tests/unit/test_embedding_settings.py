"""Choosing the embedding provider from ``VAULTQ_EMBEDDINGS_*``, and the rule that one
collection holds one model's vectors (dimension checked against the collection, the
fallback checked against the endpoint)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from vaultq import errors
from vaultq.embeddings.fallback import FallbackProvider
from vaultq.embeddings.openai_compat import OpenAICompatibleProvider
from vaultq.embeddings.pipeline import EmbeddingServices, embed_upload, ensure_collection
from vaultq.embeddings.settings import EmbeddingSettings, open_provider
from vaultq.privacy.keys import KeyRing, generate_worker_key
from vaultq.vectors.embedded import EmbeddedVectors

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

API_KEY = "sk-unit-4f9c2e7a0b1d"


class Stub:
    """A provider whose every vector is the unit vector along ``axis``."""

    def __init__(self, name: str, dimension: int = 4, *, axis: int = 0) -> None:
        self.name = name
        self.dimension = dimension
        self.axis = axis
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> Any:
        self.calls += 1
        rows = np.zeros((len(texts), self.dimension), dtype=np.float32)
        rows[:, self.axis] = 1
        return rows


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("VAULTQ_EMBEDDINGS_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("VAULTQ_EMBEDDINGS_MODEL", "text-embedding-3-small")
    monkeypatch.setenv("VAULTQ_EMBEDDINGS_DIMENSION", "4")
    return monkeypatch


@pytest.fixture
def vectors(tmp_path: Path) -> Iterator[EmbeddedVectors]:
    store = EmbeddedVectors(tmp_path / "vectors.db")
    yield store
    store.close()


def test_without_an_endpoint_the_local_model_embeds() -> None:
    local = Stub("local")

    assert open_provider(EmbeddingSettings.from_env(), local=local) is local


def test_an_endpoint_with_fallback_none_is_used_alone(env: pytest.MonkeyPatch) -> None:
    env.setenv("VAULTQ_EMBEDDINGS_FALLBACK", "none")
    env.setenv("VAULTQ_EMBEDDINGS_DIMENSION", "1536")

    provider = open_provider(EmbeddingSettings.from_env(), local=Stub("local"))

    assert isinstance(provider, OpenAICompatibleProvider)
    assert (provider.name, provider.dimension) == ("openai-compatible:text-embedding-3-small", 1536)
    assert provider.url == "http://127.0.0.1:9/v1/embeddings"


def test_an_endpoint_falls_back_to_the_local_model_of_its_dimension(
    env: pytest.MonkeyPatch,
) -> None:
    local = Stub("local")

    provider = open_provider(EmbeddingSettings.from_env(), local=local)

    assert isinstance(provider, FallbackProvider)
    assert provider.fallback is local and provider.failures_before_fallback == 1


def test_a_fallback_of_another_dimension_is_refused_naming_both(env: pytest.MonkeyPatch) -> None:
    env.setenv("VAULTQ_EMBEDDINGS_DIMENSION", "1536")

    with pytest.raises(errors.InvalidSettings) as raised:
        open_provider(EmbeddingSettings.from_env(), local=Stub("local", 384))

    assert "1536" in str(raised.value) and "384" in str(raised.value)
    assert "FALLBACK=none" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "value", "where"),
    [
        ("VAULTQ_EMBEDDINGS_MODEL", "", "VAULTQ_EMBEDDINGS_*"),  # empty is unset
        ("VAULTQ_EMBEDDINGS_URL", "ftp://host", "VAULTQ_EMBEDDINGS_*"),
        ("VAULTQ_EMBEDDINGS_DIMENSION", "0", "VAULTQ_EMBEDDINGS_DIMENSION"),
        ("VAULTQ_EMBEDDINGS_FALLBACK", "remote", "VAULTQ_EMBEDDINGS_FALLBACK"),
        ("VAULTQ_EMBEDDINGS_MODLE", "typo", "VAULTQ_EMBEDDINGS_MODLE"),
        # Not a metric label: a name that would fail every batch later is refused now.
        ("VAULTQ_EMBEDDINGS_MODEL", "org/model@v2", "VAULTQ_EMBEDDINGS_MODEL"),
        # HTTP clients log request URLs: a secret there would reach the logs.
        ("VAULTQ_EMBEDDINGS_URL", "https://user:sk-secret@host/", "VAULTQ_EMBEDDINGS_*"),
        ("VAULTQ_EMBEDDINGS_URL", "https://host/?api_key=sk-secret", "VAULTQ_EMBEDDINGS_*"),
    ],
)
def test_wrong_settings_are_refused_by_name(
    env: pytest.MonkeyPatch, name: str, value: str, where: str
) -> None:
    env.setenv(name, value)

    with pytest.raises(errors.InvalidSettings) as raised:
        EmbeddingSettings.from_env()

    assert where in str(raised.value)
    assert "sk-secret" not in str(raised.value)


def test_the_api_key_is_read_from_its_file_and_never_shown(
    env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key_file = tmp_path / "api-key"
    key_file.write_text(f"{API_KEY}\n")
    env.setenv("VAULTQ_EMBEDDINGS_API_KEY_FILE", str(key_file))

    settings = EmbeddingSettings.from_env()
    provider = open_provider(settings, local=Stub("local"))

    assert settings.api_key_value() == API_KEY
    assert isinstance(provider, FallbackProvider)
    shown = f"{settings!r} {settings} {settings.model_dump()} {provider.name} {caplog.text}"
    assert API_KEY not in shown


def test_an_api_key_in_both_places_or_an_unreadable_file_is_refused(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("VAULTQ_EMBEDDINGS_API_KEY", API_KEY)
    env.setenv("VAULTQ_EMBEDDINGS_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(errors.InvalidSettings) as both:
        EmbeddingSettings.from_env()
    env.delenv("VAULTQ_EMBEDDINGS_API_KEY")
    with pytest.raises(errors.InvalidSettings) as unreadable:
        open_provider(EmbeddingSettings.from_env(), local=Stub("local"))

    assert "not both" in str(both.value)
    assert "API_KEY_FILE cannot be read" in str(unreadable.value)
    assert API_KEY not in f"{both.value} {unreadable.value}"


# --- one collection, one model ----------------------------------------------------------------


def test_a_collection_is_created_for_its_provider_and_refuses_another_dimension(
    vectors: EmbeddedVectors,
) -> None:
    created = ensure_collection(vectors, "notes", provider=Stub("local", 4), mode="sealed")
    again = ensure_collection(vectors, "notes", provider=Stub("local", 4), mode="sealed")

    with pytest.raises(errors.InvalidSettings) as raised:
        ensure_collection(vectors, "notes", provider=Stub("wide", 8), mode="sealed")

    assert created == again and created.dimension == 4
    assert "4-dimension" in str(raised.value) and "wide gives 8" in str(raised.value)


def test_the_pipeline_refuses_a_provider_of_another_dimension_before_embedding(
    vectors: EmbeddedVectors, tmp_path: Path
) -> None:
    from vaultq import wiring  # noqa: PLC0415
    from vaultq.client import seal_messages  # noqa: PLC0415

    vectors.create_collection("notes", dimension=4, mode="indexed")
    key = generate_worker_key()
    wide = Stub("wide", 8)
    blobs = wiring.open_blobs(f"sqlite:///{tmp_path}/vaultq.db")
    services = EmbeddingServices(
        blobs=blobs,
        key_ring=KeyRing([key.private_key]),
        provider=wide,
        vectors=vectors,
        collection="notes",
    )
    upload = seal_messages([("m-1", "a note")], public_key=key.public_key, tenant="t")
    try:
        with pytest.raises(errors.InvalidSettings):
            embed_upload(services, upload)
    finally:
        blobs.close()

    assert wide.calls == 0
    assert vectors.count("notes", tenant="t") == 0


def test_a_fallback_that_disagrees_with_the_endpoint_is_refused_before_any_vector() -> None:
    endpoint, local = Stub("endpoint", axis=0), Stub("local", axis=1)
    provider = FallbackProvider(endpoint, local, verify_same_model=True)

    with pytest.raises(errors.InvalidSettings) as raised:
        provider.embed(["a note"])

    assert "different models" in str(raised.value)


class Down(Stub):
    def embed(self, texts: Sequence[str]) -> Any:
        self.calls += 1
        raise errors.EmbeddingApiError("the endpoint answered 503")


def test_an_endpoint_never_checked_is_not_stood_in_for() -> None:
    # The local model's vectors might be another space than the endpoint's: until one of
    # the endpoint's answers was checked, its failures fail the batch.
    endpoint, local = Down("endpoint"), Stub("local")
    provider = FallbackProvider(endpoint, local, failures_before_fallback=1, verify_same_model=True)

    for _ in range(2):
        with pytest.raises(errors.EmbeddingApiError):
            provider.embed(["a note"])

    assert local.calls == 0


def test_a_fallback_that_agrees_is_checked_once_and_reports_who_embedded() -> None:
    endpoint, local = Stub("endpoint"), Stub("local")
    provider = FallbackProvider(endpoint, local, verify_same_model=True)

    first = provider.embed_reporting(["a", "b"])
    second = provider.embed_reporting(["c"])

    assert first[1] is endpoint and second[1] is endpoint
    assert first[0].shape == (2, 4)
    assert local.calls == 1  # the check, on the first batch only
