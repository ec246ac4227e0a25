"""`relay password`: the relay host's password (relay.* in mailstack.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    directory: StackDirOption = Path(),
    password_stdin: PasswordStdinOption = False,
    domain: Annotated[
        str | None,
        typer.Option(
            "--domain",
            help="The password of this sender domain's relay (relay.by_sender_domain).",
        ),
    ] = None,
) -> None:
    """Store the password for relay.username (secrets/relay_password, 0600), or with --domain
    for that sender domain's relay (secrets/relay_password.<domain>); a running Postfix is
    restarted to take it (queued mail stays queued)."""
    stack = Stack.load(directory)
    target = relay.password_target(stack.config, domain)  # before the password is asked
    name = relay.store_password(stack, read_password(password_stdin, "Relay password"), target)
    output.info(f"stored secrets/{name}")
    if "postfix" in stack.compose.running_services():
        lifecycle.take_changed_config(stack, {"postfix"}, {"postfix"})
        output.info("restarted postfix: it relays with the new password")
