"""`security`: the stack's defences that an operator looks at or acts on (brute-force bans)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.errors import UsageError
from mailstack.runtime import bans
from mailstack.stack.stackdir import Stack

security_app = typer.Typer(help="Security: brute-force bans.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(security_app, name="security")


@security_app.command("bans")
@output.guarded
def bans_command(
    clear: Annotated[
        list[str] | None,
        typer.Option(
            "--clear",
            metavar="ADDRESS",
            help="Lift the ban of this client address and forget its failed logins (repeatable).",
            show_default=False,
        ),
    ] = None,
    clear_all: Annotated[
        bool, typer.Option("--clear-all", help="Lift every ban and forget every failed login.")
    ] = False,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Client addresses banned after repeated failed logins (IMAP, SMTP AUTH), with expiry."""
    if clear and clear_all:
        raise UsageError("--clear and --clear-all: give one or the other")
    if clear:
        # Checked before the stack is touched: a typo is a usage error, not a failed exec.
        for address in clear:
            bans.client_address(address)
    stack = Stack.load(directory)
    if clear_all:
        result = bans.clear_all(stack.compose, stack.config)
    elif clear:
        result = bans.clear(stack.compose, stack.config, clear)
    else:
        shown = bans.report(stack.compose, stack.config)
        if as_json:
            output.as_json(shown)
        else:
            output.info(str(shown))
        return
    if as_json:
        output.as_json(result)
    else:
        output.info(str(result))
