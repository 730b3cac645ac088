"""The prediction message schema, checked on both sides of the queue.

The API validates a request with `PredictionRequest` before it stores the upload and queues
the job; the worker validates the message it receives with `PredictionMessage`, which holds
the same request, before it reads a byte of the upload. The second check is not redundant: a
queue authenticates nobody, and anyone holding a producer token may send to it directly.

Every model refuses unknown fields. ``requested_at`` must lie within `REPLAY_WINDOW` of a
reference time passed in the validation context (``{"reference_time": datetime}``): the API
passes nothing, which means its clock, now; the worker passes the time the API accepted the
job, read from the job table, since a job may wait in the outbox (queue down) or between
retries far longer than the window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

from pydantic import (
    UUID4,
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from vaultq import errors
from vaultq.blobs.protocol import validate_key

if TYPE_CHECKING:
    from vaultq.jobs.protocol import Job

#: How far ``requested_at`` may be from its reference time, either way.
REPLAY_WINDOW = timedelta(minutes=5)
REFERENCE_TIME = "reference_time"
USER_ID_PATTERN = r"^usr_[a-z0-9]{8,32}$"
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


class InvalidMessage(ValueError):
    """A message that is not a valid prediction request for its job: retrying cannot help."""

    failure_reason = "INVALID_MESSAGE"


def checked_key(key: str) -> str:
    """An object key as vaultq's blob stores accept it: no ``..`` or ``.`` segment, no
    leading ``/``, no empty segment, no backslash, no control character."""
    try:
        validate_key(key)
    except errors.InvalidObjectKey as exc:
        raise ValueError(str(exc)) from None
    return key


ObjectKey = Annotated[str, AfterValidator(checked_key)]


class PredictionRequest(BaseModel):
    """What a client asks for, besides the CSV file: the JSON body of ``POST /predictions``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The client's own id for this request (a random UUID, version 4).
    request_id: UUID4
    #: Whose customers these are: ``usr_`` and 8-32 lower-case letters or digits.
    user_id: Annotated[str, Field(pattern=USER_ID_PATTERN)]
    #: When the client made the request, with its time zone.
    requested_at: AwareDatetime
    #: Rows whose churn probability reaches it are labelled 1.
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5

    @field_validator("requested_at")
    @classmethod
    def _within_replay_window(cls, requested_at: datetime, info: ValidationInfo) -> datetime:
        context = info.context or {}
        reference = context.get(REFERENCE_TIME) or datetime.now(tz=UTC)
        if abs(requested_at - reference) > REPLAY_WINDOW:
            raise ValueError(
                f"requested_at is more than {REPLAY_WINDOW.seconds // 60} minutes from "
                "the time the request was accepted"
            )
        return requested_at


class StoredFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: Annotated[str, Field(pattern=BUCKET_PATTERN)]
    key: ObjectKey


class PredictionFiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The uploaded CSV.
    file: StoredFile


class PredictionMessage(BaseModel):
    """The body of a prediction job's message, as ``POST /predictions`` sends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: UUID4
    client_id: Annotated[str, Field(pattern=ID_PATTERN)]
    payload: PredictionRequest
    files: PredictionFiles


def read_message(body: str, *, job: Job, tenant: str | None) -> PredictionMessage:
    """The message of ``job``, or `InvalidMessage`. ``job`` is the API's record of the job,
    ``tenant`` the ``vaultq-tenant`` attribute vaultq set on the message: the message must
    agree with both, so one cannot make the worker read another job's (or tenant's) file."""
    reference = datetime.fromtimestamp(job.created_at_ms / 1000, tz=UTC)
    try:
        message = PredictionMessage.model_validate_json(body, context={REFERENCE_TIME: reference})
    except ValidationError as exc:
        # Where and why only: an error's input may be private data.
        where = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidMessage(f"the message does not match the schema: {where}") from None
    upload = message.files.file
    if tenant != job.key.tenant_id:
        raise InvalidMessage("the message was sent by another tenant than its job's")
    if (message.job_id.hex, message.client_id) != (job.key.job_id, job.key.client_id):
        raise InvalidMessage("the message names another job than the one it belongs to")
    if f"{upload.bucket}/{upload.key}" not in job.input_files:
        raise InvalidMessage("the message names a file that was not uploaded with its job")
    return message
