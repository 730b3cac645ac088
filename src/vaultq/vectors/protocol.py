"""The vector store: the Protocol, its values and the validation every backend shares.

A collection is ``sealed`` or ``indexed`` (see DESIGN.md, privacy). A sealed collection
stores each vector as the ciphertext a worker made; the store never sees its plaintext and
cannot search it: a worker pages through ``sealed_items``, decrypts in memory and ranks with
``vaultq.vectors.similarity.top_k``. An indexed collection stores plain float32 vectors and
answers exact cosine ``search`` itself, an explicit choice since embeddings leak their text.
Items are keyed ``(tenant, message_id)`` within a collection; nothing crosses tenants.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeAlias

from vaultq import errors

#: A JSON object: str keys; values are JSON's (dict, list, str, int, float, bool, None).
JsonObject: TypeAlias = Mapping[str, Any]

MAX_DIMENSION = 16_000  # pgvector's limit for its vector type
MAX_K = 1000
MAX_BATCH = 1000
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_SEALED_VECTOR_BYTES = 128 * 1024
MAX_METADATA_BYTES = 4 * 1024

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
#: What a model name may hold, as providers spell them; ``vaultq.embeddings.settings`` takes
#: an endpoint's model name of 100 of them, which a provider's name prefixes (the store
#: records ``openai-compatible:<model>``), hence the store's 128.
MODEL_NAME_CHARACTERS = "A-Za-z0-9_./:-"
MAX_MODEL_NAME = 128
_MODEL = re.compile(f"[{MODEL_NAME_CHARACTERS}]{{1,{MAX_MODEL_NAME}}}")
# Lower-case and short enough to name a PostgreSQL table or partition as it is.
_COLLECTION = re.compile(r"[a-z][a-z0-9_]{0,62}")


class Mode(StrEnum):
    """What a collection stores in place of a plain vector."""

    #: Ciphertext made by a worker; the store can neither read nor search it.
    SEALED = "sealed"
    #: Plain float32 vectors that the store searches (cosine); they are private data too.
    INDEXED = "indexed"


class Metric(StrEnum):
    """How vectors are compared."""

    #: Cosine similarity: 1 same direction, 0 orthogonal, -1 opposite.
    COSINE = "cosine"


@dataclass(frozen=True, slots=True, kw_only=True)
class Collection:
    name: str
    dimension: int
    mode: Mode
    metric: Metric = Metric.COSINE
    #: The embedding model whose vectors the collection holds; None when none was recorded
    #: (made before vaultq recorded models, or by a caller that embeds itself).
    model: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VectorItem:
    """One message's embedding: ``vector`` for an indexed collection, ``sealed_vector`` (the
    ciphertext) for a sealed one, never both. ``metadata`` is stored in clear."""

    tenant: str
    message_id: str
    vector: Sequence[float] | None = None
    sealed_vector: bytes | None = None
    metadata: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchHit:
    message_id: str
    #: Cosine similarity in [-1, 1]; higher is closer.
    score: float
    metadata: JsonObject


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedItem:
    message_id: str
    #: Exactly the bytes that were upserted.
    sealed_vector: bytes
    metadata: JsonObject


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedPage:
    """One page of a sealed collection, by ``message_id``; pass ``next_cursor`` back."""

    items: tuple[SealedItem, ...]
    #: Opaque; None on the last page.
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """A validated item as a backend stores it; ``vector`` holds float32 little-endian
    bytes (indexed) or the ciphertext (sealed), ``metadata`` canonical JSON."""

    tenant: str
    message_id: str
    vector: bytes
    metadata: str


class VectorStore(Protocol):
    """Embeddings per collection, keyed ``(tenant, message_id)``, never crossing tenants.

    Every operation on a collection that was never created raises ``CollectionNotFound``;
    an operation of the other mode raises ``WrongCollectionMode``.
    """

    def create_collection(
        self,
        name: str,
        *,
        dimension: int,
        mode: Mode | str,
        metric: Metric | str = "cosine",
        model: str | None = None,
    ) -> Collection:
        """Create the collection, or return it if it exists with the same settings; other
        settings raise ``CollectionAlreadyExists``.

        ``model`` names the embedding model whose vectors the collection holds. None makes
        no claim: any recorded model is accepted. A collection that has no model recorded
        takes the first one a call with its other settings names, atomically; from then on
        another model is ``CollectionAlreadyExists``.
        """
        ...

    def collection(self, name: str) -> Collection:
        """The collection's settings, as recorded now (a model recorded by another process
        included)."""
        ...

    def upsert(self, collection: str, items: Sequence[VectorItem]) -> int:
        """Store up to 1000 items atomically; returns how many rows were added or changed.

        Idempotent per ``(tenant, message_id)``: an identical item changes nothing (0). An
        item with another vector or metadata replaces the stored one, since the latest
        processing of a message is its truth. A batch naming one message twice is refused.
        """
        ...

    def search(
        self, collection: str, *, tenant: str, query_vector: Sequence[float], k: int = 10
    ) -> list[SearchHit]:
        """Exact cosine top ``k`` (1..1000) of the tenant's items of an indexed collection,
        best first; equal scores are ordered by ``message_id``."""
        ...

    def sealed_items(
        self,
        collection: str,
        *,
        tenant: str,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> SealedPage:
        """The tenant's items of a sealed collection, ``limit`` (1..1000) at a time. Items
        present during the whole walk are returned exactly once."""
        ...

    def delete(self, collection: str, *, tenant: str, message_ids: Sequence[str]) -> int:
        """Delete up to 1000 of the tenant's items; returns how many existed. Idempotent."""
        ...

    def count(self, collection: str, *, tenant: str) -> int: ...

    def close(self) -> None: ...


