"""`domain alias`, `mailbox app-password` and `alias sender`: sub-commands of the account groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack.accounts import access, alias_domains, names
from mailstack.cli import accounts, output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.stack.stackdir import Stack
from mailstack.stack.stackfiles import publish_domain_key

domain_alias_app = typer.Typer(
    help="Alias domains: mail to user@ALIAS_DOMAIN goes to user@TARGET_DOMAIN.",
    no_args_is_help=True,
)
app_password_app = typer.Typer(
    help="App passwords: extra, revocable passwords of a mailbox for IMAP and SMTP.",
    no_args_is_help=True,
)
sender_app = typer.Typer(
    help="Sender permissions: which mailbox may send as an alias (or any address of a domain).",
    no_args_is_help=True,
)


def register() -> None:
    """Hang the sub-groups under `domain`, `mailbox` and `alias` (cli/accounts.py)."""
    accounts.domain_app.add_typer(domain_alias_app, name="alias")
    accounts.mailbox_app.add_typer(app_password_app, name="app-password")
    accounts.alias_app.add_typer(sender_app, name="sender")


AliasDomainArgument = Annotated[
    str, typer.Argument(metavar="ALIAS_DOMAIN", help="e.g. example.net (IDN ok)")
]
AddressArgument = Annotated[str, typer.Argument(metavar="ADDRESS", help="e.g. alice@example.org")]
NameArgument = Annotated[
    str, typer.Argument(metavar="NAME", help="What the password is for, e.g. phone, laptop-2025.")
]
SenderArgument = Annotated[
    str,
    typer.Argument(
        metavar="SENDER", help="An address (e.g. an alias), or @domain for every address of it."
    ),
]
MailboxArgument = Annotated[
    str, typer.Argument(metavar="MAILBOX", help="The mailbox that may send as SENDER.")
]


# --- domain alias ----------------------------------------------------------------------------


@domain_alias_app.command("add")
@output.guarded
def domain_alias_add(
    name: AliasDomainArgument,
    target: Annotated[
        str, typer.Argument(metavar="TARGET_DOMAIN", help="A mail domain of this stack.")
    ],
    directory_: StackDirOption = Path(),
) -> None:
    """Deliver mail for every user@ALIAS_DOMAIN to user@TARGET_DOMAIN."""
    alias = _valid_domain("ALIAS_DOMAIN", name)
    goal = _valid_domain("TARGET_DOMAIN", target)
    stack = Stack.load(directory_)
    output.info(str(alias_domains.add_alias_domain(stack.compose, alias, goal)))
    # Mail sent as user@ALIAS_DOMAIN is signed with a key of its own domain (DMARC).
    output.info(str(publish_domain_key(stack, alias)))


@domain_alias_app.command("remove")
@output.guarded
def domain_alias_remove(name: AliasDomainArgument, directory_: StackDirOption = Path()) -> None:
    """Stop receiving mail for ALIAS_DOMAIN (its sender permissions go too)."""
    alias = _valid_domain("ALIAS_DOMAIN", name)
    stack = Stack.load(directory_)
    output.info(str(alias_domains.remove_alias_domain(stack.compose, alias)))


@domain_alias_app.command("list")
@output.guarded
def domain_alias_list(directory_: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """List alias domains and their targets."""
    stack = Stack.load(directory_)
    output.listing(alias_domains.list_alias_domains(stack.compose), as_json)


# --- mailbox app-password --------------------------------------------------------------------


@app_password_app.command("add")
@output.guarded
def app_password_add(
    address: AddressArgument,
    name: NameArgument,
    directory_: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Make a new app password (generated, strong) and print it once."""
    mailbox = names.require("ADDRESS", names.mailbox, address)
    access.check_app_password_name(name)
    stack = Stack.load(directory_)
    created = access.add_app_password(stack.compose, mailbox, name)
    if as_json:
        output.as_json(created)
    else:
        output.info(str(created))


@app_password_app.command("list")
@output.guarded
def app_password_list(
    address: AddressArgument, directory_: StackDirOption = Path(), as_json: JsonOption = False
) -> None:
    """List a mailbox's app passwords (names and dates; the passwords are not stored)."""
    mailbox = names.require("ADDRESS", names.mailbox, address)
    stack = Stack.load(directory_)
    output.listing(access.list_app_passwords(stack.compose, mailbox), as_json)


@app_password_app.command("revoke")
@output.guarded
def app_password_revoke(
    address: AddressArgument, name: NameArgument, directory_: StackDirOption = Path()
) -> None:
    """Revoke one app password; the main password and the other app passwords keep working."""
    mailbox = names.require("ADDRESS", names.mailbox, address)
    access.check_app_password_name(name)
    stack = Stack.load(directory_)
    output.info(str(access.revoke_app_password(stack.compose, mailbox, name)))


# --- alias sender ----------------------------------------------------------------------------


def _valid_sender(value: str) -> str:
    """An address, or '@domain' for every address of the domain."""
    return names.require("SENDER", names.source, value)


def _valid_domain(kind: str, value: str) -> str:
    return names.require(kind, names.domain, value)


@sender_app.command("add")
@output.guarded
def sender_add(
    sender: SenderArgument, mailbox: MailboxArgument, directory_: StackDirOption = Path()
) -> None:
    """Allow MAILBOX to send as SENDER (an alias it receives, or @domain)."""
    source = _valid_sender(sender)
    login = names.require("ADDRESS", names.mailbox, mailbox)
    stack = Stack.load(directory_)
    output.info(str(access.add_sender(stack.compose, source, login)))


@sender_app.command("remove")
@output.guarded
def sender_remove(
    sender: SenderArgument, mailbox: MailboxArgument, directory_: StackDirOption = Path()
) -> None:
    """Withdraw a permission given by `alias sender add`."""
    source = _valid_sender(sender)
    login = names.require("ADDRESS", names.mailbox, mailbox)
    stack = Stack.load(directory_)
    output.info(str(access.remove_sender(stack.compose, source, login)))


@sender_app.command("list")
@output.guarded
def sender_list(
    domain: accounts.DomainFilter = None,
    directory_: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """List who may send as which other address (every mailbox may send as itself)."""
    only = names.require("DOMAIN", names.domain, domain) if domain is not None else None
    stack = Stack.load(directory_)
    output.listing(access.list_senders(stack.compose, only), as_json)
