"""The pgvector store: ``VectorStore`` on PostgreSQL with the pgvector extension.

Each collection is a table ``vaultq_vectors.<name>``: indexed collections hold a
``vector(dimension)`` column with an HNSW index (cosine), sealed ones a ``bytea`` column.
Search is exact, as the Protocol promises: it scans the tenant's rows by primary key, lets
pgvector's float32 ``<=>`` pick the rows near the k-th best, and scores those again in
float64 here. The HNSW index is built but search does not use it (HNSW is approximate, and
with a tenant filter pgvector 0.6 may return fewer than ``k`` rows). psycopg is the
``postgres`` extra: importing this module without it raises ``MissingDependency``.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
import threading
from typing import TYPE_CHECKING, Any

from vaultq import errors
from vaultq._sql import load_queries
from vaultq.vectors.protocol import (
    DEFAULT_PAGE_SIZE,
    MAX_K,
    MAX_PAGE_SIZE,
    Collection,
    CollectionCache,
    Metric,
    Mode,
    SealedItem,
    SealedPage,
    SearchHit,
    VectorItem,
    encode_vector,
    new_collection,
    prepare_rows,
    require_mode,
    same_settings,
    validate_bounded,
    validate_id,
    validate_message_ids,
)

try:
    import psycopg
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - exercised by the public API test
    raise errors.MissingDependency(
        "the pgvector store needs psycopg: pip install 'vaultq[postgres]'"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from vaultq.vectors.protocol import VectorStore

_SQL = load_queries("vaultq.vectors", "sql/postgres.sql")
_SCHEMA = "vaultq_vectors"
_FLOAT32_EPSILON = 2.0**-23


class PgVectors:
    """``VectorStore`` on PostgreSQL + pgvector (0.5 or later, for HNSW) at ``dsn``.

    One connection, used under a lock; it is opened again after it broke. The schema is
    created on open (``CREATE EXTENSION vector`` needs a role allowed to create it, unless
    it exists already). ``connect_timeout_seconds`` bounds each connection attempt.
    """

    def __init__(self, dsn: str, *, connect_timeout_seconds: int = 10) -> None:
        self._dsn = dsn
        self._connect_timeout_seconds = validate_bounded(
            "connect_timeout_seconds", connect_timeout_seconds, maximum=3600
        )
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._collections = CollectionCache(self._stored_collection)
        with self._transaction() as conn:
            conn.execute(_SQL["schema"])

    # -- collections ----------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        *,
        dimension: int,
        mode: Mode | str,
        metric: Metric | str = "cosine",
        model: str | None = None,
    ) -> Collection:
        wanted = new_collection(name, dimension=dimension, mode=mode, metric=metric, model=model)
        with self._transaction() as conn:
            conn.execute(_SQL["lock_collection"], {"name": wanted.name})
            created = conn.execute(_SQL["create_collection"], _collection_row(wanted)).fetchone()
            if created is not None:
                _create_table(conn, wanted)
            conn.execute(_SQL["adopt_model"], _collection_row(wanted))
            existing = _collection(
                conn.execute(_SQL["get_collection"], {"name": wanted.name}).fetchone()
            )
        self._collections.remember(existing)
        return same_settings(existing, wanted)

    def collection(self, name: str) -> Collection:
        return self._collections.current(name)

    def _stored_collection(self, name: str) -> Collection | None:
        with self._transaction() as conn:
            row = conn.execute(_SQL["get_collection"], {"name": name}).fetchone()
        return None if row is None else _collection(row)

    # -- writes ---------------------------------------------------------------------------

    def upsert(self, collection: str, items: Sequence[VectorItem]) -> int:
        spec = self._collections.settled(collection)
        rows = prepare_rows(spec, items)
        vectors: list[str] | list[bytes]
        if spec.mode is Mode.INDEXED:
            query, vectors = "upsert_indexed", [_vector_text(row.vector) for row in rows]
        else:
            query, vectors = "upsert_sealed", [row.vector for row in rows]
        params = {
            "tenants": [row.tenant for row in rows],
            "message_ids": [row.message_id for row in rows],
            "vectors": vectors,
            "metadata": [row.metadata for row in rows],
        }
        with self._transaction() as conn:
            return conn.execute(_query(query, spec), params).rowcount

    def delete(self, collection: str, *, tenant: str, message_ids: Sequence[str]) -> int:
        spec = self._collections.settled(collection)
        params = {
            "tenant": validate_id("tenant", tenant),
            "message_ids": validate_message_ids(message_ids),
        }
        with self._transaction() as conn:
            return conn.execute(_query("delete_items", spec), params).rowcount

    # -- reads ----------------------------------------------------------------------------

    def search(
        self, collection: str, *, tenant: str, query_vector: Sequence[float], k: int = 10
    ) -> list[SearchHit]:
        spec = self._collections.settled(collection)
        require_mode(spec, Mode.INDEXED, "search")
        validate_id("tenant", tenant)
        validate_bounded("k", k, maximum=MAX_K)
        query = encode_vector(query_vector, dimension=spec.dimension)
        params = {
            "tenant": tenant,
            "query": _vector_text(query),
            "k": k,
            # Bounds the float32 error of a cosine distance over `dimension` terms.
            "margin": 4 * spec.dimension * _FLOAT32_EPSILON + 1e-6,
        }
        with self._transaction() as conn:
            rows = conn.execute(_query("search_candidates", spec), params).fetchall()
        unit = _unit(struct.unpack(f"<{spec.dimension}f", query))
        scored = [(_cosine(_unpack_vector(stored), unit), mid, meta) for mid, stored, meta in rows]
        scored.sort(key=lambda hit: (-hit[0], hit[1]))
        return [
            SearchHit(message_id=mid, score=score, metadata=json.loads(meta))
            for score, mid, meta in scored[:k]
        ]

    def sealed_items(
        self,
        collection: str,
        *,
        tenant: str,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> SealedPage:
        spec = self._collections.settled(collection)
        require_mode(spec, Mode.SEALED, "sealed_items")
        validate_id("tenant", tenant)
        validate_bounded("limit", limit, maximum=MAX_PAGE_SIZE)
        # The cursor is the last message id returned, in byte order as the embedded store.
        after = "" if cursor is None else validate_id("cursor", cursor)
        params = {"tenant": tenant, "after": after, "limit": limit + 1}
        with self._transaction() as conn:
            rows = conn.execute(_query("sealed_page", spec), params).fetchall()
        items = tuple(
            SealedItem(message_id=row[0], sealed_vector=bytes(row[1]), metadata=json.loads(row[2]))
            for row in rows[:limit]
        )
        more = len(rows) > limit
        return SealedPage(items=items, next_cursor=items[-1].message_id if more else None)

    def count(self, collection: str, *, tenant: str) -> int:
        spec = self._collections.settled(collection)
        params = {"tenant": validate_id("tenant", tenant)}
        with self._transaction() as conn:
            row = conn.execute(_query("count_items", spec), params).fetchone()
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- plumbing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """One transaction on the shared connection, under the lock; driver errors leave
        as vaultq errors."""
        with self._lock, _translate_errors():
            if self._conn is None or self._conn.broken or self._conn.closed:
                self._conn = self._connect()
            conn = self._conn
            with conn.transaction():
                yield conn

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            return psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=self._connect_timeout_seconds
            )
        except psycopg.Error:
            # libpq's text may quote part of the connection string, password included (a
            # password that needed percent-encoding and was not): none of it is shown.
            raise errors.BackendUnavailable(
                "postgres: cannot connect with the URL given (check host, port, database, "
                "user and password; characters such as space, @ or # in a password must be "
                "percent-encoded)"
            ) from None


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    try:
        yield
    except psycopg.errors.UndefinedTable as exc:
        # The collection's table was dropped behind the store's back.
        raise errors.CollectionNotFound(f"postgres: {exc.sqlstate} {exc}") from exc
    except (psycopg.errors.CardinalityViolation, psycopg.errors.UniqueViolation) as exc:
        raise errors.InvalidParameterValue(f"postgres: {exc.sqlstate} {exc}") from exc
    except psycopg.DataError as exc:
        raise errors.InvalidParameterValue(f"postgres: {exc.sqlstate} {exc}") from exc
    except psycopg.Error as exc:
        raise errors.BackendUnavailable(f"postgres: {exc.sqlstate} {exc}") from exc


def _query(name: str, collection: Collection) -> sql.Composed:
    return sql.SQL(_SQL[name]).format(
        table=sql.Identifier(_SCHEMA, collection.name),
        dimension=sql.Literal(collection.dimension),
    )


def _create_table(conn: psycopg.Connection[tuple[Any, ...]], collection: Collection) -> None:
    if collection.mode is Mode.INDEXED:
        conn.execute(_query("create_indexed_table", collection))
        conn.execute(_query("create_hnsw_index", collection))
    else:
        conn.execute(_query("create_sealed_table", collection))


def _vector_text(packed: bytes) -> str:
    """float32 little-endian bytes as pgvector's text form; repr round-trips each float32."""
    values = struct.unpack(f"<{len(packed) // 4}f", packed)
    return "[" + ",".join(repr(value) for value in values) + "]"


