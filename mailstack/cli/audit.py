"""`audit list`: the audit log of changes to the directory and the admin tables."""

from __future__ import annotations

import datetime
import os
import pwd
from pathlib import Path
from typing import Annotated

import typer

from mailstack.adapters import psql
from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.errors import UsageError
from mailstack.identity import audit
from mailstack.stack.stackdir import Stack
from mailstack.units import parse_duration

audit_app = typer.Typer(
    help="The audit log: who changed what in the directory and the admin tables, and when.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


def host_actor() -> psql.Actor:
    """Who runs the CLI: cli:<the effective user> from host (cli:uid<N> for a user without
    a usable name); cli/main.py sets it for every command."""
    uid = os.geteuid()
    try:
        return psql.Actor(f"cli:{pwd.getpwuid(uid).pw_name}", "host")
    except (KeyError, UsageError):
        return psql.Actor(f"cli:uid{uid}", "host")


@audit_app.command("list")
@output.guarded
def audit_list(
    since: Annotated[
        str | None,
        typer.Option(
            "--since", metavar="DURATION", help="Only the last DURATION, e.g. 7d, 12h, 30m."
        ),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(
            "--actor",
            metavar="ACTOR",
            help="Only this actor (e.g. cli:root, admin:alice, db:postgres), or a kind (admin:).",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", help="At most the latest N entries.")
    ] = audit.DEFAULT_LIMIT,
    directory_: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """List the latest changes, oldest first (--json to export them)."""
    window = None
    if since is not None:
        try:
            window = datetime.timedelta(seconds=parse_duration(since))
        except ValueError as e:
            raise UsageError(f"--since: {since[:80]!r} {e}") from None
    audit.check_filters(window, actor, limit)
    stack = Stack.load(directory_)
    output.listing(audit.list_entries(stack.compose, window, actor, limit), as_json)
