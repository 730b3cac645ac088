"""The vector store: collections, idempotent upserts that replace, tenant isolation, exact
cosine search of indexed collections, byte-exact paging of sealed ones, delete, count, and
what survives a reopen."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest

from vaultq import errors
from vaultq.vectors import VectorItem, VectorStore

from .vectors_fixtures import (  # noqa: F401 (fixtures register by name)
    embedded_open_vectors_fixture,
    indexed_fixture,
    open_vectors_fixture,
    pgvector_open_vectors_fixture,
    pgvector_server_fixture,
    sealed_fixture,
    vectors_fixture,
)

if TYPE_CHECKING:
    from .vectors_fixtures import OpenVectors


def item(
    message_id: str, vector: list[float], *, tenant: str = "t1", **metadata: object
) -> VectorItem:
    return VectorItem(tenant=tenant, message_id=message_id, vector=vector, metadata=metadata)


def sealed_item(message_id: str, blob: bytes, *, tenant: str = "t1") -> VectorItem:
    return VectorItem(tenant=tenant, message_id=message_id, sealed_vector=blob)


# -- collections ---------------------------------------------------------------------------


def test_creating_a_collection_again_with_the_same_settings_returns_it(
    vectors: VectorStore,
) -> None:
    first = vectors.create_collection("docs", dimension=384, mode="indexed")
    again = vectors.create_collection("docs", dimension=384, mode="indexed", metric="cosine")

    assert first == again == vectors.collection("docs")
    assert (again.dimension, again.mode.value, again.metric.value) == (384, "indexed", "cosine")


@pytest.mark.parametrize(
    "settings", [{"dimension": 385, "mode": "indexed"}, {"dimension": 384, "mode": "sealed"}]
)
def test_creating_a_collection_with_other_settings_is_refused(
    vectors: VectorStore, settings: dict[str, object]
) -> None:
    vectors.create_collection("docs", dimension=384, mode="indexed")

    with pytest.raises(errors.CollectionAlreadyExists):
        vectors.create_collection("docs", **settings)  # type: ignore[arg-type]
    assert vectors.collection("docs").dimension == 384


@pytest.mark.parametrize(
    "settings",
    [
        {"dimension": 0, "mode": "indexed"},
        {"dimension": 16_001, "mode": "indexed"},
        {"dimension": True, "mode": "indexed"},
        {"dimension": 4, "mode": "plain"},
        {"dimension": 4, "mode": "indexed", "metric": "euclidean"},
        {"dimension": 4, "mode": "indexed", "model": ""},
        {"dimension": 4, "mode": "indexed", "model": "text embedding"},
        {"dimension": 4, "mode": "indexed", "model": "m" * 129},
        {"dimension": 4, "mode": "indexed", "model": 3},
    ],
)
def test_invalid_collection_settings_are_refused(
    vectors: VectorStore, settings: dict[str, object]
) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        vectors.create_collection("docs", **settings)  # type: ignore[arg-type]
    with pytest.raises(errors.CollectionNotFound):
        vectors.collection("docs")


def test_using_a_collection_that_was_never_created_raises(vectors: VectorStore) -> None:
    with pytest.raises(errors.CollectionNotFound):
        vectors.upsert("missing", [item("m1", [1, 0, 0, 0])])
    with pytest.raises(errors.CollectionNotFound):
        vectors.count("missing", tenant="t1")


# -- the model a collection holds ----------------------------------------------------------

MODEL = "openai-compatible:text-embedding-3-small"
OTHER_MODEL = "all-MiniLM-L6-v2"


def test_a_collection_records_its_model_for_every_store(open_vectors: OpenVectors) -> None:
    first = open_vectors()
    created = first.create_collection("docs", dimension=4, mode="indexed", model=MODEL)
    longest = first.create_collection("long", dimension=4, mode="sealed", model="m/" * 64)

    assert created.model == first.collection("docs").model == MODEL
    assert open_vectors().collection("docs").model == MODEL
    assert longest.model == "m/" * 64


def test_creating_a_collection_again_with_its_model_or_none_returns_it(
    vectors: VectorStore,
) -> None:
    first = vectors.create_collection("docs", dimension=4, mode="indexed", model=MODEL)
    again = vectors.create_collection("docs", dimension=4, mode="indexed", model=MODEL)
    unnamed = vectors.create_collection("docs", dimension=4, mode="indexed")

    assert first == again == unnamed
    assert unnamed.model == MODEL


def test_creating_a_collection_with_another_model_is_refused_naming_both(
    vectors: VectorStore,
) -> None:
    vectors.create_collection("docs", dimension=4, mode="indexed", model=MODEL)

    with pytest.raises(errors.CollectionAlreadyExists) as raised:
        vectors.create_collection("docs", dimension=4, mode="indexed", model=OTHER_MODEL)

    assert MODEL in str(raised.value) and OTHER_MODEL in str(raised.value)
    assert vectors.collection("docs").model == MODEL


def test_a_collection_without_a_model_takes_the_first_one_named_with_its_settings(
    open_vectors: OpenVectors,
) -> None:
    first, other = open_vectors(), open_vectors()
    assert first.create_collection("docs", dimension=4, mode="indexed").model is None
    assert other.collection("docs").model is None
    with pytest.raises(errors.CollectionAlreadyExists):
        first.create_collection("docs", dimension=8, mode="indexed", model=OTHER_MODEL)
    assert first.collection("docs").model is None

    adopted = first.create_collection("docs", dimension=4, mode="indexed", model=MODEL)

    assert adopted.model == MODEL
    assert other.collection("docs").model == MODEL  # a store that read it before sees it
    with pytest.raises(errors.CollectionAlreadyExists):
        other.create_collection("docs", dimension=4, mode="indexed", model=OTHER_MODEL)


def test_a_database_from_before_models_were_recorded_opens_and_its_collection_takes_one(
    open_vectors: OpenVectors,
) -> None:
    first = open_vectors()
    first.create_collection("docs", dimension=4, mode="indexed")
    first.upsert("docs", [item("m1", [1, 0, 0, 0])])
    first.close()
    open_vectors.drop_model_column()

    again = open_vectors()

    assert again.collection("docs").model is None
    assert again.create_collection("docs", dimension=4, mode="indexed", model=MODEL).model == MODEL
    assert open_vectors().collection("docs").model == MODEL
    [hit] = again.search("docs", tenant="t1", query_vector=[1, 0, 0, 0], k=1)
    assert hit.message_id == "m1"


# -- upsert --------------------------------------------------------------------------------


def test_upserting_the_same_message_twice_keeps_one_row_and_changes_nothing(
    vectors: VectorStore, indexed: str
) -> None:
    message = item("m1", [1, 2, 3, 4], source="upload")

    assert vectors.upsert(indexed, [message]) == 1
    assert vectors.upsert(indexed, [message]) == 0

    assert vectors.count(indexed, tenant="t1") == 1
    [hit] = vectors.search(indexed, tenant="t1", query_vector=[1, 2, 3, 4], k=5)
    assert (hit.message_id, hit.metadata) == ("m1", {"source": "upload"})


def test_upserting_a_message_with_a_new_vector_replaces_the_old_one(
    vectors: VectorStore, indexed: str
) -> None:
    vectors.upsert(indexed, [item("m1", [1, 0, 0, 0], v=1), item("m2", [0, 1, 0, 0])])

    assert vectors.upsert(indexed, [item("m1", [0, 0, 1, 0], v=2)]) == 1

    assert vectors.count(indexed, tenant="t1") == 2
    [top] = vectors.search(indexed, tenant="t1", query_vector=[0, 0, 1, 0], k=1)
    assert (top.message_id, top.metadata) == ("m1", {"v": 2})
    assert top.score == pytest.approx(1.0)


def test_a_batch_naming_one_message_twice_is_refused_and_stores_nothing(
    vectors: VectorStore, indexed: str
) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        vectors.upsert(indexed, [item("m1", [1, 0, 0, 0]), item("m1", [0, 1, 0, 0])])
    assert vectors.count(indexed, tenant="t1") == 0


def test_a_batch_with_one_bad_item_stores_none_of_it(vectors: VectorStore, indexed: str) -> None:
    with pytest.raises(errors.DimensionMismatch):
        vectors.upsert(indexed, [item("m1", [1, 0, 0, 0]), item("m2", [1, 0, 0])])
    assert vectors.count(indexed, tenant="t1") == 0


@pytest.mark.parametrize("length", [3, 5])
def test_a_vector_of_another_dimension_is_refused(
    vectors: VectorStore, indexed: str, length: int
) -> None:
    with pytest.raises(errors.DimensionMismatch):
        vectors.upsert(indexed, [item("m1", [1.0] * length)])
    with pytest.raises(errors.DimensionMismatch):
        vectors.search(indexed, tenant="t1", query_vector=[1.0] * length, k=1)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e39, "1.0", None, True, [1.0]])
def test_a_vector_with_a_non_finite_or_non_number_value_is_refused(
    vectors: VectorStore, indexed: str, value: object
) -> None:
    bad = [1.0, value, 0.0, 0.0]
    with pytest.raises(errors.InvalidParameterValue):
        vectors.upsert(indexed, [item("m1", bad)])  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidParameterValue):
        vectors.search(indexed, tenant="t1", query_vector=bad, k=1)  # type: ignore[arg-type]
    assert vectors.count(indexed, tenant="t1") == 0


def test_a_zero_vector_is_refused_as_it_has_no_cosine(vectors: VectorStore, indexed: str) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        vectors.upsert(indexed, [item("m1", [0.0, 0.0, 0.0, 0.0])])


@pytest.mark.parametrize(
    ("tenant", "message_id"), [("t#1", "m1"), ("", "m1"), ("t1", "m/1"), ("t1", "m" * 129)]
)
def test_ids_outside_the_id_alphabet_are_refused(
    vectors: VectorStore, indexed: str, tenant: str, message_id: str
) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        vectors.upsert(indexed, [item(message_id, [1, 0, 0, 0], tenant=tenant)])


def test_metadata_that_json_does_not_keep_is_refused(vectors: VectorStore, indexed: str) -> None:
    unkept: list[Any] = [{"a": (1, 2)}, {"a": math.nan}, {1: "x"}, {"a": "x" * 5000}]
    for metadata in unkept:
        bad = VectorItem(tenant="t1", message_id="m1", vector=[1, 0, 0, 0], metadata=metadata)
        with pytest.raises(errors.InvalidParameterValue):
            vectors.upsert(indexed, [bad])
    assert vectors.count(indexed, tenant="t1") == 0


def test_each_mode_accepts_only_its_own_kind_of_vector(
    vectors: VectorStore, indexed: str, sealed: str
) -> None:
    with pytest.raises(errors.WrongCollectionMode):
        vectors.upsert(indexed, [sealed_item("m1", b"ciphertext")])
    with pytest.raises(errors.WrongCollectionMode):
        vectors.upsert(sealed, [item("m1", [1, 0, 0, 0])])


# -- search --------------------------------------------------------------------------------


def test_search_returns_the_exact_cosine_top_k_of_a_brute_force_computation(
    vectors: VectorStore,
) -> None:
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(7)
    matrix = rng.standard_normal((500, 32)).astype(np.float32)
    vectors.create_collection("random", dimension=32, mode="indexed")
    vectors.upsert("random", [item(f"m{i:03d}", row.tolist(), n=i) for i, row in enumerate(matrix)])
    query = rng.standard_normal(32)

    hits = vectors.search("random", tenant="t1", query_vector=query.tolist(), k=25)

    rows = matrix.astype(np.float64)
    unit_query = query.astype(np.float32).astype(np.float64)
    expected = rows @ unit_query / (np.linalg.norm(rows, axis=1) * np.linalg.norm(unit_query))
    best = np.argsort(-expected, kind="stable")[:25]
    assert [hit.message_id for hit in hits] == [f"m{i:03d}" for i in best]
    assert [hit.score for hit in hits] == pytest.approx(expected[best].tolist(), abs=1e-9)
    assert [hit.metadata["n"] for hit in hits] == best.tolist()


def test_search_scores_are_cosines_between_minus_one_and_one(
    vectors: VectorStore, indexed: str
) -> None:
    vectors.upsert(
        indexed,
        [
            item("same", [2, 0, 0, 0]),
            item("orthogonal", [0, 3, 0, 0]),
            item("opposite", [-1, 0, 0, 0]),
        ],
    )

    hits = vectors.search(indexed, tenant="t1", query_vector=[5, 0, 0, 0], k=3)

    assert [(hit.message_id, round(hit.score, 9)) for hit in hits] == [
        ("same", 1.0),
        ("orthogonal", 0.0),
        ("opposite", -1.0),
    ]


def test_equal_scores_are_ordered_by_message_id(vectors: VectorStore, indexed: str) -> None:
    vectors.upsert(indexed, [item(name, [1, 1, 0, 0]) for name in ("c", "a", "b", "d")])

    hits = vectors.search(indexed, tenant="t1", query_vector=[1, 0, 0, 0], k=3)

    assert [hit.message_id for hit in hits] == ["a", "b", "c"]


def test_search_never_returns_another_tenants_items(vectors: VectorStore, indexed: str) -> None:
    vectors.upsert(indexed, [item("mine", [0, 1, 0, 0], tenant="t1")])
    vectors.upsert(indexed, [item("theirs", [1, 0, 0, 0], tenant="t2")])

    hits = vectors.search(indexed, tenant="t1", query_vector=[1, 0, 0, 0], k=10)

    assert [hit.message_id for hit in hits] == ["mine"]
    assert vectors.search(indexed, tenant="t3", query_vector=[1, 0, 0, 0], k=10) == []


def test_search_sees_writes_made_after_an_earlier_search_in_any_process(
    open_vectors: OpenVectors, indexed: str
) -> None:
    reader, writer = open_vectors(), open_vectors()
    writer.upsert(indexed, [item("old", [0, 1, 0, 0])])
    assert [
        h.message_id for h in reader.search(indexed, tenant="t1", query_vector=[1, 0, 0, 0])
    ] == ["old"]

    writer.upsert(indexed, [item("new", [1, 0, 0, 0])])
    writer.delete(indexed, tenant="t1", message_ids=["old"])

    hits = reader.search(indexed, tenant="t1", query_vector=[1, 0, 0, 0])
    assert [hit.message_id for hit in hits] == ["new"]


@pytest.mark.parametrize("k", [0, 1001, -1, True, 2.5])
def test_k_outside_1_to_1000_is_refused(vectors: VectorStore, indexed: str, k: object) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        vectors.search(indexed, tenant="t1", query_vector=[1, 0, 0, 0], k=k)  # type: ignore[arg-type]


def test_a_sealed_collection_cannot_be_searched(vectors: VectorStore, sealed: str) -> None:
    vectors.upsert(sealed, [sealed_item("m1", b"\x00" * 32)])

    with pytest.raises(errors.WrongCollectionMode):
        vectors.search(sealed, tenant="t1", query_vector=[1, 0, 0, 0], k=1)


# -- sealed collections --------------------------------------------------------------------


def test_sealed_items_returns_exactly_the_bytes_it_was_given(
    vectors: VectorStore, sealed: str
) -> None:
    blobs = {f"m{i}": bytes(range(256))[i:] + b"\x00\xff" * i for i in range(5)}
    vectors.upsert(sealed, [sealed_item(name, blob) for name, blob in blobs.items()])

    page = vectors.sealed_items(sealed, tenant="t1", limit=10)

    assert {entry.message_id: entry.sealed_vector for entry in page.items} == blobs
    assert page.next_cursor is None


def test_paging_a_sealed_collection_returns_every_item_once(
    vectors: VectorStore, sealed: str
) -> None:
    names = [f"m{i:03d}" for i in range(23)]
    vectors.upsert(sealed, [sealed_item(name, name.encode()) for name in names])

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = vectors.sealed_items(sealed, tenant="t1", limit=5, cursor=cursor)
        assert len(page.items) <= 5
        seen += [entry.message_id for entry in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break

    assert sorted(seen) == names
    assert len(seen) == len(set(seen))


def test_sealed_items_never_returns_another_tenants_items(
    vectors: VectorStore, sealed: str
) -> None:
    vectors.upsert(sealed, [sealed_item("mine", b"a", tenant="t1")])
    vectors.upsert(sealed, [sealed_item("theirs", b"b", tenant="t2")])

    page = vectors.sealed_items(sealed, tenant="t1")

    assert [(e.message_id, e.sealed_vector) for e in page.items] == [("mine", b"a")]


def test_an_indexed_collection_has_no_sealed_items(vectors: VectorStore, indexed: str) -> None:
    with pytest.raises(errors.WrongCollectionMode):
        vectors.sealed_items(indexed, tenant="t1")


@pytest.mark.parametrize("blob", [b"", "text", bytearray(b"x"), b"x" * (128 * 1024 + 1)])
def test_a_sealed_vector_must_be_1_byte_to_128_kib(
    vectors: VectorStore, sealed: str, blob: object
) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        vectors.upsert(sealed, [sealed_item("m1", blob)])  # type: ignore[arg-type]


def test_a_resealed_vector_replaces_the_old_ciphertext(vectors: VectorStore, sealed: str) -> None:
    vectors.upsert(sealed, [sealed_item("m1", b"first")])
    assert vectors.upsert(sealed, [sealed_item("m1", b"first")]) == 0

    assert vectors.upsert(sealed, [sealed_item("m1", b"second")]) == 1

    [entry] = vectors.sealed_items(sealed, tenant="t1").items
    assert entry.sealed_vector == b"second"


# -- delete, count, reopen -----------------------------------------------------------------


def test_delete_removes_only_the_named_items_of_that_tenant(
    vectors: VectorStore, indexed: str
) -> None:
    vectors.upsert(indexed, [item(f"m{i}", [1, i, 0, 0]) for i in range(3)])
    vectors.upsert(indexed, [item("m0", [1, 0, 0, 0], tenant="t2")])

    assert vectors.delete(indexed, tenant="t1", message_ids=["m0", "m1", "never"]) == 2
    assert vectors.delete(indexed, tenant="t1", message_ids=["m0"]) == 0

    assert vectors.count(indexed, tenant="t1") == 1
    assert vectors.count(indexed, tenant="t2") == 1
    hits = vectors.search(indexed, tenant="t1", query_vector=[1, 0, 0, 0], k=10)
    assert [hit.message_id for hit in hits] == ["m2"]


def test_reopening_the_store_keeps_collections_and_items(
    open_vectors: OpenVectors, indexed: str, sealed: str
) -> None:
    first = open_vectors()
    first.upsert(indexed, [item("m1", [0.25, 0.5, 0, 1], k="v")])
    first.upsert(sealed, [sealed_item("m1", b"\x01\x02")])
    first.close()

    again = open_vectors()

    assert again.collection(indexed).dimension == 4
    [hit] = again.search(indexed, tenant="t1", query_vector=[0.25, 0.5, 0, 1], k=1)
    assert (hit.message_id, hit.metadata, round(hit.score, 9)) == ("m1", {"k": "v"}, 1.0)
    assert [e.sealed_vector for e in again.sealed_items(sealed, tenant="t1").items] == [b"\x01\x02"]
    assert again.count(sealed, tenant="t1") == 1


# -- the pure helper and the optional dependency -------------------------------------------


def test_top_k_ranks_decrypted_vectors_as_search_does() -> None:
    np = pytest.importorskip("numpy")
    from vaultq.vectors.similarity import top_k  # noqa: PLC0415 - needs numpy

    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((200, 16))
    query = rng.standard_normal(16)

    result = top_k(matrix, query, 5)

    scores = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    best = np.argsort(-scores, kind="stable")[:5]
    assert [index for index, _ in result] == best.tolist()
    assert [score for _, score in result] == pytest.approx(scores[best].tolist(), abs=1e-12)
    with pytest.raises(errors.DimensionMismatch):
        top_k(matrix, query[:15], 5)


def test_import_vaultq_vectors_does_not_import_numpy_and_the_store_names_the_extra() -> None:
    probe = textwrap.dedent("""
        import sys
        sys.modules["numpy"] = None  # makes any import of it fail
        import vaultq.vectors
        from vaultq import errors
        try:
            import vaultq.vectors.embedded
        except errors.MissingDependency as exc:
            print(exc.code, "vaultq[embeddings]" in str(exc))
    """)
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["MissingDependency", "True"]

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, vaultq.vectors; print('numpy' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "False"
