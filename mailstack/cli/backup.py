"""`backup` (create, list, restore, verify, prune, init, schedule) and `restore` (a new host)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from mailstack.backup import (
    creation,
    recovery,
    repository,
    restoration,
    snapshots,
    verification,
)
from mailstack.cli import output
from mailstack.cli.options import JsonOption, OnOffArgument, StackDirOption, UnitDirOption
from mailstack.errors import EXIT_FAILED, UsageError
from mailstack.runtime import schedule
from mailstack.stack.stackdir import Stack

backup_app = typer.Typer(
    help="Encrypted, incremental backups (restic) that are proven to restore.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
    app.command("restore")(output.guarded(recover))


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[repository.Progress | None]:
    """A progress bar on stderr (terminals only); yields the callback the core reports to."""
    if not enabled or not sys.stderr.isatty():
        yield (lambda fraction, message: None) if not enabled else _plain_progress()
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=output.errors,
        transient=True,
    ) as bar:
        task = bar.add_task("backup", total=1.0)

        def report(fraction: float, message: str) -> None:
            bar.update(task, completed=fraction, description=message)

        yield report


def _plain_progress() -> repository.Progress:
    said: set[str] = set()

    def report(fraction: float, message: str) -> None:
        # Without a terminal: the steps only, not every byte count.
        if not message[:1].isdigit() and message not in said:
            said.add(message)
            output.progress(message)

    return report


@backup_app.command("init")
@output.guarded
def init(directory: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """Make the repository (and the SSH key of an sftp target) without backing up yet."""
    result = repository.init_repository(directory)
    if result.password_created:
        output.backup_password_notice(Stack.load(directory).dir.root)
    output.as_json(result) if as_json else output.info(str(result))


@backup_app.command("ssh-key")
@output.guarded
def ssh_key_command(directory: StackDirOption = Path()) -> None:
    """The public key an sftp target must authorize (made on first use)."""
    output.info(repository.ensure_ssh_key(Stack.load(directory).dir.root))


@backup_app.command("create")
@output.guarded
def create(
    tag: Annotated[str | None, typer.Option(help="A tag for this snapshot.")] = None,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Back up the running stack: mail, database, config, secrets, keys; one snapshot."""
    stack = Stack.load(directory)
    with _progress_bar(not as_json) as report:
        result = creation.create(stack, tag=tag, progress=report)
    if result.password_created:
        output.backup_password_notice(stack.dir.root)
    output.as_json(result) if as_json else output.info(str(result))


@backup_app.command("list")
@output.guarded
def list_(directory: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """The snapshots in the repository, oldest first."""
    found = snapshots.list_snapshots(Stack.load(directory))
    if not found and not as_json:
        output.info("no snapshots yet (mailstack backup create)")
        return
    output.listing(found, as_json)


@backup_app.command("restore")
@output.guarded
def restore(
    snapshot: Annotated[str, typer.Argument(help="A snapshot id (backup list) or latest.")],
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Restore only this: mail, db, config or a mailbox address (repeatable).",
        ),
    ] = None,
    to: Annotated[
        Path | None,
        typer.Option("--to", help="Restore into this directory; the stack is not touched."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(help="Overwrite the running stack's data (a safety snapshot comes first)."),
    ] = False,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Restore a snapshot into the stack (or --to a directory)."""
    stack = Stack.load(directory)
    with _progress_bar(not as_json) as report:
        result = restoration.restore(
            stack, snapshot, only or (), to=to, force=force, progress=report
        )
    output.as_json(result) if as_json else output.info(str(result))


@backup_app.command("verify")
@output.guarded
def verify(
    snapshot: Annotated[str | None, typer.Argument(help="Default: the newest snapshot.")] = None,
    read_data: Annotated[
        int | None,
        typer.Option(
            "--read-data",
            help="Percent of the repository's data to read back (default: backup."
            "verify_read_percent).",
        ),
    ] = None,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Check the repository, restore a snapshot into a scratch directory, compare counts."""
    result = verification.verify(Stack.load(directory), snapshot, read_data)
    if as_json:
        output.as_json({**output.plain(result), "ok": result.ok})
    else:
        output.info(str(result))
    if not result.ok:
        raise typer.Exit(EXIT_FAILED)


@backup_app.command("prune")
@output.guarded
def prune(directory: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """Forget snapshots beyond backup.keep_daily/weekly/monthly and free their space."""
    result = snapshots.prune(Stack.load(directory))
    output.as_json(result) if as_json else output.info(str(result))


@backup_app.command("schedule")
@output.guarded
def schedule_command(
    state: OnOffArgument,
    unit_dir: UnitDirOption = schedule.SYSTEMD_DIR,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """A daily backup (and prune) by a systemd timer at backup.schedule_time, and the trial
    restore (`backup verify`) as backup.verify_schedule says; a failure mails the postmaster."""
    stack = Stack.load(directory)
    output.listing(schedule.switch_backup(state, stack.dir.root, stack.config, unit_dir), as_json)


def recover(
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="The repository: a local path, sftp://user@host[:port]/path or "
            "s3://host[:port]/bucket\\[/prefix].",
        ),
    ],
    directory: Annotated[
        Path, typer.Option("--dir", help="The new stack directory (must be new or empty).")
    ],
    snapshot: Annotated[
        str | None, typer.Option(help="A snapshot id (default: the newest).")
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(help="A file holding the repository password (default: ask)."),
    ] = None,
    ssh_key: Annotated[
        Path | None, typer.Option(help="sftp: the private key that may read the repository.")
    ] = None,
    ssh_host_key: Annotated[
        str | None, typer.Option(help='sftp: the server\'s host key ("ssh-ed25519 AAAA…").')
    ] = None,
    s3_access_key_id: Annotated[str | None, typer.Option(help="s3: the access key id.")] = None,
    s3_secret_file: Annotated[
        Path | None, typer.Option(help="s3: a file holding the secret access key.")
    ] = None,
    registry: Annotated[
        str | None, typer.Option(help="Pull the backup image from this registry.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Disaster recovery: rebuild a whole stack (directory and data) from a backup."""
    if password_file is not None:
        try:
            password = password_file.read_text().strip()
        except OSError as e:
            raise UsageError(
                f"--password-file: {password_file} cannot be read ({e.strerror})"
            ) from None
    else:
        password = str(typer.prompt("Repository password", hide_input=True))
    source_spec = recovery.Source(
        target=source,
        password=password,
        ssh_key=ssh_key,
        ssh_host_key=ssh_host_key,
        s3_access_key_id=s3_access_key_id,
        s3_secret_file=s3_secret_file,
    )
    with _progress_bar(not as_json) as report:
        result = recovery.recover(source_spec, directory, snapshot, registry, report)
    output.as_json(result) if as_json else output.info(str(result))
