"""Named SQL files: blocks introduced by ``-- name --`` lines, read once per process."""

from __future__ import annotations

import re
from importlib import resources

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


def load_queries(package: str, filename: str) -> dict[str, str]:
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    # split() with a group keeps the names: preamble, then name and body in turn.
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
