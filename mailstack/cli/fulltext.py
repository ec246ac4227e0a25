"""`mailbox reindex`: rebuild the full-text index (features.search; mailstack.accounts.fulltext)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack.accounts import fulltext
from mailstack.cli import output
from mailstack.cli.accounts import mailbox_address
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.cluster.deployment import mailbox_executor
from mailstack.errors import MailstackError, UsageError
from mailstack.stack.stackdir import Stack


def register(mailbox_app: typer.Typer) -> None:
    mailbox_app.command("reindex")(output.guarded(reindex_mailbox))


def reindex_mailbox(
    address: Annotated[
        str | None,
        typer.Argument(metavar="ADDRESS", help="the mailbox; or --all for every mailbox"),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every mailbox.")] = False,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Rebuild the full-text search index (features.search) of a mailbox, or of every one
    with --all: after a restore (backups leave the index out) or when searches miss mail."""
    if (address is None) == (not every):
        raise UsageError("give ADDRESS or --all (not both)")
    mailbox = mailbox_address(address) if address is not None else None
    stack = Stack.load(directory)
    if not stack.config.features.search:
        raise MailstackError(
            "features.search is off in mailstack.yaml: there is no full-text index to rebuild",
            hint="turn it on (features: {search: true}), then mailstack render and mailstack up",
        )
    if mailbox is None and stack.config.cluster.nodes:
        raise UsageError(
            "--all: not on a cluster yet (each back end holds some of the mailboxes); "
            "give one ADDRESS at a time"
        )
    run = mailbox_executor(stack, mailbox) if mailbox is not None else stack.compose
    result = fulltext.reindex(run, mailbox)
    if as_json:
        output.as_json(result)
    else:
        for line in result.lines():
            output.info(line)
    if result.failed:
        raise MailstackError(
            f"{len(result.failed)} mailbox(es) could not be reindexed (listed above)",
            hint="doveadm's error is beside each; run it again once that is mended",
        )