class CollectionCache:
    """Collections' settings as a backend keeps them in memory: name, dimension, mode and
    metric never change once created, so every process may keep them; a model is recorded
    once, perhaps by another process, so a collection without one is read again."""

    def __init__(self, read: Callable[[str], Collection | None]) -> None:
        #: The collection as stored now, or None when there is none of that name.
        self._read = read
        self._known: dict[str, Collection] = {}

    def remember(self, collection: Collection) -> Collection:
        self._known[collection.name] = collection
        return collection

    def current(self, name: str) -> Collection:
        """For ``VectorStore.collection``: the model as recorded now included."""
        known = self._known.get(validate_collection_name(name))
        return self._fetch(name) if known is None or known.model is None else known

    def settled(self, name: str) -> Collection:
        """For reads and writes, which need only what never changes."""
        known = self._known.get(validate_collection_name(name))
        return self._fetch(name) if known is None else known

    def _fetch(self, name: str) -> Collection:
        found = self._read(name)
        if found is None:
            raise errors.CollectionNotFound(f"no vector collection {name}")
        return self.remember(found)


# -- validation shared by every backend ----------------------------------------------------


def validate_id(label: str, value: object) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise errors.InvalidParameterValue(
            f"{label} must be 1-128 of A-Z a-z 0-9 _ . : -, not {_shown(value)}"
        )
    return value


def validate_collection_name(name: object) -> str:
    if not isinstance(name, str) or not _COLLECTION.fullmatch(name):
        raise errors.InvalidParameterValue(
            f"a collection name is 1-63 of a-z 0-9 _ starting with a letter, not {_shown(name)}"
        )
    return name


def new_collection(
    name: object, *, dimension: object, mode: object, metric: object, model: object = None
) -> Collection:
    if (
        isinstance(dimension, bool)
        or not isinstance(dimension, int)
        or not 1 <= dimension <= MAX_DIMENSION
    ):
        raise errors.InvalidParameterValue(
            f"dimension must be an integer 1..{MAX_DIMENSION}, not {_shown(dimension)}"
        )
    return Collection(
        name=validate_collection_name(name),
        dimension=dimension,
        mode=_mode(mode),
        metric=_metric(metric),
        model=None if model is None else validate_model_name(model),
    )


def validate_model_name(model: object) -> str:
    if not isinstance(model, str) or not _MODEL.fullmatch(model):
        raise errors.InvalidParameterValue(
            f"a model name is 1-{MAX_MODEL_NAME} of {MODEL_NAME_CHARACTERS}, not {_shown(model)}"
        )
    return model


def same_settings(existing: Collection, wanted: Collection) -> Collection:
    """``existing``, if ``wanted`` asks for its settings (a ``wanted.model`` of None asks for
    no model); ``CollectionAlreadyExists`` naming both otherwise."""
    if (existing.dimension, existing.mode, existing.metric) != (
        wanted.dimension,
        wanted.mode,
        wanted.metric,
    ):
        raise errors.CollectionAlreadyExists(
            f"collection {existing.name} exists as {existing.mode.value}, dimension "
            f"{existing.dimension}, {existing.metric.value}"
        )
    if wanted.model is not None and existing.model != wanted.model:
        raise errors.CollectionAlreadyExists(
            f"collection {existing.name} holds vectors of model {existing.model}, "
            f"not {wanted.model}"
        )
    return existing


