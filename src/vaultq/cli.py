"""The ``vaultq`` command line: queues and dead-letter queues on the backend ``VAULTQ_URL`` names.

Every command takes ``--json`` (machine-readable output) and ``--url`` (overrides
``VAULTQ_URL``). A vaultq error prints one line, ``error: <code>: <message>``, on stderr and
exits with 1; usage errors exit with 2.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import logging
import os
import signal
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vaultq import errors
from vaultq.app import load_app
from vaultq.bench import bench_app
from vaultq.client import (
    UPLOAD_PREFIX,
    encode_text,
    read_vector_key,
    split_uploads,
    upload_messages,
)
from vaultq.deploy.commands import deploy_app
from vaultq.privacy.keys import Kem, generate_worker_key, public_key_from_base64
from vaultq.queues.protocol import (
    MessageAttribute,
    OutgoingMessage,
    QueueAttributes,
    QueueBackend,
    RedrivePolicy,
    SendEntry,
)
from vaultq.runtime.worker import Worker
from vaultq.vectors.protocol import validate_id
from vaultq.wiring import (
    data_dir,
    load_settings,
    open_blobs,
    open_jobs,
    open_metrics,
    open_queues,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from vaultq.blobs.notifications import QueueNotifier
    from vaultq.blobs.protocol import BlobStore
    from vaultq.jobs.protocol import JobStore
    from vaultq.observe.alarms import AlarmStore, AlarmTransition
    from vaultq.privacy.rewrap import RewrapSummary
    from vaultq.queues.protocol import DeadLetterRecord, QueueStats, ReceivedMessage

app = typer.Typer(
    name="vaultq",
    help="SQS queues with dead-letter queues, embedded on SQLite by default.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
queue_app = typer.Typer(help="Create, use and inspect queues.", no_args_is_help=True)
dlq_app = typer.Typer(
    help="Inspect dead-letter queues and move their messages back.", no_args_is_help=True
)
app.add_typer(queue_app, name="queue")
app.add_typer(dlq_app, name="dlq")
app.add_typer(bench_app, name="bench")
app.add_typer(deploy_app, name="deploy")

AppPath = Annotated[str, typer.Argument(help="The app, as module:attribute.", show_default=False)]

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)
_DEFAULTS = QueueAttributes()
_LABEL_WIDTH = len("receives before move") + 2  # the longest label, then a gap

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")
]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", metavar="URL", help="Backend URL; overrides VAULTQ_URL.", show_default=False
    ),
]
QueueName = Annotated[str, typer.Argument(help="Queue name.", show_default=False)]


def main() -> None:
    """Run the command line; vaultq errors become one line on stderr and exit code 1."""
    try:
        app(prog_name="vaultq")
    except errors.VaultqError as exc:
        message = " ".join(exc.message.splitlines())
        _err.out(f"error: {exc.code}: {message}")
        sys.exit(1)


# -- queue ------------------------------------------------------------------------------------


@queue_app.command("create")
def create_queue(
    name: Annotated[str, typer.Argument(help="Queue name; a FIFO queue's ends with .fifo.")],
    *,
    fifo: Annotated[bool, typer.Option("--fifo", help="Create a FIFO queue.")] = False,
    content_based_dedup: Annotated[
        bool,
        typer.Option("--content-based-dedup", help="FIFO only: deduplicate on a hash of the body."),
    ] = False,
    visibility_timeout_seconds: Annotated[
        int,
        typer.Option(
            "--visibility-timeout", metavar="SECONDS", help="How long a receive hides a message."
        ),
    ] = _DEFAULTS.visibility_timeout_seconds,
    retention_seconds: Annotated[
        int, typer.Option("--retention", metavar="SECONDS", help="How long a message is kept.")
    ] = _DEFAULTS.message_retention_seconds,
    delay_seconds: Annotated[
        int, typer.Option("--delay", metavar="SECONDS", help="Delay before a new message shows.")
    ] = _DEFAULTS.delay_seconds,
    max_message_size_bytes: Annotated[
        int, typer.Option("--max-message-size", metavar="BYTES", help="Largest message accepted.")
    ] = _DEFAULTS.maximum_message_size_bytes,
    receive_wait_seconds: Annotated[
        int,
        typer.Option(
            "--receive-wait", metavar="SECONDS", help="Default long-poll wait of a receive."
        ),
    ] = _DEFAULTS.receive_wait_time_seconds,
    dlq: Annotated[
        str | None,
        typer.Option(
            "--dlq", metavar="NAME", help="Dead-letter queue (must exist).", show_default=False
        ),
    ] = None,
    max_receive_count: Annotated[
        int | None,
        typer.Option(
            "--max-receive-count",
            metavar="N",
            help="Receives before a message moves to the --dlq queue.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Create a queue; running it again with the same settings changes nothing."""
    attributes = QueueAttributes(
        fifo=fifo,
        content_based_deduplication=content_based_dedup,
        visibility_timeout_seconds=visibility_timeout_seconds,
        message_retention_seconds=retention_seconds,
        delay_seconds=delay_seconds,
        maximum_message_size_bytes=max_message_size_bytes,
        receive_wait_time_seconds=receive_wait_seconds,
        redrive_policy=_redrive_policy(dlq, max_receive_count),
    )
    with _queues(url) as queues:
        info = queues.create_queue(name, attributes)
    if as_json:
        _emit_json(asdict(info))
    else:
        _out.out(info.name)


