"""``vaultq deploy``: templates that deploy an app on AWS."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vaultq.app import load_app
from vaultq.deploy.sam import DeployVariables, sam_template

__all__ = ["deploy_app"]

deploy_app = typer.Typer(help="Deploy an app on AWS.", no_args_is_help=True)
_err = Console(stderr=True, highlight=False)


@deploy_app.command("sam")
def sam(
    app_path: Annotated[
        str, typer.Argument(help="The app, as module:attribute.", show_default=False)
    ],
    *,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Write the template here; default: stdout.", show_default=False
        ),
    ] = None,
    code_uri: Annotated[
        str, typer.Option("--code-uri", help="The folder `sam build` packages for every function.")
    ] = ".",
    handler_variables: Annotated[
        list[str] | None,
        typer.Option(
            "--handler-variable",
            help="A setting every handler function gets from a NoEcho template parameter,"
            " e.g. VAULTQ_WORKER_KEYS (repeatable).",
            show_default=False,
        ),
    ] = None,
    api_variables: Annotated[
        list[str] | None,
        typer.Option(
            "--api-variable",
            help="A setting the API function gets from a NoEcho template parameter, e.g."
            " VAULTQ_WORKER_PUBLIC_KEY (repeatable).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write an AWS SAM template (JSON, which is valid as template.yaml) for an app: its
    queues and dead-letter queues, one function per handler, buckets, the job table, the
    app's alarms, and (for an app with job routes) its HTTP API behind API Gateway with the
    state table and an outbox drain; each function with its own least-privilege role."""
    # Like ``vaultq worker``: apps are found relative to where the command runs.
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    variables = DeployVariables(
        handlers=tuple(handler_variables or ()), api=tuple(api_variables or ())
    )
    template = sam_template(
        load_app(app_path), app_path=app_path, code_uri=code_uri, variables=variables
    )
    for note in template.notes:
        _err.out(f"note: {note}")
    if output is None:
        sys.stdout.write(template.to_json())
    else:
        output.write_text(template.to_json())
        _err.out(f"wrote {output}")
