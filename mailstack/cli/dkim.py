"""`dkim`: the DKIM keys rspamd signs with, one per mail domain."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack import dkim
from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.config import normalize_domain
from mailstack.errors import UsageError
from mailstack.stackdir import StackDir

dkim_app = typer.Typer(help="DKIM signing keys.", no_args_is_help=True)


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
    if as_json:
        output.as_json(
            [
                {
                    "domain": key.domain,
                    "selector": key.selector,
                    "key_type": key.key_type,
                    "bits": key.bits,
                    "active": key.active,
                    "record_name": key.record_name,
                    "txt": key.txt,
                    "zone_line": key.zone_line,
                }
                for key in keys
            ]
        )
        return
    output.listing(keys, as_json_output=False)