@queue_app.command("list")
def list_queues(
    *,
    prefix: Annotated[
        str, typer.Option(metavar="PREFIX", help="Only names starting with this.")
    ] = "",
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """List queues with their type, depth and dead-letter queue."""
    with _queues(url) as queues:
        rows = [row for name in queues.list_queues(prefix) if (row := _queue_row(queues, name))]
    if as_json:
        _emit_json(rows)
        return
    table = Table("queue", "type", "visible", "in flight", "delayed", "dead-letter queue")
    for row in rows:
        table.add_row(
            Text(row["name"]),
            "FIFO" if row["fifo"] else "standard",
            str(row["visible"]),
            str(row["in_flight"]),
            str(row["delayed"]),
            Text(row["dead_letter_queue"] or "-"),
        )
    _out.print(table)


@queue_app.command("send")
def send(
    name: QueueName,
    body: Annotated[
        str,
        typer.Argument(help="Message body, sent as is; - reads it from stdin."),
    ],
    *,
    group_id: Annotated[
        str | None,
        typer.Option("--group-id", metavar="G", help="Message group (required on FIFO queues)."),
    ] = None,
    dedup_id: Annotated[
        str | None,
        typer.Option("--dedup-id", metavar="D", help="FIFO deduplication id."),
    ] = None,
    delay_seconds: Annotated[
        int | None,
        typer.Option("--delay", metavar="SECONDS", help="Per-message delay (standard queues)."),
    ] = None,
    attribute: Annotated[
        list[str] | None,
        typer.Option(
            "--attribute",
            metavar="NAME=TYPE:VALUE",
            help="Message attribute; TYPE is String, Number or Binary (base64 value). Repeatable.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Send one message; prints its message id."""
    message = OutgoingMessage(
        body=_read_stdin() if body == "-" else body,
        attributes=_parse_attributes(attribute or []),
        delay_seconds=delay_seconds,
        group_id=group_id,
        deduplication_id=dedup_id,
    )
    with _queues(url) as queues:
        result = queues.send(name, message)
    if as_json:
        _emit_json(asdict(result))
    else:
        _out.out(result.message_id)


@queue_app.command("send-batch")
def send_batch(
    name: QueueName,
    bodies: Annotated[list[str], typer.Argument(help="One to ten message bodies.")],
    *,
    group_id: Annotated[
        str | None,
        typer.Option("--group-id", metavar="G", help="Message group of every entry (FIFO)."),
    ] = None,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Send up to ten messages in one batch; an invalid entry fails alone (exit code 1)."""
    entries = [
        SendEntry(id=str(index), message=OutgoingMessage(body=body, group_id=group_id))
        for index, body in enumerate(bodies)
    ]
    with _queues(url) as queues:
        result = queues.send_batch(name, entries)
    if as_json:
        _emit_json(asdict(result))
    elif result.successful:
        table = Table("entry", "message id")
        for entry_id, sent in result.successful.items():
            table.add_row(entry_id, sent.message_id)
        _out.print(table)
    for failure in result.failed:
        _err.out(f"error: {failure.code}: entry {failure.id}: {failure.message}")
    if result.failed:
        raise typer.Exit(code=1)


@queue_app.command("receive")
def receive(
    name: QueueName,
    *,
    max_messages: Annotated[
        int, typer.Option("--max", metavar="N", help="Receive up to N messages (1-10).")
    ] = 1,
    wait_seconds: Annotated[
        int | None,
        typer.Option(
            "--wait", metavar="SECONDS", help="Long-poll up to this long (default: the queue's)."
        ),
    ] = None,
    visibility_timeout_seconds: Annotated[
        int | None,
        typer.Option(
            "--visibility-timeout",
            metavar="SECONDS",
            help="Hide received messages this long (default: the queue's).",
        ),
    ] = None,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Receive messages; delete each with its receipt handle once handled."""
    with _queues(url) as queues:
        messages = queues.receive(
            name,
            max_messages=max_messages,
            wait_seconds=wait_seconds,
            visibility_timeout_seconds=visibility_timeout_seconds,
        )
    _show_messages(messages, as_json=as_json)


@queue_app.command("delete-message")
def delete_message(
    name: QueueName,
    receipt_handle: Annotated[str, typer.Argument(help="Handle from the latest receive.")],
    *,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Delete a received message."""
    with _queues(url) as queues:
        queues.delete(name, receipt_handle)
    if as_json:
        _emit_json({"deleted": True})


@queue_app.command("purge")
def purge(
    name: QueueName,
    *,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Delete every message in a queue. Asks first unless --yes; without a terminal, needs --yes."""
    with _queues(url) as queues:
        _confirm(f"Purge all {_depth(queues.stats(name))} messages from {name}?", yes=yes)
        purged = queues.purge(name)
    if as_json:
        _emit_json({"purged": purged})
    else:
        _out.out(f"purged {_messages(purged)}")


@queue_app.command("stats")
def stats(name: QueueName, *, as_json: JsonFlag = False, url: UrlOption = None) -> None:
    """Show how many messages are visible, in flight and delayed."""
    with _queues(url) as queues:
        current = queues.stats(name)
    if as_json:
        _emit_json(asdict(current))
        return
    table = Table("visible", "in flight", "delayed", "oldest message age (s)", title=name)
    table.add_row(
        str(current.visible),
        str(current.in_flight),
        str(current.delayed),
        str(current.oldest_message_age_seconds),
    )
    _out.print(table)


@queue_app.command("delete")
def delete_queue(
    name: QueueName,
    *,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Delete a queue and its messages. Asks first unless --yes; without a terminal, needs --yes."""
    with _queues(url) as queues:
        _confirm(f"Delete queue {name} and its {_depth(queues.stats(name))} messages?", yes=yes)
        queues.delete_queue(name)
    if as_json:
        _emit_json({"deleted": True})


# -- dlq --------------------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    name: Annotated[
        str | None,
        typer.Argument(
            help="A dead-letter queue whose messages to show; omit to list dead-letter queues.",
            show_default=False,
        ),
    ] = None,
    *,
    max_messages: Annotated[
        int, typer.Option("--max", metavar="N", help="With NAME: show up to N messages (1-10).")
    ] = 10,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """List dead-letter queues, or with NAME the messages in one and why each failed.

    With NAME this receives messages with visibility timeout 0, like the AWS console's
    "poll for messages": each one stays visible, but its receive count goes up by one.
    """
    with _queues(url) as queues:
        if name is not None:
            messages = queues.receive(
                name, max_messages=max_messages, wait_seconds=0, visibility_timeout_seconds=0
            )
            _show_messages(messages, as_json=as_json)
            return
        rows = _dead_letter_queue_rows(queues)
    if as_json:
        _emit_json(rows)
        return
    table = Table("dead-letter queue", "visible", "in flight", "delayed", "source queues")
    for row in rows:
        table.add_row(
            Text(row["name"]),
            str(row["visible"]),
            str(row["in_flight"]),
            str(row["delayed"]),
            Text(", ".join(row["source_queues"])),
        )
    _out.print(table)


@dlq_app.command("redrive")
def dlq_redrive(
    name: Annotated[str, typer.Argument(help="The dead-letter queue.")],
    *,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", metavar="QUEUE", help="Move here instead of each message's source queue."
        ),
    ] = None,
    message_ids: Annotated[
        list[str] | None,
        typer.Option("--message-id", metavar="ID", help="Only this message; repeatable."),
    ] = None,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Move dead-lettered messages back to their source queues (or --to); counts restart."""
    with _queues(url) as queues:
        moved = queues.redrive(name, destination=to, message_ids=message_ids or None)
    if as_json:
        _emit_json({"moved": moved})
    else:
        _out.out(f"moved {_messages(moved)}")


# -- alarms -----------------------------------------------------------------------------------

alarms_app = typer.Typer(
    help="Alarm states and history, as `vaultq up` evaluated them.", no_args_is_help=True
)
app.add_typer(alarms_app, name="alarms")
_STATE_STYLES = {"OK": "green", "ALARM": "bold red", "INSUFFICIENT_DATA": "yellow"}


@alarms_app.command("list")
def alarms_list(*, as_json: JsonFlag = False, url: UrlOption = None) -> None:
    """List every evaluated alarm: its state, since when, and why."""
    with _alarm_store(url) as store:
        rows = [_transition_row(entry) for entry in store.latest().values()]
    if as_json:
        _emit_json(rows)
        return
    table = Table("alarm", "state", "since", "reason")
    for row in rows:
        table.add_row(Text(row["alarm"]), _state_text(row["state"]), row["at"], Text(row["reason"]))
    _out.print(table)


@alarms_app.command("history")
def alarms_history(
    name: Annotated[str, typer.Argument(help="The alarm.", show_default=False)],
    *,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", help="Show the latest N changes (1-1000).")
    ] = 20,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Show an alarm's changes of state, newest first."""
    with _alarm_store(url) as store:
        rows = [_transition_row(entry) for entry in store.history(name, limit=limit)]
    if not rows:
        raise errors.AlarmNotFound(f"no alarm named {name!r} has been evaluated")
    if as_json:
        _emit_json(rows)
        return
    table = Table("at", "from", "to", "reason", title=name)
    for row in rows:
        old = row["old_state"]
        table.add_row(
            row["at"], _state_text(old) if old else "-", _state_text(row["state"]), row["reason"]
        )
    _out.print(table)


@contextlib.contextmanager
def _alarm_store(url: str | None) -> Iterator[AlarmStore]:
    from vaultq.wiring import open_alarms  # noqa: PLC0415 - kept beside the commands using it

    store = open_alarms(url)
    try:
        yield store
    finally:
        store.close()


def _transition_row(entry: AlarmTransition) -> dict[str, Any]:
    at = datetime.fromtimestamp(entry.at_ms / 1000, tz=UTC).isoformat(timespec="seconds")
    return {
        "alarm": entry.alarm,
        "state": entry.new_state.value,
        "old_state": None if entry.old_state is None else entry.old_state.value,
        "reason": entry.reason,
        "value": entry.value,
        "at": at,
        "at_ms": entry.at_ms,
    }


def _state_text(state: str) -> Text:
    return Text(state, style=_STATE_STYLES.get(state, ""))


# -- worker -----------------------------------------------------------------------------------


@app.command("worker")
def worker(
    app_path: AppPath,
    *,
    handler: Annotated[
        list[str] | None,
        typer.Option("--handler", help="Run only this handler (repeatable); default: all."),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Run an app's handlers: poll their queues and invoke them, until SIGTERM or Ctrl-C.

    On a stop, polling ends, batches already running finish (or time out) and messages
    received but not started become visible again.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Like uvicorn and celery: apps are found relative to where the command runs.
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    target = load_app(app_path)
    unknown = set(handler or ()) - set(target.handlers)
    if unknown:
        raise errors.InvalidParameterValue(f"no handler named {', '.join(sorted(unknown))}")
    with _queues(url) as queues:
        target.provision(queues)
        running = Worker(
            target,
            app_path=app_path,
            queues=queues,
            handlers=handler,
            job_store_factory=functools.partial(open_jobs, url, durable_updates=False),
            metrics_factory=functools.partial(open_metrics, url),
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: running.stop())
        _err.out(f"vaultq worker: {len(handler or target.handlers)} handler(s) of {app_path}")
        running.run()


# -- up and token -----------------------------------------------------------------------------


@app.command("up")
def up(
    app_path: Annotated[
        str, typer.Argument(help="The app, as module:attribute.")
    ] = "vaultq.demo:app",
    *,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=0, max=64, help="Worker processes.")] = 2,
) -> None:
    """Serve an app's HTTP API and run its workers, until Ctrl-C or SIGTERM."""
    from vaultq.api.server import serve  # noqa: PLC0415 - the server's imports are heavy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    serve(
        app_path, host=host, port=port, workers=workers, settings=load_settings(), announce=_err.out
    )


@app.command("token")
def token(
    *,
    tenant: Annotated[str, typer.Option(help="The tenant the token acts for.")],
    role: Annotated[list[str], typer.Option(help="producer, consumer or admin (repeatable).")],
    subject: Annotated[str, typer.Option(help="Who the token is for.")] = "vaultq-dev",
    expires_in: Annotated[int, typer.Option(min=60, help="Lifetime in seconds.")] = 3600,
    url: UrlOption = None,
) -> None:
    """Mint a development token (HS256) that this machine's `vaultq up` accepts; prints it
    alone on stdout."""
    from vaultq.api.auth import mint_token  # noqa: PLC0415
    from vaultq.api.server import auth_settings  # noqa: PLC0415

    settings, _ = auth_settings(url)
    if settings.hs256_secret is None:
        raise errors.InvalidSettings("minting needs VAULTQ_AUTH_HS256_SECRET (or no auth keys)")
    _out.out(
        mint_token(
            secret=settings.hs256_secret,
            tenant=tenant,
            roles=role,
            subject=subject,
            expires_in_seconds=expires_in,
            issuer=settings.issuer,
            audience=settings.audience,
        ),
        highlight=False,
    )


# -- private data -------------------------------------------------------------------------------

keys_app = typer.Typer(help="Worker and tenant vector keys for private data.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
_PUBLIC_KEY_HELP = "The workers' public key (base64, x25519 or mlkem768-x25519)."


@keys_app.command("generate")
def generate_keys(
    private_key_file: Annotated[
        Path, typer.Argument(help="Where to write the private key (created, mode 0600).")
    ],
    *,
    kem: Annotated[
        Kem,
        typer.Option(
            help="The key's HPKE KEM: classic x25519, or the hybrid post-quantum "
            "mlkem768-x25519 (ML-KEM-768 + X25519)."
        ),
    ] = Kem.X25519,
) -> None:
    """Make a worker key pair: the private key goes to a new file as `<kem>:<base64>` (add
    its line to the workers' VAULTQ_WORKER_KEYS, which may hold keys of both KEMs); the key
    id, KEM and public key are printed as JSON."""
    key = generate_worker_key(kem=kem)
    try:
        descriptor = os.open(private_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise errors.InvalidParameterValue(
            f"cannot create {private_key_file}: {exc.strerror}"
        ) from None
    with os.fdopen(descriptor, "w") as file:
        file.write(f"{key.kem}:{base64.b64encode(key.private_key).decode()}\n")
    _emit_json(
        {
            "key_id": key.key_id,
            "kem": str(key.kem),
            "public_key": base64.b64encode(key.public_key).decode(),
        }
    )


@keys_app.command("vector")
def vector_key(
    vector_key_file: Annotated[
        Path, typer.Argument(help="Where to write the tenant's vector key (created, mode 0600).")
    ],
) -> None:
    """Make a tenant vector key: 32 random bytes that seal the tenant's vectors. Only the
    client keeps it (give it to `vaultq embed --vector-key`); each job carries it wrapped
    to the workers for that job alone."""
    from vaultq.client import new_vector_key_file  # noqa: PLC0415

    new_vector_key_file(vector_key_file)


@keys_app.command("wrap-vector")
def wrap_vector(
    vector_key_file: Annotated[Path, typer.Argument(help="The tenant's vector key file.")],
    *,
    public_key: Annotated[str, typer.Option(help=_PUBLIC_KEY_HELP)],
    tenant: Annotated[str, typer.Option(help="The tenant the key belongs to.")],
) -> None:
    """Print the tenant's vector key wrapped to the workers for this tenant and a new request
    id, as the `vector_key` of a generate or search request (JSON). It is bound to that tenant
    and request id, not to one request: every request of the tenant that sends it opens it,
    so wrap a new one per request to keep each grant to one request."""
    from vaultq.client import read_vector_key, wrap_vector_key_for  # noqa: PLC0415
    from vaultq.privacy.zeroise import wiping  # noqa: PLC0415

    with wiping(read_vector_key(vector_key_file)) as tenant_key:
        wrapped = wrap_vector_key_for(
            tenant_key, public_key=public_key_from_base64(public_key), tenant=tenant
        )
    _emit_json(wrapped.as_json())


@keys_app.command("rewrap")
def rewrap_keys(
    *,
    bucket: Annotated[str, typer.Option(help="The bucket that holds the uploads.")],
    public_key_file: Annotated[
        Path,
        typer.Option(
            "--to",
            metavar="PUBLIC_KEY_FILE",
            help="The new worker public key: its base64, or `vaultq keys generate`'s JSON.",
        ),
    ],
    prefix: Annotated[
        str, typer.Option(help="Only objects whose keys start with this.")
    ] = UPLOAD_PREFIX,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Open and count every upload; write nothing.")
    ] = False,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Wrap every stored upload's keys to a new worker public key, so that the old worker key
    can leave VAULTQ_WORKER_KEYS: run it where VAULTQ_WORKER_KEYS still holds the old key.
    Sealed texts are not touched, and a second run changes nothing. Objects that are not
    uploads or do not open are listed and left as they are, and the exit code is 1; an error
    that stops the run exits with 2."""
    from vaultq.privacy.keys import KeyRing  # noqa: PLC0415
    from vaultq.privacy.rewrap import rewrap_uploads  # noqa: PLC0415

    try:
        public_key = _read_public_key(public_key_file)
        key_ring = KeyRing.from_env()
        blobs = open_blobs(url)
        try:
            summary = rewrap_uploads(
                blobs,
                bucket,
                key_ring=key_ring,
                public_key=public_key,
                prefix=prefix,
                dry_run=dry_run,
            )
        finally:
            blobs.close()
    except errors.VaultqError as exc:
        _err.out(f"error: {exc.code}: {' '.join(exc.message.splitlines())}")
        raise typer.Exit(code=2) from None
    _show_rewrap(summary, as_json=as_json)
    if summary.failures:
        raise typer.Exit(code=1)


def _read_public_key(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise errors.InvalidParameterValue(f"cannot read the public key file {path}") from None
    if text.startswith("{"):
        try:
            text = str(json.loads(text)["public_key"])
        except (ValueError, KeyError, TypeError):
            raise errors.InvalidParameterValue(
                f"{path} is JSON without a public_key field"
            ) from None
    return public_key_from_base64(text)


def _show_rewrap(summary: RewrapSummary, *, as_json: bool) -> None:
    if as_json:
        _emit_json({**asdict(summary), "failed": summary.failed})
        return
    title = f"re-wrap to worker key {summary.target_key_id}"
    table = Table(
        "scanned",
        "would re-wrap" if summary.dry_run else "re-wrapped",
        "already current",
        "failed",
        title=f"{title} (dry run)" if summary.dry_run else title,
    )
    counts = (summary.scanned, summary.rewrapped, summary.current, summary.failed)
    table.add_row(*map(str, counts))
    _out.print(table)
    if summary.failures:
        failures = Table("object", "reason", title="left as they are")
        for failure in summary.failures:
            failures.add_row(Text(failure.key), failure.reason)
        _out.print(failures)


@app.command("embed")
def embed(
    messages_file: Annotated[
        Path,
        typer.Argument(
            help='JSON lines, each {"id": "...", "text": "..."} and no other field; blank '
            "lines are skipped; - reads stdin.",
            show_default=False,
        ),
    ],
    *,
    public_key: Annotated[str, typer.Option(help=_PUBLIC_KEY_HELP)],
    tenant: Annotated[str, typer.Option(help="The tenant the messages belong to.")],
    vector_key_file: Annotated[
        Path,
        typer.Option("--vector-key", help="The tenant's vector key file (vaultq keys vector)."),
    ],
    app_path: Annotated[
        str,
        typer.Option(
            "--app",
            help="On the embedded store, the app whose bucket notifications bring the upload "
            "to its workers (on AWS, S3 sends them and the app is not imported).",
        ),
    ] = "examples.private_embeddings.app:app",
    bucket: Annotated[str, typer.Option(help="The bucket to upload into.")] = "messages",
    client: Annotated[
        str | None,
        typer.Option(help="Track each upload as a job of this client (e.g. your token's subject)."),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Encrypt messages on this machine and upload them into the bucket of the store that
    VAULTQ_URL names, which `vaultq up` must have created: one job per 10,000 messages (or
    64 MiB), one JSON line per job. Texts never leave this process unencrypted. With
    --client, GET /jobs/{job_id} shows a job's progress. An error prints one line and exits
    with 2; the input is checked whole before anything is uploaded."""
    from vaultq.privacy.zeroise import wiping  # noqa: PLC0415

    try:
        messages = _read_messages(messages_file)
        worker_key = public_key_from_base64(public_key)
        store_url = url or load_settings().url
        with (
            wiping(read_vector_key(vector_key_file)) as tenant_key,
            _upload_target(store_url, app_path, bucket, tracked=client is not None) as target,
        ):
            blobs, jobs = target
            for run in split_uploads(messages):
                receipt = upload_messages(
                    blobs,
                    run,
                    bucket=bucket,
                    tenant=tenant,
                    public_key=worker_key,
                    vector_key=tenant_key,
                    jobs=jobs,
                    client_id=client,
                )
                line = {
                    "job_id": receipt.job_id,
                    "messages": receipt.message_count,
                    "object_key": receipt.object_key,
                }
                _out.out(json.dumps(line, separators=(",", ":")))
    except errors.VaultqError as exc:
        _err.out(f"error: {exc.code}: {' '.join(exc.message.splitlines())}")
        raise typer.Exit(code=2) from None


def _read_messages(path: Path) -> list[tuple[str, str]]:
    """Every message of a JSON-lines file, all checked; errors name the line and the field,
    never a text."""
    messages: list[tuple[str, str]] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(_read_input(path).split(b"\n"), 1):
        if not line.strip():
            continue
        message_id, text = _message_line(number, line)
        if message_id in first_line:
            raise errors.InvalidParameterValue(
                f"line {number}: id {message_id} is on line {first_line[message_id]} too"
            )
        first_line[message_id] = number
        messages.append((message_id, text))
    if not messages:
        source = "stdin" if str(path) == "-" else str(path)
        raise errors.InvalidParameterValue(f"{source} holds no messages")
    return messages


def _read_input(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise errors.InvalidParameterValue(f"cannot read {path}: {exc.strerror}") from None


def _message_line(number: int, line: bytes) -> tuple[str, str]:
    try:
        entry = json.loads(line.decode(), object_pairs_hook=functools.partial(_fields, number))
    except UnicodeDecodeError:
        raise errors.InvalidParameterValue(f"line {number} is not UTF-8") from None
    except (ValueError, RecursionError):
        raise errors.InvalidParameterValue(f"line {number} is not JSON") from None
    if not isinstance(entry, dict):
        raise errors.InvalidParameterValue(f'line {number} is not a JSON object {{"id", "text"}}')
    if set(entry) != {"id", "text"}:
        # Field names are not shown: a malformed line may hold its text in one.
        raise errors.InvalidParameterValue(
            f"line {number} must have exactly the fields id and text"
        )
    try:
        message_id = validate_id("id", entry["id"])
    except errors.InvalidParameterValue:
        raise errors.InvalidParameterValue(
            f"line {number}: id must be a string of 1-128 of A-Z a-z 0-9 _ . : -"
        ) from None
    encode_text(entry["text"], where=f"line {number}: text")
    return message_id, entry["text"]


def _fields(number: int, pairs: list[tuple[str, object]]) -> dict[str, object]:
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise errors.InvalidParameterValue(f"line {number} names a field twice")
    return fields


@contextlib.contextmanager
def _upload_target(
    url: str, app_path: str, bucket: str, *, tracked: bool
) -> Iterator[tuple[BlobStore, JobStore | None]]:
    """The store's bucket and jobs, which embed never creates: a store or bucket that no
    server reads would take the upload, and nothing would ever embed it."""
    embedded = urlsplit(url).scheme == "sqlite"
    if embedded and not _database_path(url).is_file():
        raise errors.NoSuchBucket(
            f"no vaultq store at {_database_path(url)} (VAULTQ_URL {url}, "
            f"from {Path.cwd()}): run embed where `vaultq up` runs, or name its store "
            "with VAULTQ_URL or --url"
        )
    with _queues(url) as queues:
        notifier = _bucket_notifier(app_path, bucket, queues) if embedded else None
        blobs = open_blobs(url, notifier=notifier)
        jobs: JobStore | None = None
        try:
            # On S3 the put itself answers NoSuchBucket: listing every bucket of the account
            # would need a right an uploader should not have (s3:ListAllMyBuckets).
            if embedded and bucket not in {each.name for each in blobs.list_buckets()}:
                raise errors.NoSuchBucket(
                    f"no bucket {bucket} in the store of VAULTQ_URL {url}: `vaultq up APP` "
                    "creates the buckets and queues of its app"
                )
            jobs = open_jobs(url) if tracked else None
            yield blobs, jobs
        finally:
            blobs.close()
            if jobs is not None:
                jobs.close()


def _database_path(url: str) -> Path:
    return (data_dir(url) / PurePosixPath(urlsplit(url).path).name).absolute()


def _bucket_notifier(app_path: str, bucket: str, queues: QueueBackend) -> QueueNotifier:
    """The embedded blob store sends the bucket's S3 events itself, as the app declares
    them; the queues they go to must exist already."""
    # Like `vaultq worker`: apps are found relative to where the command runs.
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        target = load_app(app_path)
    except errors.InvalidParameterValue as exc:
        raise errors.InvalidParameterValue(
            f"{exc.message}: on the embedded store, embed needs the app that declares bucket "
            f"{bucket}; run it from the directory that holds the app, or name it with --app"
        ) from None
    if bucket not in target.buckets:
        raise errors.NoSuchBucket(f"the app {app_path} declares no bucket {bucket}")
    for notification in target.buckets[bucket]:
        try:
            queues.get_queue(notification.queue)
        except errors.QueueDoesNotExist:
            raise errors.QueueDoesNotExist(
                f"bucket {bucket} notifies queue {notification.queue}, which does not exist: "
                f"`vaultq up {app_path}` creates it"
            ) from None
    return target.notifier(queues)


# -- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _queues(url: str | None) -> Iterator[QueueBackend]:
    backend = open_queues(url)
    try:
        yield backend
    finally:
        backend.close()


def _emit_json(data: object) -> None:
    _out.out(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default))


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _read_stdin() -> str:
    try:
        return sys.stdin.read()
    except UnicodeDecodeError:
        raise errors.InvalidMessageContents("stdin is not valid UTF-8 text") from None


def _redrive_policy(dlq: str | None, max_receive_count: int | None) -> RedrivePolicy | None:
    if dlq is None and max_receive_count is None:
        return None
    if dlq is None or max_receive_count is None:
        raise typer.BadParameter("--dlq and --max-receive-count go together")
    return RedrivePolicy(dead_letter_queue=dlq, max_receive_count=max_receive_count)


def _parse_attributes(specs: Sequence[str]) -> dict[str, MessageAttribute]:
    parsed: dict[str, MessageAttribute] = {}
    for spec in specs:
        name, equals, typed = spec.partition("=")
        data_type, colon, value = typed.partition(":")
        if not (name and equals and colon):
            raise typer.BadParameter("expected NAME=TYPE:VALUE", param_hint="--attribute")
        if name in parsed:
            raise typer.BadParameter(f"{name!r} is given twice", param_hint="--attribute")
        parsed[name] = MessageAttribute(
            data_type=data_type, value=_attribute_value(data_type, value)
        )
    return parsed


def _attribute_value(data_type: str, value: str) -> str | bytes:
    if not data_type.startswith("Binary"):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise typer.BadParameter("a Binary value is base64", param_hint="--attribute") from None


def _confirm(question: str, *, yes: bool) -> None:
    if yes:
        return
    if sys.stdin is None or not sys.stdin.isatty():
        raise errors.MissingParameter("give --yes to confirm when stdin is not a terminal")
    typer.confirm(question, abort=True, err=True)


def _messages(count: int) -> str:
    return f"{count} message" if count == 1 else f"{count} messages"


def _depth(current: QueueStats) -> int:
    return current.visible + current.in_flight + current.delayed


def _queue_row(queues: QueueBackend, name: str) -> dict[str, Any] | None:
    """One line of ``queue list``, or None if the queue was deleted while listing."""
    try:
        info = queues.get_queue(name)
        current = queues.stats(name)
    except errors.QueueDoesNotExist:
        return None
    policy = info.attributes.redrive_policy
    return {
        "name": name,
        "fifo": info.attributes.fifo,
        **asdict(current),
        "dead_letter_queue": None if policy is None else policy.dead_letter_queue,
        "max_receive_count": None if policy is None else policy.max_receive_count,
    }


def _dead_letter_queue_rows(queues: QueueBackend) -> list[dict[str, Any]]:
    sources: dict[str, list[str]] = {}
    for row in filter(None, (_queue_row(queues, name) for name in queues.list_queues())):
        if row["dead_letter_queue"] is not None:
            sources.setdefault(row["dead_letter_queue"], []).append(row["name"])
    rows = []
    for name in sorted(sources):
        with contextlib.suppress(errors.QueueDoesNotExist):
            rows.append(
                {"name": name, **asdict(queues.stats(name)), "source_queues": sources[name]}
            )
    return rows


def _show_messages(messages: Sequence[ReceivedMessage], *, as_json: bool) -> None:
    if as_json:
        _emit_json([asdict(message) for message in messages])
        return
    if not messages:
        _err.out("no messages")
    for index, message in enumerate(messages):
        if index:
            _out.out("")
        for label, value in _message_fields(message):
            # soft_wrap keeps ids and handles on one line, so they can be copied whole.
            indented = value.replace("\n", "\n" + " " * _LABEL_WIDTH)
            line = Text.assemble((label.ljust(_LABEL_WIDTH), "bold"), indented)
            _out.print(line, soft_wrap=True)


def _message_fields(message: ReceivedMessage) -> list[tuple[str, str]]:
    fields = [
        ("message id", message.message_id),
        ("receive count", str(message.receive_count)),
        ("receipt handle", message.receipt_handle),
    ]
    if message.group_id is not None:
        fields.append(("group id", message.group_id))
    if message.dead_letter is not None:
        fields.extend(_dead_letter_fields(message.dead_letter))
    fields.append(("body", message.body))
    return fields


def _dead_letter_fields(record: DeadLetterRecord) -> list[tuple[str, str]]:
    moved_at = datetime.fromtimestamp(record.moved_at_ms / 1000, tz=UTC)
    return [
        ("source queue", record.source_queue),
        ("reason", record.reason),
        ("receives before move", str(record.receive_count)),
        ("last error", record.last_error or "-"),
        ("moved at", moved_at.isoformat(timespec="seconds")),
    ]


if __name__ == "__main__":
    main()
