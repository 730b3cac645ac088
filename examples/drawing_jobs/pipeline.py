"""The drawing pipeline's stages, as pure functions over bytes and JSON objects.

``context`` reads the optional context document (a specification: PDF or plain text) and
keeps what it says about each tag; ``components`` finds the tagged items of a drawing PDF
("D-101 Door 900x2100 Qty 2"); ``excel_generation`` writes them as an .xlsx schedule;
``judge`` checks the result. No stage touches a queue, a store or the network: the handler
in ``app.py`` moves their outputs between checkpoints and the bucket.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import pypdf
import pypdf.errors
from openpyxl import Workbook, load_workbook
from openpyxl.styles import Font

#: A tag: a 1-3 letter prefix, a dash, a number with an optional letter ("D-101", "W-03A").
TAG = re.compile(r"\b(?P<prefix>[A-Z]{1,3})-(?P<number>\d{1,4}[A-Z]?)\b")
#: Width x height, with an optional unit (millimetres when none): "900x2100", "1.2 x 1.5 m".
SIZE = re.compile(
    r"(?P<width>\d+(?:\.\d+)?)\s*[xX\u00d7]\s*(?P<height>\d+(?:\.\d+)?)\s*(?P<unit>mm|cm|m)?\b"
)
QUANTITY = re.compile(
    r"\b(?:qty|quantity)\s*[:=]?\s*(?P<n>\d+)\b|\b(?P<m>\d+)\s*(?:pcs|nos|no\.|ea)(?!\w)",
    re.IGNORECASE,
)
#: What a tag's prefix means when the description does not name the type.
KINDS = {
    "D": "door",
    "W": "window",
    "C": "column",
    "B": "beam",
    "P": "pump",
    "V": "valve",
    "F": "fan",
    "LF": "light fixture",
}
#: Words that name a type themselves, mapped to the type.
KIND_WORDS = {
    "door": "door",
    "window": "window",
    "column": "column",
    "beam": "beam",
    "pump": "pump",
    "valve": "valve",
    "fan": "fan",
    "luminaire": "light fixture",
    "light": "light fixture",
}
_MM_PER_UNIT = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
_NOTE_CHARS = 200
SCHEDULE_SHEET = "Schedule"
SCHEDULE_HEADER = (
    "Tag",
    "Type",
    "Description",
    "Width (mm)",
    "Height (mm)",
    "Quantity",
    "Page",
    "Notes",
)
TOTAL_LABEL = "Total"


class InvalidDocument(ValueError):
    """An input no retry can read: not a PDF, encrypted, or not text."""

    failure_reason = "INVALID_DOCUMENT"


@dataclass(frozen=True, slots=True, kw_only=True)
class Component:
    """One tagged item of a drawing, as its schedule row shows it."""

    tag: str
    #: "door", "window", ...; None when neither the description nor the prefix says.
    kind: str | None
    description: str
    width_mm: int | None
    height_mm: int | None
    quantity: int
    #: 1-based page of the drawing the item is defined on.
    page: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Component:
        return cls(**data)


def extract_pages(pdf: bytes) -> list[str]:
    """The text of each page of a PDF, in order."""
    if not pdf.startswith(b"%PDF-"):
        raise InvalidDocument("not a PDF")
    try:
        reader = pypdf.PdfReader(io.BytesIO(pdf))
        if reader.is_encrypted:
            raise InvalidDocument("an encrypted PDF")
        return [page.extract_text() or "" for page in reader.pages]
    except pypdf.errors.PyPdfError as exc:
        raise InvalidDocument(f"an unreadable PDF ({type(exc).__name__})") from None


def context(document: bytes | None) -> dict[str, Any]:
    """Stage 1: what the context document says about each tag it mentions.

    Returns ``{"source": "pdf" | "text" | "none", "characters": n, "notes": {tag: text}}``;
    a tag's note is the first line that mentions it, cut to 200 characters.
    """
    if document is None:
        return {"source": "none", "characters": 0, "notes": {}}
    if document.startswith(b"%PDF-"):
        source, text = "pdf", "\n".join(extract_pages(document))
    else:
        try:
            source, text = "text", document.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidDocument("the context document is neither a PDF nor UTF-8 text") from None
    notes: dict[str, str] = {}
    for line in text.splitlines():
        for match in TAG.finditer(line):
            notes.setdefault(match.group(), " ".join(line.split())[:_NOTE_CHARS])
    return {"source": source, "characters": len(text), "notes": notes}


def components(drawing: bytes) -> dict[str, Any]:
    """Stage 2: the drawing's components, one per tag definition, in drawing order.

    A definition is a tag followed by a type word or a size ("D-101 Door 900x2100 Qty 2");
    a bare tag ("see D-101") is a reference, not a component. A line holding several tags
    is split at each. Returns ``{"pages": n, "components": [Component.as_json(), ...]}``.
    """
    pages = extract_pages(drawing)
    found = [
        component
        for number, text in enumerate(pages, start=1)
        for line in text.splitlines()
        for component in _components_of_line(line, page=number)
    ]
    return {"pages": len(pages), "components": [c.as_json() for c in found]}


def _components_of_line(line: str, *, page: int) -> list[Component]:
    matches = list(TAG.finditer(line))
    if not matches:
        return []
    # Each tag's description runs to the next tag on the line.
    ends = [m.start() for m in matches[1:]] + [len(line)]
    found = []
    for match, end in zip(matches, ends, strict=True):
        description = " ".join(line[match.end() : end].split()).strip(" ,;:-")
        component = _component(match, description, page=page)
        if component is not None:
            found.append(component)
    return found


def _component(match: re.Match[str], description: str, *, page: int) -> Component | None:
    words = re.findall(r"[a-z]+", description.lower())
    named = next((KIND_WORDS[word] for word in words if word in KIND_WORDS), None)
    size = SIZE.search(description)
    if named is None and size is None:
        return None
    quantity = QUANTITY.search(description)
    return Component(
        tag=match.group(),
        kind=named or KINDS.get(match.group("prefix")),
        description=description,
        width_mm=_millimetres(size, "width"),
        height_mm=_millimetres(size, "height"),
        quantity=int(quantity.group("n") or quantity.group("m")) if quantity else 1,
        page=page,
    )


def _millimetres(size: re.Match[str] | None, part: str) -> int | None:
    if size is None:
        return None
    return round(float(size.group(part)) * _MM_PER_UNIT[size.group("unit") or "mm"])


def excel_generation(found: dict[str, Any], context_notes: dict[str, Any]) -> bytes:
    """Stage 3: the schedule as .xlsx bytes: a header row, one row per component (with the
    context's note on its tag), then a total row of quantities; a second sheet totals by
    type."""
    items = [Component.from_json(c) for c in found["components"]]
    notes = context_notes.get("notes", {})
    book = Workbook()
    sheet = book.worksheets[0]
    sheet.title = SCHEDULE_SHEET
    sheet.append(SCHEDULE_HEADER)
    for item in items:
        sheet.append(
            (
                item.tag,
                item.kind or "",
                item.description,
                item.width_mm,
                item.height_mm,
                item.quantity,
                item.page,
                notes.get(item.tag, ""),
            )
        )
    sheet.append((TOTAL_LABEL, None, None, None, None, sum(i.quantity for i in items)))
    _as_text(sheet)
    for cell in (*sheet[1], *sheet[sheet.max_row]):
        cell.font = Font(bold=True)
    sheet.freeze_panes = "A2"
    by_kind = book.create_sheet("Totals")
    by_kind.append(("Type", "Components", "Quantity"))
    for kind, count in sorted(Counter(i.kind or "unknown" for i in items).items()):
        quantity = sum(i.quantity for i in items if (i.kind or "unknown") == kind)
        by_kind.append((kind, count, quantity))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _as_text(sheet: Any) -> None:
    """Text from a drawing is data: openpyxl would store a string starting with ``=`` as a
    formula, which a spreadsheet then runs (formula injection), so it is stored as text."""
    for row in sheet.iter_rows():
        for cell in row:
            if cell.data_type == "f":
                cell.data_type = "s"


def read_schedule(schedule: bytes) -> tuple[list[tuple[Any, ...]], int | None]:
    """The component rows of a schedule and its quantity total, read back from the .xlsx."""
    sheet = load_workbook(io.BytesIO(schedule), read_only=True)[SCHEDULE_SHEET]
    rows = list(sheet.iter_rows(min_row=2, values_only=True))
    if rows and rows[-1][0] == TOTAL_LABEL:
        return rows[:-1], rows[-1][5]
    return rows, None


def judge(
    found: dict[str, Any],
    context_notes: dict[str, Any],
    schedule: bytes,
    *,
    review: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stage 4: checks of the components and of the schedule as written.

    Returns ``{"passed": bool, "checks": [{"name", "passed", "detail"}], "review": ...}``;
    ``review`` is the optional LLM step's record (``{"status": "skipped", ...}`` without one).
    """
    items = [Component.from_json(c) for c in found["components"]]
    tags = Counter(i.tag for i in items)
    rows, total = read_schedule(schedule)
    referenced = sorted(context_notes.get("notes", {}))
    quantity = sum(i.quantity for i in items)
    checks = [
        _check("components_found", bool(items), f"{len(items)} component(s)"),
        _none(
            "types_known",
            [i.tag for i in items if i.kind is None],
            bad="no type",
            good="every component has a type",
        ),
        _none(
            "sizes_present",
            [i.tag for i in items if i.width_mm is None],
            bad="no size",
            good="every component has a size",
        ),
        _none(
            "unique_tags",
            sorted(t for t, n in tags.items() if n > 1),
            bad="defined more than once",
            good="every tag is defined once",
        ),
        _check(
            "schedule_rows_match",
            len(rows) == len(items),
            f"{len(rows)} row(s) for {len(items)} component(s)",
        ),
        _check(
            "schedule_total_matches",
            total == quantity,
            f"total {total}, components' quantities {quantity}",
        ),
        _none(
            "context_references_found",
            [t for t in referenced if t not in tags],
            bad="not on the drawing",
            good=f"{len(referenced)} tag(s) the context mentions are all on the drawing",
        ),
    ]
    return {
        "passed": all(check["passed"] for check in checks),
        "checks": checks,
        "review": review or {"status": "skipped", "reason": "no review"},
    }


def _check(name: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "passed": passed, "detail": detail}


def _none(name: str, tags: list[str], *, bad: str, good: str) -> dict[str, Any]:
    """A check that passes when ``tags`` is empty, and names them otherwise."""
    return _check(name, not tags, f"{bad}: {', '.join(tags)}" if tags else good)
