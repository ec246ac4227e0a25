"""`alert unit-failed|test`: how a failed host timer reaches the postmaster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack.cli import output
from mailstack.cli.options import JsonOption, OnOffArgument, StackDirOption, UnitDirOption
from mailstack.errors import EXIT_FAILED, MailstackError
from mailstack.runtime import alerts, healthwatch, notify, schedule
from mailstack.stack.stackdir import Stack

alert_app = typer.Typer(
    help="Mail the postmaster: a host timer that failed (what each timer's OnFailure= runs), "
    "a change of `check health`'s verdict, a daily health summary.",
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


def _show_run(result: healthwatch.WatchResult, as_json: bool) -> None:
    if as_json:
        output.as_json(result)
    elif result.mailed:
        output.info(str(result))
    else:
        output.error(str(result))
    if not result.mailed:
        raise typer.Exit(EXIT_FAILED)


@alert_app.command("health")
@output.guarded
def health(directory: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """Run `check health`, write its gauges for the metrics service, and mail the postmaster
    only when the verdict or the set of failing items changed since the last mail (resolved
    included): the health timer's command (monitoring.schedule). Exit 1 only when a change
    could not be mailed; the verdict itself is in the mail, the gauges and `check health`."""
    _show_run(healthwatch.watch(Stack.load(directory)), as_json)


@alert_app.command("summary")
@output.guarded
def summary(directory: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """Mail the postmaster every `check health` item's verdict (the daily summary's command,
    monitoring.daily_summary); exit 1 if it could not be mailed."""
    _show_run(healthwatch.mail_summary(Stack.load(directory)), as_json)


@alert_app.command("schedule")
@output.guarded
def schedule_command(
    state: OnOffArgument,
    unit_dir: UnitDirOption = schedule.SYSTEMD_DIR,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """The health timer (monitoring.schedule) and the daily summary's (monitoring.
    daily_summary) as mailstack.yaml asks; `up` keeps them so in production where systemd
    runs. Off removes both."""
    stack = Stack.load(directory)
    results = schedule.switch_monitoring(state, stack.dir.root, stack.config, unit_dir)
    output.listing(results, as_json)
    if not results and not as_json:
        output.info("nothing to schedule: monitoring.schedule and monitoring.daily_summary are off")
