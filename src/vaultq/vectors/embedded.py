"""The embedded vector store: ``VectorStore`` on a SQLite file, searched with NumPy.

Its tables are prefixed ``vectors_``, so it may share a file with the queues and the job
table. Search is exact: the tenant's vectors of a collection are loaded once into a float64
matrix of unit rows and kept in memory until a write in any process bumps that
``(collection, tenant)``'s data version, so a repeated search costs one small query plus a
matrix-vector product. NumPy is the ``embeddings`` extra: importing this module without it
raises ``MissingDependency``.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vaultq import _sqlite, errors
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
from vaultq.vectors.similarity import best, inverse_norms, unit_query

try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - similarity raised first; kept for clarity
    raise errors.MissingDependency(
        "the embedded vector store needs NumPy: pip install 'vaultq[embeddings]'"
    ) from exc

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Iterator, Sequence

    from numpy.typing import NDArray

    from vaultq.vectors.protocol import VectorStore
    from vaultq.vectors.similarity import Floats

_SQL = load_queries("vaultq.vectors", "sql/sqlite.sql")


@dataclass(frozen=True, slots=True)
class _Matrix:
    """A tenant's vectors of one collection as they were at ``version``."""

    version: int
    message_ids: tuple[str, ...]
    metadata: tuple[str, ...]
    #: The stored float32 rows as they are, and 1 / their lengths in float64.
    rows: NDArray[np.float32]
    inverse: Floats


