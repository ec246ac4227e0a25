"""`accounts export|import`: the whole mail directory as one YAML file, synced declaratively."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from mailstack.accounts import mailu, sync, syncfile
from mailstack.accounts.syncplan import Snapshot
from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.errors import UsageError
from mailstack.mailauth import dkim
from mailstack.stack.stackdir import Stack
from mailstack.stack.stackfiles import publish_domain_key
from mailstack.units import parse_size

accounts_app = typer.Typer(
    help="The whole mail directory (domains, mailboxes, aliases) as one YAML file.",
    no_args_is_help=True,
)

FileArgument = Annotated[Path, typer.Argument(metavar="FILE.yaml", dir_okay=False)]


def register(app: typer.Typer) -> None:
    app.add_typer(accounts_app, name="accounts")


@accounts_app.command("export")
@output.guarded
def accounts_export(
    file: FileArgument,
    directory_: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Write every domain, mailbox (password hash), alias and grant to FILE (mode 0600)."""
    stack = Stack.load(directory_)
    result = sync.export_accounts(stack.compose, file)
    if as_json:
        output.as_json(result)
    else:
        output.info(str(result))


@accounts_app.command("import")
@output.guarded
def accounts_import(
    file: FileArgument,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only print the differences; change nothing.")
    ] = False,
    source_format: Annotated[
        str,
        typer.Option(
            "--from",
            metavar="mailstack|mailu",
            help="mailu: FILE is `flask mailu config-export --secrets` (YAML or JSON); its "
            "entries are added to the directory, nothing is removed (docs/migration.md).",
        ),
    ] = "mailstack",
    directory_: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Make the directory equal to FILE (one transaction); print the differences first.

    Entries missing from FILE are removed (stored mail of removed mailboxes is kept), except
    with --from mailu, which only adds and updates.
    """
    if source_format not in ("mailstack", "mailu"):
        raise UsageError(f"--from: {source_format[:40]!r} is not mailstack or mailu")
    # A missing or bad file is refused before the stack is looked at.
    raw = syncfile.read_file(file)
    wanted: Snapshot | Callable[[Snapshot], Snapshot] | None = (
        syncfile.parse_snapshot(raw, file.name) if source_format == "mailstack" else None
    )
    notes: tuple[str, ...] = ()
    stack = Stack.load(directory_)
    if wanted is None:  # Mailu's users without a quota get the stack's default one
        export = mailu.read_export(raw, file.name, parse_size(stack.config.mailboxes.default_quota))
        wanted, notes = export.onto, export.notes
    result = sync.import_accounts(
        stack.compose, wanted, str(file), stack.config.domain, dry_run=dry_run, notes=notes
    )
    if as_json:
        output.as_json(result)
    else:
        output.info(str(result))
    if result.applied and result.added_domains:
        # New domains sign like ones from `domain add`: keys made, one re-render and restart.
        *others, last = result.added_domains
        for domain in others:
            dkim.ensure_key(stack.dir.root, domain)
        output.note(str(publish_domain_key(stack, last)))
