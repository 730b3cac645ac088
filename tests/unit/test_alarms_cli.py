"""`vaultq alarms list` and `vaultq alarms history` read the alarm store directly."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from vaultq import errors
from vaultq.cli import app
from vaultq.observe.alarms import AlarmState, AlarmTransition
from vaultq.observe.sqlite_alarms import SqliteAlarms

if TYPE_CHECKING:
    from pathlib import Path

OK, ALARM = AlarmState.OK, AlarmState.ALARM
AT_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


@pytest.fixture
def url(tmp_path: Path) -> str:
    store = SqliteAlarms(tmp_path / "vaultq.db")
    for at_ms, old, new, value in [(AT_MS, None, OK, 0.0), (AT_MS + 60_000, OK, ALARM, 2.0)]:
        store.record(
            AlarmTransition(
                alarm="orders-dlq",
                at_ms=at_ms,
                old_state=old,
                new_state=new,
                reason=f"dlq_depth(orders) was {value:g}",
                value=value,
            )
        )
    store.close()
    return f"sqlite:///{tmp_path}/vaultq.db"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_list_shows_each_alarms_state_as_json(url: str) -> None:
    code, output = run("alarms", "list", "--json", "--url", url)

    assert code == 0
    assert json.loads(output) == [
        {
            "alarm": "orders-dlq",
            "state": "ALARM",
            "old_state": "OK",
            "reason": "dlq_depth(orders) was 2",
            "value": 2.0,
            "at": "2023-11-14T22:14:20+00:00",
            "at_ms": AT_MS + 60_000,
        }
    ]


def test_list_prints_a_table(url: str) -> None:
    code, output = run("alarms", "list", "--url", url)

    assert code == 0
    assert "orders-dlq" in output
    assert "ALARM" in output
    assert "dlq_depth(orders) was 2" in output


def test_history_lists_changes_newest_first(url: str) -> None:
    code, output = run("alarms", "history", "orders-dlq", "--json", "--url", url)

    assert code == 0
    assert [(e["old_state"], e["state"]) for e in json.loads(output)] == [
        ("OK", "ALARM"),
        (None, "OK"),
    ]


def test_history_of_an_alarm_never_evaluated_is_an_error(url: str) -> None:
    result = CliRunner().invoke(app, ["alarms", "history", "nope", "--url", url])

    # `vaultq` (cli.main) prints a vaultq error as one line and exits with 1.
    assert isinstance(result.exception, errors.AlarmNotFound)
