"""Fixtures of the vector-store contract suite: one ``vectors`` fixture per backend.

``open_vectors()`` opens another store on the same storage, as a second process or a
restart would; ``open_vectors.drop_model_column()`` makes its catalog as vaultq made it
before collections recorded their model. ``pgvector`` runs on one PostgreSQL per session
(the ``pgserver`` wheel, test group) with a database per test copied from a template;
without pgserver it skips locally and fails in CI.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from tests.conftest import skip_or_fail

if TYPE_CHECKING:
    from collections.abc import Iterator

    from vaultq.vectors import VectorStore

VECTOR_BACKENDS = ["embedded", "pgvector"]


class OpenVectors(Protocol):
    def __call__(self) -> VectorStore: ...

    def drop_model_column(self) -> None: ...


@dataclass
class _EmbeddedStorage:
    path: Path
    opened: list[VectorStore] = field(default_factory=list)

    def __call__(self) -> VectorStore:
        from vaultq.vectors.embedded import EmbeddedVectors  # noqa: PLC0415 - needs numpy

        store = EmbeddedVectors(self.path)
        self.opened.append(store)
        return store

    def drop_model_column(self) -> None:
        with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as conn:
            conn.execute("ALTER TABLE vectors_collections DROP COLUMN model")


@pytest.fixture(name="embedded_open_vectors")
def embedded_open_vectors_fixture(tmp_path: Path) -> Iterator[OpenVectors]:
    pytest.importorskip("numpy")
    storage = _EmbeddedStorage(tmp_path / "vaultq.db")
    yield storage
    for store in storage.opened:
        store.close()


@dataclass
class _PostgresStorage:
    uri: str
    opened: list[VectorStore] = field(default_factory=list)

    def __call__(self) -> VectorStore:
        from vaultq.vectors.pgvector import PgVectors  # noqa: PLC0415 - needs psycopg

        store = PgVectors(self.uri)
        self.opened.append(store)
        return store

    def drop_model_column(self) -> None:
        import psycopg  # noqa: PLC0415 - the postgres extra

        with psycopg.connect(self.uri, autocommit=True) as conn:
            conn.execute("ALTER TABLE vaultq.vector_collections DROP COLUMN model")


@pytest.fixture(name="pgvector_server", scope="session")
def pgvector_server_fixture() -> Iterator[Any]:
    """A throwaway PostgreSQL 16 with pgvector (the ``pgserver`` wheel) for the session, and
    a ``vaultq_template`` database holding the extension and the store's schema."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver only needs a path.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        try:
            import psycopg  # noqa: PLC0415 - the postgres extra
            from pgserver.postgres_server import get_server  # noqa: PLC0415 - test-only
        except ImportError as exc:
            skip_or_fail(f"pgvector tests need psycopg and pgserver: {exc}")
        try:
            # Not under tmp_path_factory: another pytest session's basetemp rotation may
            # delete that while this one runs; "delete" removes this directory at the end.
            data = Path(tempfile.mkdtemp(prefix="vaultq-pg-")) / "data"
            server = get_server(data, cleanup_mode="delete")
        except Exception as exc:  # pgserver raises what its subprocesses raise
            skip_or_fail(f"pgserver could not start PostgreSQL: {exc!r}")
    from vaultq.vectors.pgvector import PgVectors  # noqa: PLC0415 - needs psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE vaultq_template")
    PgVectors(server.get_uri("vaultq_template")).close()  # applies the schema once
    yield server
    server.cleanup()
    data.parent.rmdir()


@pytest.fixture(name="pgvector_open_vectors")
def pgvector_open_vectors_fixture(pgvector_server: Any) -> Iterator[OpenVectors]:
    """A fresh database per test, copied from ``vaultq_template``; dropped afterwards."""
    import psycopg  # noqa: PLC0415 - the postgres extra
    from psycopg import sql  # noqa: PLC0415

    name = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(pgvector_server.get_uri(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE vaultq_template").format(sql.Identifier(name))
        )
    storage = _PostgresStorage(pgvector_server.get_uri(name))
    yield storage
    for store in storage.opened:
        store.close()
    with psycopg.connect(pgvector_server.get_uri(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(name="open_vectors", params=VECTOR_BACKENDS)
def open_vectors_fixture(request: pytest.FixtureRequest) -> OpenVectors:
    factory: OpenVectors = request.getfixturevalue(f"{request.param}_open_vectors")
    return factory


@pytest.fixture(name="vectors")
def vectors_fixture(open_vectors: OpenVectors) -> VectorStore:
    return open_vectors()


@pytest.fixture(name="indexed")
def indexed_fixture(vectors: VectorStore) -> str:
    vectors.create_collection("notes", dimension=4, mode="indexed")
    return "notes"


@pytest.fixture(name="sealed")
def sealed_fixture(vectors: VectorStore) -> str:
    vectors.create_collection("secrets", dimension=4, mode="sealed")
    return "secrets"
