"""Messages into and out of the app's queues, queue statistics, and dead letters.

Every message sent through the API carries its sender's tenant in the ``vaultq-tenant``
attribute, set by vaultq (a caller cannot choose it); dead letters are listed and redriven
only for the caller's tenant. The queues are shared by every tenant, so taking messages out
(receive, delete, change visibility, purge) is for the operator tenant's own principals
(``VAULTQ_OPERATOR_TENANT``): the part a Lambda execution role plays on AWS.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from vaultq import errors
from vaultq.api.auth import Permission, Principal, require
from vaultq.api.services import ApiServices, services
from vaultq.queues.protocol import (
    MAX_BATCH_ENTRIES,
    BatchEntryError,
    DeleteEntry,
    MessageAttribute,
    OutgoingMessage,
    ReceivedMessage,
    SendEntry,
    VisibilityEntry,
)
from vaultq.runtime.jobs import RESERVED_ATTRIBUTE_PREFIXES, TENANT_ATTRIBUTE

router = APIRouter(tags=["queues"])
Services = Annotated[ApiServices, Depends(services)]
_DLQ_PAGE = 10


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: str = Field(min_length=1, max_length=1024 * 1024)
    attributes: dict[str, Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=9
    )
    delay_seconds: int | None = Field(default=None, ge=0, le=900)
    group_id: str | None = Field(default=None, max_length=128)
    deduplication_id: str | None = Field(default=None, max_length=128)


class BatchEntryIn(MessageIn):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,80}$")


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[BatchEntryIn] = Field(min_length=1, max_length=MAX_BATCH_ENTRIES)


class Sent(BaseModel):
    message_id: str
    sequence_number: str | None = None


class BatchFailure(BaseModel):
    id: str
    code: str
    message: str


class BatchSent(BaseModel):
    successful: dict[str, Sent]
    failed: list[BatchFailure]


class ReceiveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_messages: int = Field(default=1, ge=1, le=MAX_BATCH_ENTRIES)
    #: Long polling, as SQS's ``WaitTimeSeconds``; the queue's own setting when omitted.
    wait_seconds: int | None = Field(default=None, ge=0, le=20)
    visibility_timeout_seconds: int | None = Field(default=None, ge=0, le=43_200)


class AttributeOut(BaseModel):
    data_type: str
    #: Binary values are base64.
    value: str


class ReceivedOut(BaseModel):
    message_id: str
    #: Valid until the message is received again.
    receipt_handle: str
    body: str
    md5_of_body: str
    attributes: dict[str, AttributeOut]
    receive_count: int
    sent_at_ms: int
    group_id: str | None = None
    sequence_number: str | None = None


class Received(BaseModel):
    messages: list[ReceivedOut]


_Handle = Annotated[str, Field(min_length=1, max_length=1024)]
_EntryId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,80}$")]


class DeleteEntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: _EntryId
    receipt_handle: _Handle


class DeleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[DeleteEntryIn] = Field(min_length=1, max_length=MAX_BATCH_ENTRIES)


class VisibilityEntryIn(DeleteEntryIn):
    visibility_timeout_seconds: int = Field(ge=0, le=43_200)


class VisibilityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[VisibilityEntryIn] = Field(min_length=1, max_length=MAX_BATCH_ENTRIES)


class BatchDone(BaseModel):
    successful: list[str]
    failed: list[BatchFailure]


class QueueStatsView(BaseModel):
    queue: str
    visible: int
    in_flight: int
    delayed: int
    oldest_message_age_seconds: int


class DeadLetterView(BaseModel):
    message_id: str
    body: str
    source_queue: str
    failure_reason: str
    receive_count: int
    last_error: str | None
    moved_to_dlq_at_ms: int


class RedriveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message_ids: list[str] | None = Field(default=None, max_length=1000)


class Redriven(BaseModel):
    moved: int


@router.post("/queues/{queue}/messages", response_model=Sent, status_code=201)
def send_message(
    queue: str,
    message: MessageIn,
    principal: Annotated[Principal, Depends(require(Permission.SEND))],
    api: Services,
) -> Sent:
    """Send one message to one of the app's queues."""
    _check_enabled(api)
    result = api.queues.send(_declared(api, queue), _outgoing(message, principal))
    return Sent(message_id=result.message_id, sequence_number=result.sequence_number)


@router.post("/queues/{queue}/messages/batch", response_model=BatchSent, status_code=201)
def send_batch(
    queue: str,
    batch: BatchIn,
    principal: Annotated[Principal, Depends(require(Permission.SEND))],
    api: Services,
) -> BatchSent:
    """Send up to 10 messages; each entry succeeds or fails on its own."""
    _check_enabled(api)
    entries = [SendEntry(id=e.id, message=_outgoing(e, principal)) for e in batch.entries]
    result = api.queues.send_batch(_declared(api, queue), entries)
    return BatchSent(
        successful={
            entry_id: Sent(message_id=r.message_id, sequence_number=r.sequence_number)
            for entry_id, r in result.successful.items()
        },
        failed=[BatchFailure(id=f.id, code=f.code, message=f.message) for f in result.failed],
    )


