"""`dkim`: the DKIM keys rspamd signs with, one per mail domain."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.errors import EXIT_DKIM_PENDING, UsageError
from mailstack.mailauth import dkim, dkim_rotation
from mailstack.stack.config_values import normalize_domain
from mailstack.stack.stackdir import Stack, StackDir

dkim_app = typer.Typer(help="DKIM signing keys.", no_args_is_help=True)
# `rotate` made (or found) the new key but DNS does not show it yet: not an error, not done.


def register(app: typer.Typer) -> None:
    app.add_typer(dkim_app, name="dkim")


@dkim_app.command("show")
@output.guarded
def show(
    name: Annotated[str, typer.Argument(metavar="DOMAIN", help="e.g. example.org (IDN ok)")],
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Selector, key type and size, and the TXT record to publish for a domain."""
    try:
        domain = normalize_domain(name)
    except ValueError as e:
        raise UsageError(f"DOMAIN: {name[:80]!r} {e}") from None
    keys = dkim.show(StackDir(directory).require().root, domain)
    states = dkim.key_states(keys)
    if as_json:
        output.as_json(
            [
                {
                    "domain": key.domain,
                    "selector": key.selector,
                    "key_type": key.key_type,
                    "bits": key.bits,
                    "active": key.active,
                    "state": states[key.selector],
                    "record_name": key.record_name,
                    "txt": key.txt,
                    "zone_line": key.zone_line,
                }
                for key in keys
            ]
        )
        return
    for key in keys:
        output.info(str(key))
        if states[key.selector] == dkim.PENDING:
            output.info(f"  a rotation waits for this record; then: mailstack dkim rotate {domain}")
        elif states[key.selector] == dkim.RETIRING:
            output.info(f"  replaced; when it is no longer needed: mailstack dkim retire {domain}")


def _domain(name: str) -> str:
    try:
        return normalize_domain(name)
    except ValueError as e:
        raise UsageError(f"DOMAIN: {name[:80]!r} {e}") from None


@dkim_app.command("rotate")
@output.guarded
def rotate(
    name: Annotated[str, typer.Argument(metavar="DOMAIN", help="e.g. example.org (IDN ok)")],
    now: Annotated[
        bool,
        typer.Option(
            "--now", help="Switch signing at once, without waiting for the record in DNS."
        ),
    ] = False,
    directory: StackDirOption = Path(),
) -> None:
    """New key and selector, published beside the old one; signing switches once it is in DNS.

    Run it again to check again: exit code 5 while the new record is not visible yet."""
    domain = _domain(name)
    stack = Stack.load(directory)
    result = dkim_rotation.rotate(stack, domain, now=now)
    output.info(str(result))
    if not result.switched:
        raise typer.Exit(EXIT_DKIM_PENDING)


@dkim_app.command("retire")
@output.guarded
def retire(
    name: Annotated[str, typer.Argument(metavar="DOMAIN", help="e.g. example.org (IDN ok)")],
    selector: Annotated[
        str | None,
        typer.Argument(
            metavar="[SELECTOR]", help="Only this key (default: every key older than the active)."
        ),
    ] = None,
    directory: StackDirOption = Path(),
) -> None:
    """Delete old DKIM keys after a rotation; the active key is never retired."""
    domain = _domain(name)
    stack = Stack.load(directory)
    output.info(str(dkim_rotation.retire(stack, domain, selector)))
