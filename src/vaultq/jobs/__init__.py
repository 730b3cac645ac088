"""The job table: the Protocol and its values. Backends live in their own modules."""

from __future__ import annotations

from vaultq.jobs.protocol import (
    DEFAULT_TTL_SECONDS,
    MAX_ITEM_BYTES,
    MAX_PAGE_SIZE,
    TRANSITIONS,
    Checkpoint,
    Job,
    JobKey,
    JobPage,
    JobStatus,
    JobStore,
    JsonObject,
)

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "MAX_ITEM_BYTES",
    "MAX_PAGE_SIZE",
    "TRANSITIONS",
    "Checkpoint",
    "Job",
    "JobKey",
    "JobPage",
    "JobStatus",
    "JobStore",
    "JsonObject",
]