@router.post("/queues/{queue}/messages/receive", response_model=Received)
def receive(
    queue: str,
    wanted: ReceiveIn,
    principal: Annotated[Principal, Depends(require(Permission.RECEIVE))],
    api: Services,
) -> Received:
    """Lease up to 10 messages of every tenant (operator tenant only), waiting up to
    ``wait_seconds`` for the first. Each stays invisible for its visibility timeout."""
    _check_operator(api, principal, "receiving from")
    messages = api.queues.receive(
        _declared(api, queue, dead_letter_queues=True),
        max_messages=wanted.max_messages,
        wait_seconds=wanted.wait_seconds,
        visibility_timeout_seconds=wanted.visibility_timeout_seconds,
    )
    return Received(messages=[_received_view(m) for m in messages])


@router.post("/queues/{queue}/messages/delete", response_model=BatchDone)
def delete_messages(
    queue: str,
    batch: DeleteIn,
    principal: Annotated[Principal, Depends(require(Permission.DELETE_MESSAGE))],
    api: Services,
) -> BatchDone:
    """Delete received messages by receipt handle (operator tenant only); each entry succeeds
    or fails on its own (a handle from an earlier receive fails as ``StaleReceiptHandle``)."""
    _check_operator(api, principal, "deleting from")
    entries = [DeleteEntry(id=e.id, receipt_handle=e.receipt_handle) for e in batch.entries]
    result = api.queues.delete_batch(_declared(api, queue, dead_letter_queues=True), entries)
    return _batch_done(result.successful, result.failed)


@router.post("/queues/{queue}/messages/visibility", response_model=BatchDone)
def change_visibility(
    queue: str,
    batch: VisibilityIn,
    principal: Annotated[Principal, Depends(require(Permission.RECEIVE))],
    api: Services,
) -> BatchDone:
    """Extend or end received messages' invisibility, counted from now (operator tenant
    only): 0 gives a message back at once."""
    _check_operator(api, principal, "changing visibility in")
    entries = [
        VisibilityEntry(
            id=e.id,
            receipt_handle=e.receipt_handle,
            visibility_timeout_seconds=e.visibility_timeout_seconds,
        )
        for e in batch.entries
    ]
    result = api.queues.change_visibility_batch(
        _declared(api, queue, dead_letter_queues=True), entries
    )
    return _batch_done(result.successful, result.failed)


@router.get("/queues/{queue}/stats", response_model=QueueStatsView)
def queue_stats(
    queue: str,
    principal: Annotated[Principal, Depends(require(Permission.RECEIVE))],
    api: Services,
) -> QueueStatsView:
    """Depth, in-flight and delayed counts, and the age of the oldest message."""
    name = _declared(api, queue, dead_letter_queues=True)
    stats = api.queues.stats(name)
    return QueueStatsView(
        queue=name,
        visible=stats.visible,
        in_flight=stats.in_flight,
        delayed=stats.delayed,
        oldest_message_age_seconds=stats.oldest_message_age_seconds,
    )


@router.get("/queues/{queue}/dead-letters", response_model=list[DeadLetterView])
def dead_letters(
    queue: str,
    principal: Annotated[Principal, Depends(require(Permission.LIST_DLQ))],
    api: Services,
    limit: Annotated[int, Field(ge=1, le=100)] = 10,
) -> list[DeadLetterView]:
    """The caller's tenant's dead letters of ``queue``, with their failure records. Like
    the SQS console, looking receives them (with no visibility timeout)."""
    return [_dead_view(m) for m in _tenant_dead_letters(api, queue, principal, limit)]


@router.post("/queues/{queue}/dead-letters/redrive", response_model=Redriven)
def redrive(
    queue: str,
    wanted: RedriveIn,
    principal: Annotated[Principal, Depends(require(Permission.REDRIVE))],
    api: Services,
) -> Redriven:
    """Move the caller's tenant's dead letters (all, or those named) back to ``queue``."""
    mine = [m.message_id for m in _tenant_dead_letters(api, queue, principal, 1000)]
    chosen = mine if wanted.message_ids is None else [i for i in mine if i in wanted.message_ids]
    dlq = _dead_letter_queue(api, queue)
    moved = api.queues.redrive(dlq, message_ids=chosen) if chosen else 0
    return Redriven(moved=moved)


class Purged(BaseModel):
    purged: int


@router.delete("/queues/{queue}/messages", response_model=Purged)
def purge(
    queue: str,
    principal: Annotated[Principal, Depends(require(Permission.PURGE))],
    api: Services,
) -> Purged:
    """Delete every message of one of the app's queues. Queues are shared by all tenants, so
    only admins of the operator tenant (``VAULTQ_OPERATOR_TENANT``) may; nobody by default."""
    _check_operator(api, principal, "purging")
    return Purged(purged=api.queues.purge(_declared(api, queue, dead_letter_queues=True)))


