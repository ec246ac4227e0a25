"""The `mailstack` Typer app and its one error path."""

from __future__ import annotations

import logging
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Annotated

import typer

from mailstack import __version__
from mailstack.adapters import psql
from mailstack.cli import (
    access,
    accounts,
    accounts_sync,
    admin,
    alert,
    api,
    audit,
    backup,
    check,
    cluster,
    dkim,
    dns,
    fulltext,
    jobs,
    lifecycle,
    mailbox_import,
    mailbox_mfa,
    output,
    queue,
    relay,
    report,
    security,
    setup,
    sieve,
    tls,
    update,
)
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.cli.output import error
from mailstack.errors import EXIT_FAILED, MailstackError
from mailstack.runtime import inventory
from mailstack.stack.config import CONFIG_FILE

app = typer.Typer(
    name="mailstack",
    help="One small operator file to a complete, hardened mail server on Docker Compose.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mailstack {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    context: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log external commands.")
    ] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s")
    # Every change this command makes is recorded as the host user's (the audit log); the
    # context ends with the command, and so does the setting.
    context.with_resource(psql.acting_as(audit.host_actor()))


def version_command(
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """mailstack's, Compose's and the engine's versions, and the stack's images with their
    tags and package sets (grep it for an advisory's package)."""
    root = directory if (directory / CONFIG_FILE).is_file() else None
    result = inventory.inventory(root)
    if as_json:
        output.as_json(output.plain(result))
    else:
        output.info(str(result))


app.command("version")(output.guarded(version_command))
setup.register(app)
lifecycle.register(app)
check.register(app)
accounts.register(app)
accounts_sync.register(app)
access.register()
mailbox_mfa.register()
sieve.register(accounts.mailbox_app)
mailbox_import.register(accounts.mailbox_app)
fulltext.register(accounts.mailbox_app)
dkim.register(app)
backup.register(app)
dns.register(app)
security.register(app)
update.register(app)
tls.register(app)
admin.register(app)
api.register(app)
audit.register(app)
jobs.register(app)
queue.register(app)
alert.register(app)
report.register(app)
relay.register(app)
cluster.register(app)


def run() -> None:
    """Console entry point: the project's errors become one red line and an exit code."""
    try:
        app()
    except MailstackError as e:  # raised outside a guarded command (e.g. in a callback)
        error(e.message, e.hint)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        error("interrupted; nothing was left half-written")
        sys.exit(130)
    except Exception:  # the last line of defence: log the trace, print one line
        log = _write_trace()
        error(
            f"unexpected error: {sys.exc_info()[1]!r}",
            hint=f"the full trace is in {log}; please include it in a bug report",
        )
        sys.exit(EXIT_FAILED)


def _write_trace() -> Path:
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115  # kept open only to write the trace
        "w", prefix="mailstack-error-", suffix=".log", delete=False
    )
    with handle:
        traceback.print_exc(file=handle)
    return Path(handle.name)
