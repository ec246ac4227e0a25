"""`admin`: administrators and domain administrators (mailstack.identity.admins)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mailstack.accounts import names, passwords
from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.errors import UsageError
from mailstack.identity import admins
from mailstack.stack.stackdir import Stack

admin_app = typer.Typer(
    help="Administrators and domain administrators (the admin web service and API).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")


NameArgument = Annotated[
    str, typer.Argument(metavar="NAME", help="e.g. alice or ops@example.org (stored lower-case)")
]
DomainArgument = Annotated[
    str, typer.Argument(metavar="DOMAIN", help="A mail domain of this stack (IDN ok).")
]


def _valid_name(value: str) -> str:
    return names.require("NAME", names.admin_name, value)


def _valid_domain(value: str) -> str:
    # names.domain turns an IDN into its xn-- form, the one the directory stores.
    return names.require("DOMAIN", names.domain, value)


@admin_app.command("add")
@output.guarded
def admin_add(
    name: NameArgument,
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            metavar="ROLE",
            help="admin (every domain) or domain-admin (its --domain ones). "
            "Default: domain-admin with --domain, else admin.",
            show_default=False,
        ),
    ] = None,
    domains: Annotated[
        list[str] | None,
        typer.Option(
            "--domain",
            metavar="DOMAIN",
            help="A mail domain a domain-admin manages (repeat for more).",
            show_default=False,
        ),
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from standard input (default: generate one, shown once).",
        ),
    ] = False,
    directory_: StackDirOption = Path(),
) -> None:
    """Add an administrator. Its password is generated or read from stdin, never an argument."""
    wanted = [_valid_domain(domain) for domain in domains or []]
    chosen = role if role is not None else ("domain-admin" if wanted else "admin")
    admins.checked_admin(name, chosen, wanted)  # every rule before the stack is touched
    password = _read_password() if password_stdin else None
    if password is not None:
        passwords.check_password_strength(password)
    stack = Stack.load(directory_)
    output.info(str(admins.add_admin(stack.compose, name, chosen, wanted, password)))


@admin_app.command("list")
@output.guarded
def admin_list(directory_: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """List administrators: role, domains, second factor, state."""
    stack = Stack.load(directory_)
    found = admins.list_admins(stack.compose)
    if not found and not as_json:
        output.info("no administrators yet; make the first with: mailstack admin add NAME")
        return
    output.listing(found, as_json)


@admin_app.command("remove")
@output.guarded
def admin_remove(name: NameArgument, directory_: StackDirOption = Path()) -> None:
    """Remove an administrator with its API tokens and second factor."""
    admin = _valid_name(name)
    stack = Stack.load(directory_)
    output.info(str(admins.remove_admin(stack.compose, admin)))


@admin_app.command("grant")
@output.guarded
def admin_grant(
    name: NameArgument, domain: DomainArgument, directory_: StackDirOption = Path()
) -> None:
    """Let a domain administrator manage DOMAIN too."""
    admin, wanted = _valid_name(name), _valid_domain(domain)
    stack = Stack.load(directory_)
    output.info(str(admins.grant_domain(stack.compose, admin, wanted)))


@admin_app.command("revoke")
@output.guarded
def admin_revoke(
    name: NameArgument, domain: DomainArgument, directory_: StackDirOption = Path()
) -> None:
    """Take DOMAIN from a domain administrator (never its last one)."""
    admin, wanted = _valid_name(name), _valid_domain(domain)
    stack = Stack.load(directory_)
    output.info(str(admins.revoke_domain(stack.compose, admin, wanted)))


@admin_app.command("reset-mfa")
@output.guarded
def admin_reset_mfa(name: NameArgument, directory_: StackDirOption = Path()) -> None:
    """Delete an administrator's second factor: its next sign-in enrols a new one."""
    admin = _valid_name(name)
    stack = Stack.load(directory_)
    output.info(str(admins.reset_mfa(stack.compose, admin)))


def _read_password() -> str:
    line = sys.stdin.readline()
    if not line:
        raise UsageError("--password-stdin: standard input is empty")
    return line.rstrip("\r\n")
