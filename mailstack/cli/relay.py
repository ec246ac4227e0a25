"""`relay password`: the relay host's password (relay.* in mailstack.yaml)."""

from __future__ import annotations

from pathlib import Path

import typer

from mailstack.cli import output
from mailstack.cli.accounts import PasswordStdinOption, read_password
from mailstack.cli.options import StackDirOption
from mailstack.runtime import lifecycle, relay
from mailstack.stack.stackdir import Stack

relay_app = typer.Typer(
    help="The relay host (smarthost) outbound mail goes through: relay.* in mailstack.yaml.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(relay_app, name="relay")


@relay_app.command("password")
@output.guarded
def password(
    directory: StackDirOption = Path(), password_stdin: PasswordStdinOption = False
) -> None:
    """Store the password for relay.username (secrets/relay_password, 0600); a running
    Postfix is restarted to take it (queued mail stays queued)."""
    stack = Stack.load(directory)
    relay.store_password(stack, read_password(password_stdin, "Relay password"))
    output.info("stored secrets/relay_password")
    if "postfix" in stack.compose.running_services():
        lifecycle.take_changed_config(stack, {"postfix"}, {"postfix"})
        output.info("restarted postfix: it relays with the new password")
