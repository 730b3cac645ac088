"""The embedded alarm store: state is the latest transition, changes are compare-and-set, and
everything survives a restart."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from vaultq import errors
from vaultq.observe.alarms import AlarmState, AlarmTransition
from vaultq.observe.sqlite_alarms import SqliteAlarms
from vaultq.wiring import open_alarms

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

OK, ALARM, NO_DATA = AlarmState.OK, AlarmState.ALARM, AlarmState.INSUFFICIENT_DATA
DAY_MS = 86_400_000


def change(
    old: AlarmState | None, new: AlarmState, *, at_ms: int = 1_000, alarm: str = "dlq"
) -> AlarmTransition:
    return AlarmTransition(
        alarm=alarm, at_ms=at_ms, old_state=old, new_state=new, reason=f"to {new}", value=1.0
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteAlarms]:
    opened = SqliteAlarms(tmp_path / "vaultq.db")
    yield opened
    opened.close()


def test_an_alarm_never_evaluated_has_no_state_and_no_history(store: SqliteAlarms) -> None:
    assert store.latest() == {}
    assert store.history("dlq") == []


def test_the_latest_transition_is_the_state_and_history_is_newest_first(
    store: SqliteAlarms,
) -> None:
    steps = [change(None, OK, at_ms=1), change(OK, ALARM, at_ms=2), change(ALARM, OK, at_ms=3)]
    for step in steps:
        assert store.record(step)

    assert store.latest() == {"dlq": steps[-1]}
    assert store.history("dlq") == steps[::-1]
    assert store.history("dlq", limit=1) == [steps[-1]]


def test_a_change_from_a_state_the_alarm_is_no_longer_in_is_not_recorded(
    store: SqliteAlarms,
) -> None:
    store.record(change(None, OK))
    store.record(change(OK, ALARM, at_ms=2))

    # A second evaluator that read OK before the first one recorded ALARM:
    assert not store.record(change(OK, ALARM, at_ms=3))
    assert not store.record(change(None, NO_DATA, at_ms=3))
    assert [entry.at_ms for entry in store.history("dlq")] == [2, 1000]


def test_states_and_history_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/vaultq.db"
    first = open_alarms(url)
    first.record(change(None, OK, alarm="a"))
    first.record(change(OK, ALARM, at_ms=5_000, alarm="a"))
    first.record(change(None, NO_DATA, alarm="b"))
    first.close()

    reopened = open_alarms(url)
    try:
        assert {name: t.new_state for name, t in reopened.latest().items()} == {
            "a": ALARM,
            "b": NO_DATA,
        }
        assert [t.new_state for t in reopened.history("a")] == [ALARM, OK]
    finally:
        reopened.close()


def test_history_past_the_retention_goes_but_the_state_stays(tmp_path: Path) -> None:
    store = SqliteAlarms(tmp_path / "vaultq.db", retention_seconds=86_400)
    try:
        store.record(change(None, OK, at_ms=0))
        store.record(change(OK, ALARM, at_ms=DAY_MS // 2))
        store.record(change(ALARM, OK, at_ms=DAY_MS + 1))

        assert [t.at_ms for t in store.history("dlq")] == [DAY_MS + 1, DAY_MS // 2]
        assert store.latest()["dlq"].new_state is OK
    finally:
        store.close()


def test_an_unreasonable_history_limit_is_refused(store: SqliteAlarms) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        store.history("dlq", limit=0)


def test_a_closed_store_raises_vaultq_errors(tmp_path: Path) -> None:
    store = SqliteAlarms(tmp_path / "vaultq.db")
    store.close()

    with pytest.raises(errors.BackendUnavailable):
        store.latest()
    with pytest.raises(errors.BackendUnavailable):
        store.record(change(None, OK))
