"""Privacy: redaction of what vaultq stores or shows about failures."""

from __future__ import annotations
