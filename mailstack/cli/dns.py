"""`dns records`: the DNS records to publish for the mail server and its mail domains."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.errors import UsageError
from mailstack.mailauth import dnscheck
from mailstack.stack.config_values import normalize_domain
from mailstack.stack.stackdir import Stack

dns_app = typer.Typer(help="DNS records to publish.", no_args_is_help=True)

DomainArgument = Annotated[
    str | None,
    typer.Argument(
        metavar="[DOMAIN]",
        help="One mail domain (default: every mail domain of the stack).",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(dns_app, name="dns")


def domain_argument(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalize_domain(value)
    except ValueError as e:
        raise UsageError(f"DOMAIN: {value[:80]!r} {e}") from None


@dns_app.command("records")
@output.guarded
def records(
    domain: DomainArgument = None,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Zone-file lines to publish: MX, addresses, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, SRV."""
    stack = Stack.load(directory)
    result = dnscheck.stack_records(stack, domain_argument(domain))
    if result.note:
        output.warn(result.note)
    if as_json:
        output.as_json(
            {
                "hostname": result.records.hostname,
                "groups": [
                    {
                        "title": group.title,
                        "records": [
                            {**output.plain(record), "zone_line": record.zone_line}
                            for record in group.records
                        ],
                    }
                    for group in result.records.groups
                ],
            }
        )
        return
    output.info(str(result.records))
