"""Tests of the example apps under examples/."""

from __future__ import annotations
