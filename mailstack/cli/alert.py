"""`alert unit-failed|test`: how a failed host timer reaches the postmaster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack.cli import output
from mailstack.cli.options import StackDirOption
from mailstack.errors import EXIT_FAILED, MailstackError
from mailstack.runtime import alerts, notify, schedule
from mailstack.stack.stackdir import Stack

alert_app = typer.Typer(
    help="Mail the postmaster that a host timer failed (what each timer's OnFailure= runs).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(alert_app, name="alert")


def _send(stack: Stack, unit: str) -> None:
    known = {
        timer.name: timer.what for timer in schedule.stack_timers(stack.dir.root, stack.config)
    }
    alert = alerts.unit_failed(stack, unit, known)
    if alert.told:
        output.info(alert.line())
        return
    output.error(alert.line())
    raise typer.Exit(EXIT_FAILED)


@alert_app.command("unit-failed")
@output.guarded
def unit_failed(
    unit: Annotated[str, typer.Argument(help="The failed systemd unit (NAME.service).")],
    directory: StackDirOption = Path(),
) -> None:
    """Mail the postmaster the unit's failure and last journal lines, and record it for
    `status` (at most once an hour per unit); exit 1 if the mail could not be sent."""
    _send(Stack.load(directory), unit)


@alert_app.command("test")
@output.guarded
def test(directory: StackDirOption = Path()) -> None:
    """Send a test alert the way a failed timer's goes: proves the postmaster receives them."""
    stack = Stack.load(directory)
    to = notify.postmaster(stack)
    try:
        alerts.send_test(stack)
    except MailstackError as failure:
        raise MailstackError(
            f"the test alert could not be sent: {failure.message}",
            hint=f"{to} must be a mailbox or an alias somebody reads (`mailstack mailbox add "
            f"{to}` or `mailstack alias add {to} YOU@DOMAIN`), and the stack up "
            "(`mailstack status`)",
        ) from None
    output.info(f"a test alert was mailed to {to}")