def _check_operator(api: ApiServices, principal: Principal, action: str) -> None:
    """Queues hold every tenant's messages: only the operator tenant may take them out."""
    if api.settings.operator_tenant is None or principal.tenant != api.settings.operator_tenant:
        raise errors.Forbidden(f"{action} a shared queue is for the operator tenant only")


def _declared(api: ApiServices, queue: str, *, dead_letter_queues: bool = False) -> str:
    names = set(api.app.queues)
    if dead_letter_queues:
        names |= {
            spec.dead_letter_queue for spec in api.app.queues.values() if spec.dead_letter_queue
        }
    if queue not in names:
        raise errors.QueueDoesNotExist(f"no queue named {queue!r}")
    return queue


def _dead_letter_queue(api: ApiServices, queue: str) -> str:
    dlq = api.app.queues[_declared(api, queue)].dead_letter_queue
    if dlq is None:
        raise errors.QueueDoesNotExist(f"queue {queue!r} has no dead-letter queue")
    return dlq


def _check_enabled(api: ApiServices) -> None:
    """A message sent directly has no job to wait in the outbox: with the queue switched off
    (``VAULTQ_QUEUE_ENABLED=false``) the send is refused, never queued behind the switch."""
    if not api.settings.queue_enabled:
        raise errors.BackendUnavailable("the queue is disabled (VAULTQ_QUEUE_ENABLED=false)")


def _outgoing(message: MessageIn, principal: Principal) -> OutgoingMessage:
    reserved = sorted(n for n in message.attributes if n.startswith(RESERVED_ATTRIBUTE_PREFIXES))
    if reserved:
        # vaultq's own attributes name tenants and jobs: a caller setting them could make a
        # worker act on another tenant's job.
        raise errors.InvalidParameterValue(
            f"message attribute names starting with vaultq- are vaultq's: {', '.join(reserved)}"
        )
    attributes = {
        name: MessageAttribute(data_type="String", value=value)
        for name, value in message.attributes.items()
    }
    attributes[TENANT_ATTRIBUTE] = MessageAttribute(data_type="String", value=principal.tenant)
    return OutgoingMessage(
        body=message.body,
        attributes=attributes,
        delay_seconds=message.delay_seconds,
        group_id=message.group_id,
        deduplication_id=message.deduplication_id,
    )


def _tenant_dead_letters(
    api: ApiServices, queue: str, principal: Principal, limit: int
) -> list[ReceivedMessage]:
    dlq = _dead_letter_queue(api, queue)
    seen: dict[str, ReceivedMessage] = {}
    for _ in range(max(1, api.queues.stats(dlq).visible // _DLQ_PAGE + 1)):
        batch = api.queues.receive(dlq, max_messages=_DLQ_PAGE, visibility_timeout_seconds=0)
        new = [m for m in batch if m.message_id not in seen]
        if not new:
            break
        seen.update((m.message_id, m) for m in new)
    mine = [m for m in seen.values() if _tenant(m) == principal.tenant]
    return mine[:limit]


def _tenant(message: ReceivedMessage) -> str | None:
    attribute = message.attributes.get(TENANT_ATTRIBUTE)
    return None if attribute is None else str(attribute.value)


def _received_view(message: ReceivedMessage) -> ReceivedOut:
    return ReceivedOut(
        message_id=message.message_id,
        receipt_handle=message.receipt_handle,
        body=message.body,
        md5_of_body=message.md5_of_body,
        attributes={name: _attribute_view(a) for name, a in message.attributes.items()},
        receive_count=message.receive_count,
        sent_at_ms=message.sent_at_ms,
        group_id=message.group_id,
        sequence_number=message.sequence_number,
    )


def _attribute_view(attribute: MessageAttribute) -> AttributeOut:
    value = attribute.value
    text = base64.b64encode(value).decode() if isinstance(value, bytes) else value
    return AttributeOut(data_type=attribute.data_type, value=text)


def _batch_done(successful: Mapping[str, None], failed: Sequence[BatchEntryError]) -> BatchDone:
    return BatchDone(
        successful=sorted(successful),
        failed=[BatchFailure(id=f.id, code=f.code, message=f.message) for f in failed],
    )


def _dead_view(message: ReceivedMessage) -> DeadLetterView:
    record = message.dead_letter
    return DeadLetterView(
        message_id=message.message_id,
        body=message.body,
        source_queue=record.source_queue if record else "",
        failure_reason=record.reason if record else "",
        receive_count=record.receive_count if record else 0,
        last_error=record.last_error if record else None,
        moved_to_dlq_at_ms=record.moved_at_ms if record else 0,
    )
