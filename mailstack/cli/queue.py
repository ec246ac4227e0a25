"""`queue list|retry|delete`: the Postfix mail queue (mailstack.runtime.mailqueue)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.errors import UsageError
from mailstack.runtime import mailqueue
from mailstack.stack.stackdir import Stack

queue_app = typer.Typer(
    help="The mail queue: what waits to be delivered, and why; retry or delete it.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(queue_app, name="queue")


@queue_app.command("list")
@output.guarded
def queue_list(directory_: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """Every queued message, oldest first, with its recipients and why each waits."""
    found = mailqueue.list_queue(Stack.load(directory_).compose)
    output.as_json(found) if as_json else output.info(str(found))


@queue_app.command("retry")
@output.guarded
def queue_retry(
    queue_id: Annotated[
        str | None, typer.Argument(metavar="ID", help="The queued message to deliver now.")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Deliver every queued message now.")] = False,
    directory_: StackDirOption = Path(),
) -> None:
    """Try to deliver a queued message now (postqueue -i), or all of them (postqueue -f)."""
    if (queue_id is None) == (not every):
        raise UsageError("ID: give one queued message's id, or --all (not both)")
    wanted = mailqueue.ALL if every else mailqueue.queue_id(queue_id or "")
    output.info(str(mailqueue.retry(Stack.load(directory_).compose, wanted)))


@queue_app.command("delete")
@output.guarded
def queue_delete(
    queue_ids: Annotated[
        list[str], typer.Argument(metavar="ID...", help="The queued messages to delete.")
    ],
    directory_: StackDirOption = Path(),
) -> None:
    """Delete queued messages for good (postsuper -d); never all at once."""
    wanted = [mailqueue.queue_id(text) for text in queue_ids]  # every id checked first
    compose = Stack.load(directory_).compose
    for one in wanted:
        output.info(str(mailqueue.delete(compose, one)))
