"""The Lambda-style runtime: pure policy over the Protocols, never an adapter."""

from __future__ import annotations

from vaultq.runtime.deadline import within_deadline
from vaultq.runtime.failures import HandlerFailure, NonRetryableError
from vaultq.runtime.jobs import JOB_ATTRIBUTE, JobHandle, job_of

__all__ = [
    "JOB_ATTRIBUTE",
    "HandlerFailure",
    "JobHandle",
    "NonRetryableError",
    "job_of",
    "within_deadline",
]
