"""`mailbox import`: a mailbox's mail from another IMAP server (mailstack.accounts.mailimport)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack.accounts import mailimport
from mailstack.cli import output
from mailstack.cli.accounts import (
    AddressArgument,
    PasswordStdinOption,
    mailbox_address,
    read_password,
)
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.cluster.deployment import mailbox_executor
from mailstack.errors import UsageError
from mailstack.stack.stackdir import Stack

MAX_CA_BYTES = 1024 * 1024


def register(mailbox_app: typer.Typer) -> None:
    mailbox_app.command("import")(output.guarded(import_mailbox))


def import_mailbox(
    address: AddressArgument,
    source_url: Annotated[
        str,
        typer.Option(
            "--from", metavar="URL", help="imaps://HOST[:PORT] (implicit TLS) or imap://HOST[:PORT]"
        ),
    ],
    user: Annotated[str, typer.Option("--user", help="The sign-in name at the source.")],
    password_stdin: PasswordStdinOption = False,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file", help="PEM CAs that verify the source's certificate (default: the system's)"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the source's folders and mail; copy nothing.")
    ] = False,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Copy a mailbox's folders, mail and flags from another IMAP server (TLS verified),
    one-way: nothing is deleted on either side, and running it again copies only what is
    new (an interrupted import resumes)."""
    mailbox = mailbox_address(address)
    source = mailimport.parse_source(source_url, user)
    ca_pem = _read_ca(ca_file) if ca_file else None
    stack = Stack.load(directory)
    # Typed once: the source checks it.
    password = read_password(
        password_stdin, f"Password of {source.user} at the source", confirm=False
    )
    result = mailimport.import_mail(
        mailbox_executor(stack, mailbox),
        mailbox,
        source,
        password,
        ca_pem,
        dry_run,
        progress=output.progress,
    )
    if as_json:
        output.as_json(result)
        return
    for line in result.lines():
        output.info(line)


def _read_ca(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"--ca-file: {path} cannot be read ({e.strerror})") from None
    if len(data) > MAX_CA_BYTES or b"-----BEGIN CERTIFICATE-----" not in data:
        raise UsageError(f"--ca-file: {path} is not a PEM bundle of certificates")
    return data
