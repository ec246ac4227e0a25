"""`domain` and `mailbox`: the mail directory in PostgreSQL."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mailstack import directory, lifecycle, passwords
from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.config import normalize_address, normalize_domain
from mailstack.errors import UsageError
from mailstack.units import parse_size

domain_app = typer.Typer(help="Mail domains.", no_args_is_help=True)
mailbox_app = typer.Typer(
    help="Mailboxes (accounts that receive mail and log in).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(domain_app, name="domain")
    app.add_typer(mailbox_app, name="mailbox")


def _valid(kind: str, value: str) -> str:
    normalise = normalize_domain if kind == "DOMAIN" else normalize_address
    try:
        return normalise(value)
    except ValueError as e:
        raise UsageError(f"{kind}: {value[:80]!r} {e}") from None


@domain_app.command("add")
@output.guarded
def domain_add(
    name: Annotated[str, typer.Argument(metavar="DOMAIN", help="e.g. example.org (IDN ok)")],
    directory_: StackDirOption = Path(),
) -> None:
    """Add a mail domain."""
    domain = _valid("DOMAIN", name)
    stack = lifecycle.Stack.load(directory_)
    directory.add_domain(stack.compose, domain)
    output.info(f"added domain {domain}")


@domain_app.command("list")
@output.guarded
def domain_list(directory_: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """List mail domains."""
    stack = lifecycle.Stack.load(directory_)
    output.listing(directory.list_domains(stack.compose), as_json)


@mailbox_app.command("add")
@output.guarded
def mailbox_add(
    address: Annotated[str, typer.Argument(metavar="ADDRESS", help="e.g. alice@example.org")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    quota: Annotated[str, typer.Option(help="Storage quota, e.g. 2G, 500M; 0 for none.")] = "2G",
    directory_: StackDirOption = Path(),
) -> None:
    """Add a mailbox. The password is never taken from the command line."""
    mailbox = _valid("ADDRESS", address)
    try:
        quota_bytes = parse_size(quota)
    except ValueError as e:
        raise UsageError(f"--quota: {quota!r} {e}") from None
    password = _read_password(password_stdin)
    passwords.check_password_strength(password)
    stack = lifecycle.Stack.load(directory_)
    directory.add_mailbox(stack.compose, mailbox, passwords.hash_password(password), quota_bytes)
    output.info(f"added mailbox {mailbox}")


@mailbox_app.command("list")
@output.guarded
def mailbox_list(directory_: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """List mailboxes."""
    stack = lifecycle.Stack.load(directory_)
    output.listing(directory.list_mailboxes(stack.compose), as_json)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UsageError("--password-stdin: standard input is empty")
        return line.rstrip("\r\n")
    first = str(typer.prompt("Password", hide_input=True))
    second = str(typer.prompt("Repeat password", hide_input=True))
    if first != second:
        raise UsageError("password: the two entries differ; nothing was changed")
    return first
