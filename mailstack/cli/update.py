"""`update`: check the release feed, or move the running stack to this mailstack version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from mailstack import __version__
from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.errors import UsageError
from mailstack.runtime import releases, securityupdate, update
from mailstack.stack.stackdir import Stack, StackDir

Channel = Literal["stable", "fast", "beta"]


def register(app: typer.Typer) -> None:
    app.command("update")(output.guarded(update_command))


def update_command(
    check: Annotated[
        bool,
        typer.Option("--check", help="Only show newer versions and advisories; change nothing."),
    ] = False,
    channel: Annotated[
        Channel | None,
        typer.Option(help="Channel for --check (default: update.channel in mailstack.yaml)."),
    ] = None,
    skip_backup: Annotated[
        bool,
        typer.Option(
            "--skip-backup",
            help="Do not take the pre-update backup snapshot (only with a recent backup of "
            "your own).",
        ),
    ] = False,
    security: Annotated[
        bool,
        typer.Option(
            "--security",
            help="Apply Debian's pending security fixes: rebuild only the images that have "
            "them and roll them out (health-gated, rolled back on failure).",
        ),
    ] = False,
    unattended: Annotated[
        bool,
        typer.Option(
            "--unattended",
            help="With --security: what the daily timer runs; follows update.security "
            "(auto: apply inside update.window; notify: mail the postmaster; off: nothing).",
        ),
    ] = False,
    health_timeout: Annotated[
        int, typer.Option(help="Seconds each recreated service has to become healthy.", min=10)
    ] = int(update.HEALTH_TIMEOUT),
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Update the running stack to this mailstack version: safety snapshot, re-render with
    your edits merged, new images, migrations, services recreated one at a time behind
    health checks, a real mail round trip; any failure rolls everything back."""
    if check:
        config = StackDir(directory).require().load_config()
        chosen = channel or config.update.channel
        result = releases.check_online(__version__, chosen, config.update.feed_url)
        if as_json:
            output.as_json(output.plain(result))
        elif result.offline:
            output.warn(str(result))
        else:
            output.info(str(result))
        return
    if unattended and not security:
        raise UsageError("--unattended: only with --security (the daily security run)")
    if security:
        Stack.load(directory)
        outcome: object = (
            securityupdate.unattended(directory, progress=output.progress)
            if unattended
            else securityupdate.security_update(
                directory,
                skip_backup=skip_backup,
                progress=output.progress,
                health_timeout=float(health_timeout),
            )
        )
        if as_json:
            output.as_json(output.plain(outcome))
        else:
            output.info(str(outcome))
        return
    if channel is not None:
        output.warn("--channel only applies to --check: update moves to this mailstack version")
    Stack.load(directory)  # a clear error for a directory that is no stack
    if skip_backup:
        output.warn("--skip-backup: no pre-update snapshot is taken")
    result_ = update.update(
        directory,
        skip_backup=skip_backup,
        progress=output.progress,
        health_timeout=float(health_timeout),
    )
    if as_json:
        output.as_json(output.plain(result_))
    else:
        output.info(str(result_))
