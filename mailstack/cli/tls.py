"""`tls renew` and `tls schedule`: ACME certificates (tls.mode: acme)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack.cli import output
from mailstack.cli.options import (
    JsonOption,
    OnOffArgument,
    ResolverOption,
    StackDirOption,
    UnitDirOption,
    resolver_address,
)
from mailstack.runtime import schedule
from mailstack.stack.stackdir import Stack
from mailstack.tls import acme, rollover

tls_app = typer.Typer(
    help="The stack's certificate: ACME renewals, the server key's rollover.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(tls_app, name="tls")


@tls_app.command("renew")
@output.guarded
def renew(
    force: Annotated[
        bool, typer.Option("--force", help="Order a new certificate even when none is due.")
    ] = False,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Obtain a certificate when one is due (tls.renew_days before expiry, names changed, or
    none yet), install it and reload postfix, dovecot and nginx. What the timer runs."""
    result = acme.renew(Stack.load(directory), force=force)
    output.as_json(result) if as_json else output.info(str(result))


@tls_app.command("rollover")
@output.guarded
def rollover_command(
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Go ahead although DNS serves TLSA records without the next key."
        ),
    ] = False,
    resolver: ResolverOption = None,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Put the next server key in service (a new certificate for it) and make a new next key.
    Refused while published TLSA records (DANE) leave the next key out: docs/dane.md."""
    address = resolver_address(resolver)
    result = rollover.rollover(Stack.load(directory), resolver=address, force=force)
    output.as_json(result) if as_json else output.info(str(result))


@tls_app.command("schedule")
@output.guarded
def schedule_command(
    state: OnOffArgument,
    unit_dir: UnitDirOption = schedule.SYSTEMD_DIR,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Run `tls renew` twice a day from a systemd timer (`up` turns it on in mode acme)."""
    output.timer_switch(state, schedule.renewal_timer, unit_dir, Stack.load(directory), as_json)