def _unpack_vector(sent: bytes) -> tuple[float, ...]:
    """pgvector's binary form (``vector_send``): dimension, unused, big-endian float32s."""
    dimension = struct.unpack_from(">H", sent)[0]
    return struct.unpack_from(f">{dimension}f", sent, 4)


def _unit(values: Sequence[float]) -> tuple[float, ...]:
    inverse = 1.0 / math.sqrt(math.fsum(value * value for value in values))
    return tuple(value * inverse for value in values)


def _cosine(values: Sequence[float], unit: Sequence[float]) -> float:
    norm = math.sqrt(math.fsum(value * value for value in values))
    dot = math.fsum(a * b for a, b in zip(values, unit, strict=True))
    return max(-1.0, min(1.0, dot / norm))


def _collection_row(collection: Collection) -> dict[str, object]:
    return {
        "name": collection.name,
        "dimension": collection.dimension,
        "mode": collection.mode.value,
        "metric": collection.metric.value,
        "model": collection.model,
    }


def _collection(row: tuple[Any, ...] | None) -> Collection:
    if row is None:
        raise errors.CollectionNotFound("the collection vanished while it was created")
    name, dimension, mode, metric, model = row
    return Collection(
        name=name, dimension=dimension, mode=Mode(mode), metric=Metric(metric), model=model
    )


if TYPE_CHECKING:

    def _satisfies_protocol(store: PgVectors) -> VectorStore:
        """mypy proves here that ``PgVectors`` is a ``VectorStore``."""
        return store