class EmbeddedVectors:
    """``VectorStore`` on a SQLite file. ``cache_entries`` bounds how many (collection,
    tenant) matrices stay in memory (least recently used goes first)."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_seconds: float = 30.0,
        cache_entries: int = 16,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = int(busy_timeout_seconds * 1000)
        self._cache_entries = validate_bounded("cache_entries", cache_entries, maximum=10_000)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_conn = self._connect()
        self._read_conn = self._connect()
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._collections = CollectionCache(self._stored_collection)
        self._cache: OrderedDict[tuple[str, str], _Matrix] = OrderedDict()
        with self._translate_errors():
            self._write_conn.executescript(_SQL["schema"])
        self._add_model_column()

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
        with self._write() as conn:
            conn.execute(_SQL["create_collection"], _collection_row(wanted))
            conn.execute(_SQL["adopt_model"], _collection_row(wanted))
            existing = _collection(conn.execute(_SQL["get_collection"], {"name": name}).fetchone())
        self._collections.remember(existing)
        return same_settings(existing, wanted)

    def collection(self, name: str) -> Collection:
        return self._collections.current(name)

    def _stored_collection(self, name: str) -> Collection | None:
        with self._read() as conn:
            row = conn.execute(_SQL["get_collection"], {"name": name}).fetchone()
        return None if row is None else _collection(row)

    # -- writes ---------------------------------------------------------------------------

    def upsert(self, collection: str, items: Sequence[VectorItem]) -> int:
        spec = self._collections.settled(collection)
        rows = prepare_rows(spec, items)
        changed = 0
        changed_tenants: set[str] = set()
        with self._write() as conn:
            for row in rows:
                params = {
                    "collection": spec.name,
                    "tenant": row.tenant,
                    "message_id": row.message_id,
                    "vector": row.vector,
                    "metadata": row.metadata,
                }
                if conn.execute(_SQL["upsert_item"], params).rowcount:
                    changed += 1
                    changed_tenants.add(row.tenant)
            self._bump(conn, spec.name, changed_tenants)
        return changed

    def delete(self, collection: str, *, tenant: str, message_ids: Sequence[str]) -> int:
        spec = self._collections.settled(collection)
        validate_id("tenant", tenant)
        ids = validate_message_ids(message_ids)
        deleted = 0
        with self._write() as conn:
            for message_id in ids:
                params = {"collection": spec.name, "tenant": tenant, "message_id": message_id}
                deleted += conn.execute(_SQL["delete_item"], params).rowcount
            self._bump(conn, spec.name, {tenant} if deleted else set())
        return deleted

    # -- reads ----------------------------------------------------------------------------

    def search(
        self, collection: str, *, tenant: str, query_vector: Sequence[float], k: int = 10
    ) -> list[SearchHit]:
        spec = self._collections.settled(collection)
        require_mode(spec, Mode.INDEXED, "search")
        validate_id("tenant", tenant)
        validate_bounded("k", k, maximum=MAX_K)
        query = np.frombuffer(encode_vector(query_vector, dimension=spec.dimension), "<f4")
        matrix = self._matrix(spec.name, tenant)
        return [
            SearchHit(
                message_id=matrix.message_ids[index],
                score=score,
                metadata=json.loads(matrix.metadata[index]),
            )
            for index, score in best(matrix.rows, matrix.inverse, unit_query(query), k)
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
        # The cursor is the last message id returned: pages walk the (collection, tenant,
        # message_id) index, so concurrent writes never make an item appear twice.
        after = "" if cursor is None else validate_id("cursor", cursor)
        params = {"collection": spec.name, "tenant": tenant, "after": after, "limit": limit + 1}
        with self._read() as conn:
            rows = conn.execute(_SQL["sealed_page"], params).fetchall()
        items = tuple(
            SealedItem(message_id=row[0], sealed_vector=bytes(row[1]), metadata=json.loads(row[2]))
            for row in rows[:limit]
        )
        more = len(rows) > limit
        return SealedPage(items=items, next_cursor=items[-1].message_id if more else None)

    def count(self, collection: str, *, tenant: str) -> int:
        spec = self._collections.settled(collection)
        validate_id("tenant", tenant)
        params = {"collection": spec.name, "tenant": tenant}
        with self._read() as conn:
            total: int = conn.execute(_SQL["count_items"], params).fetchone()[0]
        return total

    def close(self) -> None:
        self._cache.clear()
        for conn in (self._write_conn, self._read_conn):
            conn.close()

    # -- the search cache -----------------------------------------------------------------

    def _matrix(self, collection: str, tenant: str) -> _Matrix:
        params = {"collection": collection, "tenant": tenant}
        key = (collection, tenant)
        with self._read() as conn:
            # One read transaction: the version and the rows come from the same snapshot.
            conn.execute("BEGIN")
            try:
                version = _version(conn, params)
                cached = self._cache.get(key)
                if cached is None or cached.version != version:
                    cached = _load(conn, params, version)
            finally:
                conn.execute("COMMIT")
            self._cache[key] = cached
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)
        return cached

    def _bump(self, conn: sqlite3.Connection, collection: str, tenants: set[str]) -> None:
        for tenant in sorted(tenants):
            conn.execute(_SQL["bump_version"], {"collection": collection, "tenant": tenant})

    # -- plumbing -------------------------------------------------------------------------

    def _add_model_column(self) -> None:
        """Databases made before collections recorded their model gain the column, in one
        write transaction, so two processes opening one never both add it (looked for
        first without one: most opens find it)."""
        with self._read() as conn:
            if "model" in {row[0] for row in conn.execute(_SQL["collection_columns"])}:
                return
        with self._write() as conn:
            columns = {row[0] for row in conn.execute(_SQL["collection_columns"])}
            if "model" not in columns:
                conn.execute(_SQL["add_model_column"])

    def _connect(self) -> sqlite3.Connection:
        return _sqlite.connect(
            self.path, synchronous="FULL", busy_timeout_seconds=self._busy_timeout_ms / 1000
        )

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return _sqlite.transaction(self._write_conn, self._write_lock)

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock, self._translate_errors():
            yield self._read_conn

    def _translate_errors(self) -> contextlib.AbstractContextManager[None]:
        return _sqlite.translate_errors()


def _version(conn: sqlite3.Connection, params: dict[str, str]) -> int:
    row = conn.execute(_SQL["get_version"], params).fetchone()
    return 0 if row is None else int(row[0])


def _load(conn: sqlite3.Connection, params: dict[str, str], version: int) -> _Matrix:
    rows = conn.execute(_SQL["all_vectors"], params).fetchall()
    raw = np.frombuffer(b"".join(row[1] for row in rows), dtype="<f4")
    dimension = len(rows[0][1]) // 4 if rows else 1
    matrix = raw.astype(np.float32).reshape(len(rows), dimension)
    return _Matrix(
        version=version,
        message_ids=tuple(row[0] for row in rows),
        metadata=tuple(row[2] for row in rows),
        rows=matrix,
        inverse=inverse_norms(matrix),
    )


def _collection_row(collection: Collection) -> dict[str, object]:
    return {
        "name": collection.name,
        "dimension": collection.dimension,
        "mode": collection.mode.value,
        "metric": collection.metric.value,
        "model": collection.model,
    }


def _collection(row: tuple[str, int, str, str, str | None]) -> Collection:
    name, dimension, mode, metric, model = row
    return Collection(
        name=name, dimension=dimension, mode=Mode(mode), metric=Metric(metric), model=model
    )


if TYPE_CHECKING:

    def _satisfies_protocol(store: EmbeddedVectors) -> VectorStore:
        """mypy proves here that ``EmbeddedVectors`` is a ``VectorStore``."""
        return store
