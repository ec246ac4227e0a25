"""`mailbox sieve show|set`: a mailbox's active Sieve script, for operators."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mailstack.accounts import sieve
from mailstack.cli import output
from mailstack.cli.accounts import AddressArgument, mailbox_address
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.cluster.deployment import mailbox_executor
from mailstack.errors import UsageError
from mailstack.stack.stackdir import Stack

sieve_app = typer.Typer(
    help="Sieve filters of a mailbox (users manage their own over ManageSieve, port 4190).",
    no_args_is_help=True,
)


def register(mailbox_app: typer.Typer) -> None:
    mailbox_app.add_typer(sieve_app, name="sieve")


@sieve_app.command("show")
@output.guarded
def show(
    address: AddressArgument,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Print the mailbox's active Sieve script (a line about it goes to stderr)."""
    mailbox = mailbox_address(address)
    stack = Stack.load(directory)
    scripts = sieve.show_scripts(mailbox_executor(stack, mailbox), mailbox)
    if as_json:
        output.as_json(scripts)
        return
    output.note(scripts.summary())
    output.verbatim(str(scripts))


@sieve_app.command("set")
@output.guarded
def set_(
    address: AddressArgument,
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="The Sieve script; - reads standard input.")
    ],
    name: Annotated[
        str, typer.Option("--name", help="Store the script under this name.")
    ] = sieve.DEFAULT_NAME,
    directory: StackDirOption = Path(),
) -> None:
    """Check a Sieve script with sievec, then store it and make it the active one.

    A script that does not compile changes nothing; the one active before is kept, inactive.
    """
    mailbox = mailbox_address(address)
    sieve.check_name(name)
    source = "stdin" if file == "-" else file
    text = sieve.script_text(_read(file), source)
    stack = Stack.load(directory)
    run = mailbox_executor(stack, mailbox)
    output.info(str(sieve.set_script(run, mailbox, name, text, source)))


def _read(file: str) -> bytes:
    if file == "-":
        return sys.stdin.buffer.read(sieve.MAX_SCRIPT_BYTES + 1)
    try:
        with Path(file).open("rb") as handle:
            return handle.read(sieve.MAX_SCRIPT_BYTES + 1)
    except OSError as e:
        raise UsageError(f"FILE: {file[:200]!r} cannot be read ({e.strerror})") from None
