"""The task a client posts, with the seed's validation and sanitisation.

``Task.model_validate(body)`` reads what a client sent: text is trimmed, checked for length,
then HTML-escaped; the priority is matched without regard to case; the due date is parsed
as ISO-8601. Its JSON dump is the job's payload. The processor reads that payload back with
``read_task``: the same model and the same rules, applied to the sanitised form (escaping is
not idempotent, so text is escaped exactly once, on the way in).
"""

from __future__ import annotations

import html
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

TITLE_MAX_CHARS = 200
DESCRIPTION_MAX_CHARS = 2000
#: The validation context under which a payload is read as already sanitised.
SANITISED: dict[str, bool] = {"sanitised": True}


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Task(BaseModel):
    """``title`` 1-200 and ``description`` 1-2000 characters, counted as written (trimmed,
    before escaping); ``priority`` ``low``, ``medium`` or ``high`` in any case;
    ``due_date`` optional, an ISO-8601 date or a date-time with a UTC offset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str
    description: str
    priority: Priority
    #: A date-time is kept in UTC; a date stays a date. A past date is accepted: an overdue
    #: task is still a task, and reading the payload again must not depend on the clock.
    due_date: datetime | date | None = None

    @field_validator("title", "description", mode="before")
    @classmethod
    def _sanitise(cls, value: Any, info: ValidationInfo) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        limit = TITLE_MAX_CHARS if info.field_name == "title" else DESCRIPTION_MAX_CHARS
        if _is_sanitised(info):
            written = html.unescape(value)
            if html.escape(written) != value or written != written.strip():
                raise ValueError("is not text this API sanitised")
            _check_length(written, limit)
            return value
        written = value.strip()
        _check_length(written, limit)
        return html.escape(written)

    @field_validator("priority", mode="before")
    @classmethod
    def _normalise_priority(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("due_date", mode="before")
    @classmethod
    def _parse_due_date(cls, value: Any) -> date | datetime | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be an ISO-8601 string")
        return parse_due_date(value.strip())


def parse_due_date(text: str) -> date | datetime:
    """An ISO-8601 date (``2026-12-01``) or date-time with an offset (``...T17:00:00+01:00``,
    ``...Z``), the latter in UTC. A date-time without an offset is refused: the server
    cannot know whose local time it is."""
    if "T" not in text and "t" not in text:
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise ValueError("is not an ISO-8601 date or date-time") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("is not an ISO-8601 date or date-time") from None
    if moment.utcoffset() is None:
        raise ValueError("needs a UTC offset, such as Z or +01:00")
    return moment.astimezone(UTC)


def read_task(payload: Any) -> Task:
    """A job's payload, as the API stored it, validated again."""
    return Task.model_validate(payload, context=SANITISED)


def _is_sanitised(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("sanitised"))


def _check_length(text: str, limit: int) -> None:
    if not 1 <= len(text) <= limit:
        raise ValueError(f"must be 1 to {limit} characters after trimming whitespace")
