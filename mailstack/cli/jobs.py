"""`jobs run|list`: the host's part of the admin service's work (the host job queue)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.errors import EXIT_FAILED
from mailstack.runtime import jobqueue, jobs
from mailstack.stack.stackdir import Stack

jobs_app = typer.Typer(
    help="Host jobs the admin service queued (a new domain's DKIM key); its timer runs them.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")


@jobs_app.command("run")
@output.guarded
def jobs_run(
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Take failed jobs again (after a fix).")
    ] = False,
    directory_: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Run every pending host job; exit 1 if one failed (each is recorded with its reason)."""
    stack = Stack.load(directory_)
    result = jobs.run_jobs(stack, retry_failed=retry_failed)
    output.as_json(result) if as_json else output.info(str(result))
    if result.failed:
        raise typer.Exit(EXIT_FAILED)


@jobs_app.command("list")
@output.guarded
def jobs_list(directory_: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """The latest host jobs: what, for whom, and how each ended."""
    stack = Stack.load(directory_)
    found = jobqueue.list_jobs(stack.compose)
    if not found and not as_json:
        output.info("no host jobs yet")
        return
    output.listing(found, as_json)
