"""`build`, `up`, `down`, `restart`, `status`, `logs`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.errors import EXIT_FAILED
from mailstack.runtime import lifecycle, logview
from mailstack.stack.stackdir import Stack


def register(app: typer.Typer) -> None:
    app.command("build")(output.guarded(build))
    app.command("up")(output.guarded(up))
    app.command("down")(output.guarded(down))
    app.command("restart")(output.guarded(restart))
    app.command("status")(output.guarded(status))
    app.command("logs")(output.guarded(logs))


def build(directory: StackDirOption = Path()) -> None:
    """Build every image from Debian's packages (or pull them when images.registry is set)."""
    stack = Stack.load(directory)
    result = lifecycle.build(stack, output.progress)
    for built in result.built:
        output.info(f"built {built.image} in {built.seconds:.0f}s")
    if not result.built:
        output.info("every image is current: nothing to build")


def up(
    wait: Annotated[bool, typer.Option(help="Wait until every service is healthy.")] = True,
    timeout: Annotated[int, typer.Option(help="Seconds to wait for health.", min=10)] = 300,
    directory: StackDirOption = Path(),
) -> None:
    """Start the stack (builds missing images, applies schema migrations, waits for health)."""
    stack = Stack.load(directory)
    result = lifecycle.up(stack, wait=wait, timeout=timeout, progress=output.progress)
    output.up_result(result)


def down(
    volumes: Annotated[
        bool, typer.Option("--volumes", help="Also delete the volumes: ALL MAIL IS LOST.")
    ] = False,
    directory: StackDirOption = Path(),
) -> None:
    """Stop and remove the stack's containers (mail and data stay in their volumes)."""
    stack = Stack.load(directory)
    if volumes:
        typer.confirm("Delete every volume of this stack, including all mail?", abort=True)
    lifecycle.down(stack, volumes=volumes)
    output.info(f"stack {stack.config.project} stopped")


def restart(
    service: Annotated[str | None, typer.Argument(help="One service (default: all).")] = None,
    directory: StackDirOption = Path(),
) -> None:
    """Restart one service or the whole stack and wait for health."""
    stack = Stack.load(directory)
    lifecycle.restart(stack, service)
    output.info(f"restarted {service or 'every service'}")


def status(directory: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """Each service's state, health, uptime and ports, and unresolved render conflicts."""
    stack = Stack.load(directory)
    result = lifecycle.status(stack)
    if as_json:
        output.as_json({**output.plain(result), "healthy": result.healthy})
    else:
        output.status_table(result)
    if not result.healthy or result.conflicts:
        raise typer.Exit(EXIT_FAILED)


def logs(
    service: Annotated[str | None, typer.Argument(help="One service (default: all).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep following.")] = False,
    tail: Annotated[
        int | None,
        typer.Option(
            help=f"Lines from the end of each log, before --grep filters them (default "
            f"{logview.DEFAULT_TAIL}; every line with --since or --grep)."
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only lines since then: 30m, 2h, 1d, or 2026-12-06T08:00[Z]."),
    ] = None,
    grep: Annotated[
        str | None,
        typer.Option(help="Only lines matching this regular expression; exit 1 if none does."),
    ] = None,
    ignore_case: Annotated[
        bool, typer.Option("--ignore-case", "-i", help="--grep ignores case.")
    ] = False,
    directory: StackDirOption = Path(),
) -> None:
    """Show the services' logs (Docker keeps 3 x 10 MB per container, docs/logs.md)."""
    wanted = logview.query(
        service, follow=follow, tail=tail, since=since, grep=grep, ignore_case=ignore_case
    )
    shown = logview.show(Stack.load(directory), wanted, typer.echo)
    if shown == 0:
        output.error(f"no log line matches {grep!r}")
        raise typer.Exit(EXIT_FAILED)
