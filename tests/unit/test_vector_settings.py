"""Choosing the vector store (``VAULTQ_VECTORS_URL``), and the collection and mode the
private-embeddings example writes (``VAULTQ_EMBEDDINGS_COLLECTION`` / ``..._MODE``)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import pytest

from tests.contract.vectors_fixtures import (  # noqa: F401 (fixtures register by name)
    pgvector_open_vectors_fixture,
    pgvector_server_fixture,
)
from vaultq import errors, wiring
from vaultq.embeddings.settings import EmbeddingSettings
from vaultq.vectors import Mode
from vaultq.vectors.embedded import EmbeddedVectors

if TYPE_CHECKING:
    from pathlib import Path

PASSWORD = "hunter2-vq"  # noqa: S105 - made up, to look for in messages


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Settings from this test's variables only (no ``.env``, no outer VAULTQ_*)."""
    monkeypatch.chdir(tmp_path)
    for name in ("VAULTQ_URL", "VAULTQ_VECTORS_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_by_default_vectors_live_beside_the_embedded_database(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("VAULTQ_URL", f"sqlite:///{tmp_path}/data/vaultq.db")

    store = wiring.open_vectors()

    assert isinstance(store, EmbeddedVectors)
    assert store.path == tmp_path / "data" / "vectors.db"
    store.close()


def test_a_sqlite_vectors_url_names_the_file(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("VAULTQ_URL", f"sqlite:///{tmp_path}/data/vaultq.db")
    env.setenv("VAULTQ_VECTORS_URL", f"sqlite:///{tmp_path}/elsewhere/v.db")

    store = wiring.open_vectors()
    store.create_collection("notes", dimension=4, mode="sealed")
    store.close()

    reopened = EmbeddedVectors(tmp_path / "elsewhere" / "v.db")
    assert reopened.collection("notes").dimension == 4
    reopened.close()
    assert not (tmp_path / "data" / "vectors.db").exists()


def test_a_postgresql_vectors_url_opens_pgvector_which_every_worker_shares(
    env: pytest.MonkeyPatch, pgvector_open_vectors: Any
) -> None:
    from vaultq.vectors.pgvector import PgVectors  # noqa: PLC0415 - the postgres extra

    env.setenv("VAULTQ_VECTORS_URL", pgvector_open_vectors.uri)

    one, other = wiring.open_vectors(), wiring.open_vectors()
    try:
        one.create_collection("notes", dimension=4, mode="indexed")
        assert isinstance(one, PgVectors)
        assert other.collection("notes").mode is Mode.INDEXED
    finally:
        one.close()
        other.close()


@pytest.mark.parametrize("state", ["", "&state=sqlite:///state.db"])
def test_an_aws_deployment_without_a_vectors_url_is_refused(
    env: pytest.MonkeyPatch, tmp_path: Path, state: str
) -> None:
    # A file per worker would split the vectors: each search would see only some of them.
    env.setenv("VAULTQ_URL", f"aws://?region=us-east-1{state}")

    with pytest.raises(errors.InvalidSettings, match="VAULTQ_VECTORS_URL"):
        wiring.open_vectors()

    assert not list(tmp_path.rglob("vectors.db"))


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://alice:{PASSWORD}@db/vectors",
        f"pgvector://alice:{PASSWORD}@db/vectors",
        f"alice:{PASSWORD}@db/vectors",
        "",
    ],
)
def test_a_vectors_url_of_another_scheme_is_refused_without_its_password(
    env: pytest.MonkeyPatch, url: str
) -> None:
    env.setenv("VAULTQ_VECTORS_URL", url)

    with pytest.raises(errors.InvalidSettings) as raised:
        wiring.open_vectors()

    assert "VAULTQ_VECTORS_URL" in str(raised.value)
    assert PASSWORD not in str(raised.value)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///v.db?durability=process"])
def test_a_sqlite_vectors_url_needs_a_path_and_takes_no_options(url: str) -> None:
    with pytest.raises(errors.InvalidSettings, match="with no options"):
        wiring.open_vectors(url)


# libpq quotes part of a connection string it cannot parse: a password that needed
# percent-encoding and was not (a space; an @ or # that moves where the host starts).
@pytest.mark.parametrize("password", [PASSWORD, "s3cret pw", "p@ss#word"])
def test_an_unreachable_postgresql_is_unavailable_and_its_password_never_shown(
    password: str,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there

    with pytest.raises(errors.BackendUnavailable) as raised:
        wiring.open_vectors(f"postgresql://alice:{password}@127.0.0.1:{port}/vectors")

    shown = str(raised.value)
    assert "cannot connect" in shown
    assert all(part not in shown for part in ("s3cret", "pw", "ss#word", PASSWORD))


def test_the_example_writes_sealed_vectors_to_message_embeddings_by_default() -> None:
    settings = EmbeddingSettings.from_env()

    assert (settings.collection, settings.mode) == ("message_embeddings", Mode.SEALED)


def test_collection_and_mode_are_read_from_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("VAULTQ_EMBEDDINGS_COLLECTION", "notes_v2")
    env.setenv("VAULTQ_EMBEDDINGS_MODE", "indexed")

    settings = EmbeddingSettings.from_env()

    assert (settings.collection, settings.mode) == ("notes_v2", Mode.INDEXED)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # The vector store's rule: a PostgreSQL table name as it is.
        ("VAULTQ_EMBEDDINGS_COLLECTION", "Message-Embeddings"),
        ("VAULTQ_EMBEDDINGS_COLLECTION", "2024_notes"),
        ("VAULTQ_EMBEDDINGS_COLLECTION", "n" * 64),
        ("VAULTQ_EMBEDDINGS_MODE", "plain"),
    ],
)
def test_a_collection_the_store_would_refuse_or_an_unknown_mode_is_refused_by_name(
    env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    env.setenv(name, value)

    with pytest.raises(errors.InvalidSettings) as raised:
        EmbeddingSettings.from_env()

    assert name in str(raised.value)
    assert value not in str(raised.value)
