"""The app's alarms: their states and histories, read from the alarm store.

Alarms watch the whole deployment (queues and handlers every tenant shares), so only admins
of the operator tenant (``VAULTQ_OPERATOR_TENANT``) may read them, as only they may purge;
nobody may when no operator tenant is set. The CLI (``vaultq alarms``) reads the same store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from vaultq import errors
from vaultq.api.auth import Permission, Principal, require
from vaultq.api.services import ApiServices, services
from vaultq.observe.alarms import AlarmState

if TYPE_CHECKING:
    from vaultq.app import App
    from vaultq.observe.alarms import AlarmStore, AlarmTransition

router = APIRouter(tags=["alarms"])
Services = Annotated[ApiServices, Depends(services)]
Operator = Annotated[Principal, Depends(require(Permission.READ_ALARMS))]


class AlarmView(BaseModel):
    name: str
    description: str
    #: ``dlq_depth(orders)``, ``handler_errors(all)``, ...
    metric: str
    comparison: str
    threshold: float
    period_seconds: int
    state: AlarmState
    #: Why the alarm is in its state, with the value it saw.
    reason: str
    #: When the state last changed; None before the first evaluation.
    updated_at_ms: int | None


class TransitionView(BaseModel):
    at_ms: int
    #: None on the alarm's first evaluation.
    old_state: AlarmState | None
    new_state: AlarmState
    reason: str
    value: float | None


@router.get("/alarms", response_model=list[AlarmView])
def list_alarms(principal: Operator, api: Services) -> list[AlarmView]:
    """Every alarm the app declares, with its current state."""
    latest = _store(api, principal).latest()
    return [_view(api.app, name, latest.get(name)) for name in api.app.alarms]


@router.get("/alarms/{name}/history", response_model=list[TransitionView])
def alarm_history(
    name: str,
    principal: Operator,
    api: Services,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TransitionView]:
    """The alarm's changes of state, newest first."""
    store = _store(api, principal)
    if name not in api.app.alarms:
        raise errors.AlarmNotFound(f"the app declares no alarm named {name!r}")
    return [
        TransitionView(
            at_ms=entry.at_ms,
            old_state=entry.old_state,
            new_state=entry.new_state,
            reason=entry.reason,
            value=entry.value,
        )
        for entry in store.history(name, limit=limit)
    ]


def _store(api: ApiServices, principal: Principal) -> AlarmStore:
    if api.settings.operator_tenant is None or principal.tenant != api.settings.operator_tenant:
        raise errors.Forbidden("alarms are for the operator tenant's admins")
    if api.alarms is None:
        raise errors.BackendUnavailable("alarms are not configured")
    return api.alarms


def _view(app: App, name: str, latest: AlarmTransition | None) -> AlarmView:
    alarm = app.alarms[name]
    return AlarmView(
        name=name,
        description=alarm.description,
        metric=str(alarm.metric),
        comparison=alarm.comparison.value,
        threshold=alarm.threshold,
        period_seconds=alarm.period_seconds,
        state=AlarmState.INSUFFICIENT_DATA if latest is None else latest.new_state,
        reason="not evaluated yet" if latest is None else latest.reason,
        updated_at_ms=None if latest is None else latest.at_ms,
    )