def validate_bounded(label: str, value: object, *, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise errors.InvalidParameterValue(
            f"{label} must be an integer 1..{maximum}, not {_shown(value)}"
        )
    return value


def encode_vector(vector: object, *, dimension: int) -> bytes:
    """``vector`` as float32 little-endian bytes, if it has ``dimension`` finite real
    numbers that float32 holds and is not all zeros (cosine needs a direction)."""
    if isinstance(vector, str | bytes | bytearray | memoryview | Mapping):
        raise errors.InvalidParameterValue("a vector is a sequence of floats")
    try:
        values = [_finite(value) for value in vector]  # type: ignore[attr-defined]
    except TypeError:
        raise errors.InvalidParameterValue("a vector is a sequence of floats") from None
    if len(values) != dimension:
        raise errors.DimensionMismatch(
            f"the collection holds {dimension}-dimensional vectors, not {len(values)}"
        )
    try:
        packed = struct.pack(f"<{dimension}f", *values)
    except OverflowError:
        raise errors.InvalidParameterValue("a vector value is beyond float32's range") from None
    if not any(struct.unpack(f"<{dimension}f", packed)):
        raise errors.InvalidParameterValue("a zero vector has no cosine similarity")
    return packed


def prepare_rows(collection: Collection, items: Sequence[VectorItem]) -> list[Row]:
    """Validate an upsert batch against its collection; one ``Row`` per item."""
    if isinstance(items, VectorItem) or not isinstance(items, Sequence):
        raise errors.InvalidParameterValue("items must be a list of VectorItem")
    validate_bounded("the number of items", len(items), maximum=MAX_BATCH)
    rows = [_row(collection, item) for item in items]
    keys = {(row.tenant, row.message_id) for row in rows}
    if len(keys) != len(rows):
        raise errors.InvalidParameterValue("a batch names the same (tenant, message_id) twice")
    return rows


def validate_message_ids(message_ids: object) -> list[str]:
    if isinstance(message_ids, str) or not isinstance(message_ids, Sequence):
        raise errors.InvalidParameterValue("message_ids must be a list of ids")
    if len(message_ids) > MAX_BATCH:
        raise errors.InvalidParameterValue(f"at most {MAX_BATCH} message ids at a time")
    return [validate_id("message_id", value) for value in message_ids]


def require_mode(collection: Collection, mode: Mode, operation: str) -> None:
    if collection.mode is not mode:
        raise errors.WrongCollectionMode(
            f"{operation} needs a {mode.value} collection; {collection.name} is "
            f"{collection.mode.value}"
        )


def encode_metadata(metadata: object) -> str:
    """Canonical JSON (sorted keys): equal metadata is stored as equal text."""
    if not isinstance(metadata, Mapping):
        raise errors.InvalidParameterValue("metadata must be a JSON object (a dict)")
    try:
        text = json.dumps(
            dict(metadata),
            ensure_ascii=False,
            allow_nan=False,
            sort_keys=True,
            separators=(",", ":"),
        )
        same = json.loads(text) == dict(metadata)
    except (TypeError, ValueError, RecursionError):
        same = False
    if not same:
        raise errors.InvalidParameterValue("metadata is not a JSON object JSON keeps as it is")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_METADATA_BYTES:
        raise errors.InvalidParameterValue(f"metadata holds at most {MAX_METADATA_BYTES} bytes")
    return text


def _row(collection: Collection, item: object) -> Row:
    if not isinstance(item, VectorItem):
        raise errors.InvalidParameterValue(f"an item is a VectorItem, not {type(item).__name__}")
    if collection.mode is Mode.INDEXED:
        if item.vector is None or item.sealed_vector is not None:
            raise errors.WrongCollectionMode(f"{collection.name} is indexed: give vector only")
        vector = encode_vector(item.vector, dimension=collection.dimension)
    else:
        if item.sealed_vector is None or item.vector is not None:
            raise errors.WrongCollectionMode(
                f"{collection.name} is sealed: give sealed_vector only"
            )
        vector = _sealed(item.sealed_vector)
    return Row(
        tenant=validate_id("tenant", item.tenant),
        message_id=validate_id("message_id", item.message_id),
        vector=vector,
        metadata=encode_metadata(item.metadata),
    )


def _sealed(value: object) -> bytes:
    if not isinstance(value, bytes) or not 1 <= len(value) <= MAX_SEALED_VECTOR_BYTES:
        raise errors.InvalidParameterValue(
            f"sealed_vector must be 1-{MAX_SEALED_VECTOR_BYTES} bytes"
        )
    return value


def _finite(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise errors.InvalidParameterValue(f"a vector holds real numbers, not {_shown(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise errors.InvalidParameterValue("a vector holds only finite numbers (no NaN, inf)")
    return number


def _mode(value: object) -> Mode:
    if isinstance(value, str) and value in Mode._value2member_map_:
        return Mode(value)
    raise errors.InvalidParameterValue(f"mode is sealed or indexed, not {_shown(value)}")


def _metric(value: object) -> Metric:
    if isinstance(value, str) and value in Metric._value2member_map_:
        return Metric(value)
    raise errors.InvalidParameterValue(f"metric is cosine, not {_shown(value)}")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
