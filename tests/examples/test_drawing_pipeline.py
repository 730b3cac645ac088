"""The drawing pipeline's stages on real PDFs and real .xlsx files."""

from __future__ import annotations

import io
from typing import Any

import pypdf
import pytest
from examples.drawing_jobs import pipeline
from openpyxl import load_workbook

from tests.examples.pdf import text_pdf

DRAWING = text_pdf(
    [
        "GROUND FLOOR PLAN  scale 1:100",
        "D-101 Door 900x2100 Qty 2   D-102 Door 800\u00d72100",
        "W-03 Window 1.2 x 1.5 m 4 pcs",
        "Fire exit via D-101 (see spec)",
    ],
    ["C-1 Column 400x400", "LF-7 Luminaire 600x600 recessed, qty: 12"],
)
SPEC = b"Specification\nD-101: FD30 fire door, self-closing.\nW-03 to be double glazed.\n"


def schedule_of(
    drawing: bytes, context_document: bytes | None = None
) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    found = pipeline.components(drawing)
    notes = pipeline.context(context_document)
    return found, notes, pipeline.excel_generation(found, notes)


def test_the_hand_built_pdf_is_valid_for_a_strict_reader() -> None:
    reader = pypdf.PdfReader(io.BytesIO(text_pdf(["one (1) \\ two"], ["page two"])), strict=True)

    assert [page.extract_text().strip() for page in reader.pages] == [
        "one (1) \\ two",
        "page two",
    ]


def test_components_have_tag_type_size_quantity_and_page() -> None:
    found = pipeline.components(DRAWING)

    assert found["pages"] == 2
    assert [
        (c["tag"], c["kind"], c["width_mm"], c["height_mm"], c["quantity"], c["page"])
        for c in found["components"]
    ] == [
        ("D-101", "door", 900, 2100, 2, 1),
        ("D-102", "door", 800, 2100, 1, 1),
        ("W-03", "window", 1200, 1500, 4, 1),
        ("C-1", "column", 400, 400, 1, 2),
        ("LF-7", "light fixture", 600, 600, 12, 2),
    ]
    assert found["components"][0]["description"] == "Door 900x2100 Qty 2"


def test_a_tag_without_a_type_or_size_is_a_reference_not_a_component() -> None:
    found = pipeline.components(text_pdf(["see D-101", "V-9 900x100", "X-1 as shown"]))

    assert [(c["tag"], c["kind"]) for c in found["components"]] == [("V-9", "valve")]


def test_the_context_keeps_the_first_line_that_mentions_each_tag() -> None:
    as_text = pipeline.context(SPEC)
    as_pdf = pipeline.context(text_pdf(SPEC.decode().splitlines()))

    assert as_text["source"] == "text"
    assert as_pdf["source"] == "pdf"
    assert (
        as_text["notes"]
        == as_pdf["notes"]
        == {
            "D-101": "D-101: FD30 fire door, self-closing.",
            "W-03": "W-03 to be double glazed.",
        }
    )
    assert pipeline.context(None) == {"source": "none", "characters": 0, "notes": {}}


@pytest.mark.parametrize(
    "document", [b"PK\x03\x04 a zip", b"%PDF-1.4 truncated", b"\xff\xfe\x00binary"]
)
def test_unreadable_inputs_are_invalid_documents(document: bytes) -> None:
    with pytest.raises(pipeline.InvalidDocument):
        pipeline.components(document)
    if not document.startswith(b"%PDF"):
        with pytest.raises(pipeline.InvalidDocument):
            pipeline.context(document + b"\xff")


def test_an_encrypted_drawing_is_an_invalid_document() -> None:
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(DRAWING))
    writer.encrypt("secret", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)

    with pytest.raises(pipeline.InvalidDocument, match="encrypted"):
        pipeline.components(out.getvalue())


def test_the_schedule_has_a_header_a_row_per_component_and_totals() -> None:
    found, _, schedule = schedule_of(DRAWING, SPEC)

    book = load_workbook(io.BytesIO(schedule))
    rows = list(book["Schedule"].iter_rows(values_only=True))
    assert rows[0] == pipeline.SCHEDULE_HEADER
    assert rows[1] == (
        "D-101",
        "door",
        "Door 900x2100 Qty 2",
        900,
        2100,
        2,
        1,
        "D-101: FD30 fire door, self-closing.",
    )
    assert [row[0] for row in rows[1:-1]] == [c["tag"] for c in found["components"]]
    assert rows[-1][0] == "Total"
    assert rows[-1][5] == 2 + 1 + 4 + 1 + 12
    totals = list(book["Totals"].iter_rows(min_row=2, values_only=True))
    assert ("door", 2, 3) in totals
    assert ("light fixture", 1, 12) in totals


def test_text_that_looks_like_a_formula_stays_text_in_the_schedule() -> None:
    drawing = text_pdf(['D-9 =HYPERLINK("http://x.example") 900x2100'])
    _, _, schedule = schedule_of(drawing, b'=cmd|"/C calc"!A0 D-9')

    row = load_workbook(io.BytesIO(schedule))["Schedule"][2]

    assert row[2].value == '=HYPERLINK("http://x.example") 900x2100'
    assert row[7].value == '=cmd|"/C calc"!A0 D-9'
    assert row[2].data_type == row[7].data_type == "s"


def test_the_judge_passes_a_clean_drawing_and_records_a_skipped_review() -> None:
    found, notes, schedule = schedule_of(DRAWING, SPEC)

    evaluation = pipeline.judge(found, notes, schedule)

    assert evaluation["passed"], evaluation
    assert {check["name"] for check in evaluation["checks"]} == {
        "components_found",
        "types_known",
        "sizes_present",
        "unique_tags",
        "schedule_rows_match",
        "schedule_total_matches",
        "context_references_found",
    }
    assert evaluation["review"]["status"] == "skipped"


def test_the_judge_names_what_is_wrong() -> None:
    drawing = text_pdf(["D-1 Door 900x2100", "D-1 Door 1000x2100", "Q-5 Widget 10x10", "Z-2 Door"])
    found, notes, schedule = schedule_of(drawing, b"Z-2 and K-9 per spec")

    evaluation = pipeline.judge(found, notes, schedule)

    failed = {c["name"]: c["detail"] for c in evaluation["checks"] if not c["passed"]}
    assert not evaluation["passed"]
    assert failed.keys() == {
        "types_known",
        "sizes_present",
        "unique_tags",
        "context_references_found",
    }
    assert failed["types_known"] == "no type: Q-5"
    assert failed["sizes_present"] == "no size: Z-2"
    assert failed["unique_tags"] == "defined more than once: D-1"
    assert failed["context_references_found"] == "not on the drawing: K-9"


def test_the_judge_reads_the_schedule_as_written() -> None:
    found, notes, _ = schedule_of(DRAWING)
    fewer = {"pages": 2, "components": found["components"][:-1]}
    short_schedule = pipeline.excel_generation(fewer, notes)

    checks = pipeline.judge(found, notes, short_schedule)["checks"]

    verdicts = {c["name"]: c["passed"] for c in checks}
    assert verdicts["schedule_rows_match"] is False
    assert verdicts["schedule_total_matches"] is False
