"""The ``vaultq`` command as a user runs it: a real subprocess on a database in ``tmp_path``.

Steps that only set the scene (a queue exists, a message was dead-lettered) go through the
library on the same database, which is quicker than a subprocess; what a test asserts about
the command line always goes through the command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from vaultq import OutgoingMessage, QueueAttributes, RedrivePolicy, open_queues

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from vaultq import QueueBackend


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Vaultq:
    """Runs ``python -m vaultq.cli`` with ``VAULTQ_URL`` naming a database of the test's own."""

    def __init__(self, tmp_path: Path) -> None:
        self.cwd = tmp_path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("VAULTQ_")}
        self.env["VAULTQ_URL"] = f"sqlite:///{tmp_path / 'vaultq.db'}"

    def __call__(self, *args: str, stdin: str = "", **env: str) -> Run:
        completed = subprocess.run(
            [sys.executable, "-m", "vaultq.cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env={**self.env, **env},
            timeout=30,
            check=False,
        )
        return Run(completed.returncode, completed.stdout, completed.stderr)

    def json(self, *args: str, stdin: str = "") -> Any:
        """Run with ``--json``; the command must succeed."""
        run = self(*args, "--json", stdin=stdin)
        assert run.exit_code == 0, run.stderr
        return run.json()


@pytest.fixture
def vaultq(tmp_path: Path) -> Vaultq:
    return Vaultq(tmp_path)


@pytest.fixture
def queues(vaultq: Vaultq) -> Iterator[QueueBackend]:
    """The same database as ``vaultq``'s, opened in-process to set the scene quickly."""
    backend = open_queues(vaultq.env["VAULTQ_URL"])
    yield backend
    backend.close()


def assert_one_error_line(run: Run, code: str) -> None:
    assert run.exit_code == 1
    assert run.stdout == ""
    [line] = run.stderr.splitlines()
    assert line.startswith(f"error: {code}: ")


def dead_letter_one_message(queues: QueueBackend, body: str = "poison") -> str:
    """Create ``work`` with DLQ ``work-dlq`` (max receive count 2), dead-letter one message."""
    queues.create_queue("work-dlq")
    policy = RedrivePolicy(dead_letter_queue="work-dlq", max_receive_count=2)
    queues.create_queue("work", QueueAttributes(redrive_policy=policy))
    message_id = queues.send("work", OutgoingMessage(body=body)).message_id
    for _ in range(2):
        queues.receive("work", visibility_timeout_seconds=0)
    assert queues.receive("work") == []
    return message_id


def test_a_message_round_trips_through_create_list_send_receive_and_delete(vaultq):
    # Given a queue
    assert vaultq.json("queue", "create", "orders")["name"] == "orders"
    assert [q["name"] for q in vaultq.json("queue", "list")] == ["orders"]

    # When a message with an attribute is sent, received and deleted
    sent = vaultq.json("queue", "send", "orders", "hello", "--attribute", "kind=String:greeting")
    [received] = vaultq.json("queue", "receive", "orders")
    deleted = vaultq("queue", "delete-message", "orders", received["receipt_handle"])

    # Then the receive returned what was sent, and the queue is empty afterwards
    assert received["message_id"] == sent["message_id"]
    assert received["body"] == "hello"
    assert received["receive_count"] == 1
    assert received["attributes"] == {"kind": {"data_type": "String", "value": "greeting"}}
    assert deleted.exit_code == 0
    stats = vaultq.json("queue", "stats", "orders")
    assert (stats["visible"], stats["in_flight"]) == (0, 0)


def test_body_dash_sends_stdin_byte_for_byte(vaultq, queues):
    queues.create_queue("notes")

    vaultq.json("queue", "send", "notes", "-", stdin="line one\nline two\n")

    [received] = queues.receive("notes")
    assert received.body == "line one\nline two\n"


def test_receive_without_json_prints_a_handle_that_deletes_even_on_a_narrow_terminal(
    vaultq, queues
):
    # Given a message, received without --json on a 30-column terminal
    queues.create_queue("narrow")
    message_id = queues.send("narrow", OutgoingMessage(body="body [bold]as is[/bold]")).message_id
    run = vaultq("queue", "receive", "narrow", COLUMNS="30")
    assert run.exit_code == 0, run.stderr
    lines = run.stdout.splitlines()

    # When the user copies the receipt handle from the output and deletes with it
    [handle] = [line.split()[-1] for line in lines if line.startswith("receipt handle")]
    deleted = vaultq("queue", "delete-message", "narrow", handle)

    # Then the output showed the id and the body unmangled, and the message is gone
    assert f"message id            {message_id}" in lines
    assert "body                  body [bold]as is[/bold]" in lines
    assert deleted.exit_code == 0, deleted.stderr
    stats = queues.stats("narrow")
    assert (stats.visible, stats.in_flight) == (0, 0)


def test_create_queue_is_idempotent_for_identical_attributes_only(vaultq):
    first = vaultq.json("queue", "create", "jobs", "--visibility-timeout", "60")
    again = vaultq.json("queue", "create", "jobs", "--visibility-timeout", "60")

    conflicting = vaultq("queue", "create", "jobs", "--visibility-timeout", "90")

    assert again == first
    assert_one_error_line(conflicting, "QueueNameExists")


def test_send_batch_prints_one_message_id_per_body(vaultq, queues):
    queues.create_queue("bulk")

    result = vaultq.json("queue", "send-batch", "bulk", "a", "b", "c")

    assert sorted(result["successful"]) == ["0", "1", "2"]
    assert result["failed"] == []
    received = queues.receive("bulk", max_messages=10)
    assert {m.message_id for m in received} == {
        sent["message_id"] for sent in result["successful"].values()
    }


def test_fifo_send_without_group_id_prints_one_error_line_and_exits_1(vaultq, queues):
    queues.create_queue("ledger.fifo", QueueAttributes(fifo=True, content_based_deduplication=True))

    run = vaultq("queue", "send", "ledger.fifo", "entry")

    assert_one_error_line(run, "MissingParameter")
    assert queues.stats("ledger.fifo").visible == 0


@pytest.mark.parametrize(
    "command",
    [
        ["queue", "stats", "nope"],
        ["queue", "send", "nope", "x"],
        ["dlq", "list", "nope"],
        ["dlq", "redrive", "nope"],
    ],
    ids=" ".join,
)
def test_an_unknown_queue_exits_1_with_queue_does_not_exist(vaultq, command):
    assert_one_error_line(vaultq(*command), "QueueDoesNotExist")


def test_usage_errors_exit_2(vaultq):
    run = vaultq("queue", "create", "half", "--dlq", "somewhere")

    assert run.exit_code == 2
    assert "--max-receive-count" in run.stderr


def test_purge_without_yes_refuses_when_stdin_is_not_a_terminal(vaultq, queues):
    queues.create_queue("keep")
    queues.send("keep", OutgoingMessage(body="precious"))

    run = vaultq("queue", "purge", "keep")

    assert_one_error_line(run, "MissingParameter")
    assert queues.stats("keep").visible == 1


def test_purge_with_yes_deletes_every_message(vaultq, queues):
    queues.create_queue("scratch")
    for body in ("a", "b"):
        queues.send("scratch", OutgoingMessage(body=body))

    assert vaultq.json("queue", "purge", "scratch", "--yes") == {"purged": 2}
    assert queues.stats("scratch").visible == 0


def test_delete_queue_with_yes_removes_it_from_the_list(vaultq, queues):
    queues.create_queue("gone")
    queues.create_queue("stays")

    vaultq.json("queue", "delete", "gone", "--yes")

    assert [q["name"] for q in vaultq.json("queue", "list")] == ["stays"]


def test_dlq_list_names_each_dead_letter_queue_with_depth_and_sources(vaultq, queues):
    dead_letter_one_message(queues)

    rows = vaultq.json("dlq", "list")

    assert [(r["name"], r["visible"], r["source_queues"]) for r in rows] == [
        ("work-dlq", 1, ["work"])
    ]


def test_receiving_past_max_receive_count_shows_the_message_in_dlq_list(vaultq):
    # Given a queue whose messages dead-letter after two receives
    vaultq.json("queue", "create", "work-dlq")
    vaultq.json("queue", "create", "work", "--dlq", "work-dlq", "--max-receive-count", "2")
    message_id = vaultq.json("queue", "send", "work", "poison")["message_id"]

    # When it is received twice without being deleted, and a third receive finds nothing
    for _ in range(2):
        vaultq.json("queue", "receive", "work", "--visibility-timeout", "0")
    assert vaultq.json("queue", "receive", "work") == []

    # Then dlq list shows it with its failure record, and leaves it visible
    [message] = vaultq.json("dlq", "list", "work-dlq")
    assert message["message_id"] == message_id
    assert message["body"] == "poison"
    record = message["dead_letter"]
    assert record["source_queue"] == "work"
    assert record["reason"] == "MAX_RECEIVE_COUNT_EXCEEDED"
    assert record["receive_count"] == 2
    assert vaultq.json("queue", "stats", "work-dlq")["visible"] == 1


def test_redrive_moves_dead_lettered_messages_back_with_a_fresh_receive_count(vaultq, queues):
    message_id = dead_letter_one_message(queues)

    assert vaultq.json("dlq", "redrive", "work-dlq") == {"moved": 1}

    [received] = queues.receive("work")
    assert received.message_id == message_id
    assert received.receive_count == 1
    assert queues.stats("work-dlq").visible == 0


def test_redrive_with_message_id_and_to_moves_only_that_message_there(vaultq, queues):
    message_id = dead_letter_one_message(queues)
    queues.send("work-dlq", OutgoingMessage(body="sent straight to the dlq"))
    queues.create_queue("inspect")

    moved = vaultq.json("dlq", "redrive", "work-dlq", "--to", "inspect", "--message-id", message_id)

    assert moved == {"moved": 1}
    assert [m.message_id for m in queues.receive("inspect")] == [message_id]
    assert queues.stats("work-dlq").visible == 1


@pytest.mark.parametrize("url", ["bogus", "postgres://db/vaultq", "sqlite:///x.db?fast=1"])
def test_an_invalid_vaultq_url_prints_one_error_line(vaultq, url):
    run = vaultq("queue", "list", VAULTQ_URL=url)

    assert_one_error_line(run, "InvalidSettings")


def test_url_option_overrides_vaultq_url(vaultq, tmp_path):
    other = tmp_path / "other.db"
    with contextlib.closing(open_queues(f"sqlite:///{other}")) as elsewhere:
        elsewhere.create_queue("elsewhere")

    run = vaultq("queue", "list", "--json", "--url", f"sqlite:///{other}", VAULTQ_URL="bogus")

    assert run.exit_code == 0, run.stderr
    assert [q["name"] for q in run.json()] == ["elsewhere"]
