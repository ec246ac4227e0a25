"""`mailbox mfa`: a mailbox's second factor from the host (mailstack.identity.mfa), for the
operator: set one up for a user (enrol, then confirm with a first code the user reads from
the app), see it, or remove it (a lost phone without recovery codes). With a second factor,
the webmail asks for a code and IMAP, SMTP and ManageSieve take only app passwords
(policy.mfa_protocols; docs/mfa.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from mailstack.accounts import names
from mailstack.cli import accounts, output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.identity import mfa, sealing
from mailstack.identity.mfa import Owner
from mailstack.stack.secrets import MFA_KEY, SECRETS_DIR
from mailstack.stack.stackdir import Stack

mfa_app = typer.Typer(
    help="A mailbox's second factor (TOTP): the webmail asks for a code, and IMAP, SMTP "
    "and ManageSieve then take only app passwords.",
    no_args_is_help=True,
)


def register() -> None:
    accounts.mailbox_app.add_typer(mfa_app, name="mfa")


AddressArgument = Annotated[str, typer.Argument(metavar="ADDRESS", help="e.g. alice@example.org")]
CodeArgument = Annotated[
    str, typer.Argument(metavar="CODE", help="the 6 digits the user's app shows now (used once)")
]


def _owner(address: str) -> Owner:
    return Owner.mailbox(names.require("ADDRESS", names.mailbox, address))


def _key(stack: Stack) -> bytes:
    return sealing.read_key(stack.dir.root / SECRETS_DIR / MFA_KEY)


@mfa_app.command("status")
@output.guarded
def mfa_status(
    address: AddressArgument, directory_: StackDirOption = Path(), as_json: JsonOption = False
) -> None:
    """Whether the mailbox has a second factor, and its recovery codes left."""
    owner = _owner(address)
    result = mfa.status(Stack.load(directory_).compose, owner)
    output.as_json(result) if as_json else output.info(str(result))


@mfa_app.command("enrol")
@output.guarded
def mfa_enrol(
    address: AddressArgument, directory_: StackDirOption = Path(), as_json: JsonOption = False
) -> None:
    """A new TOTP secret for the mailbox, shown once; in force after `mfa confirm`."""
    owner = _owner(address)
    stack = Stack.load(directory_)
    result = mfa.enrol(stack.compose, owner, _key(stack), issuer=stack.config.hostname)
    output.as_json(result) if as_json else output.info(str(result))


@mfa_app.command("confirm")
@output.guarded
def mfa_confirm(
    address: AddressArgument,
    code: CodeArgument,
    directory_: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Put the enrolment in force with a first code; prints the recovery codes once."""
    owner = _owner(address)
    stack = Stack.load(directory_)
    result = mfa.confirm(stack.compose, owner, _key(stack), code, time.time())
    output.as_json(result) if as_json else output.info(str(result))


@mfa_app.command("disable")
@output.guarded
def mfa_disable(address: AddressArgument, directory_: StackDirOption = Path()) -> None:
    """Remove the mailbox's second factor: its account password works everywhere again."""
    owner = _owner(address)
    output.info(str(mfa.disable(Stack.load(directory_).compose, owner)))
