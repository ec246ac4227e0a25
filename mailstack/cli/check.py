"""`check`: validate with the daemons' own checkers."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from mailstack import checks, dnscheck, lifecycle
from mailstack.cli import output
from mailstack.cli.dns import DomainArgument, domain_argument
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.errors import EXIT_FAILED, UsageError

check_app = typer.Typer(help="Validate the stack.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(check_app, name="check")


@check_app.command("config")
@output.guarded
def check_config(
    service: Annotated[str | None, typer.Argument(help="One service (default: all).")] = None,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Run each daemon's own checker on the rendered config, inside its image."""
    stack = lifecycle.Stack.load(directory)
    if service is not None and service not in checks.CHECKED_SERVICES:
        raise UsageError(
            f"service: {service!r} has no config checker",
            hint=f"services: {', '.join(checks.CHECKED_SERVICES)}",
        )
    results = checks.check_config(stack.compose, (service,) if service else checks.CHECKED_SERVICES)
    if as_json:
        output.as_json(results)
    else:
        for result in results:
            if result.ok:
                output.info(f"ok    {result.service}")
            else:
                where = f" at {result.location}" if result.location else ""
                last = result.output.strip().splitlines()[-3:] if result.output else []
                output.error(f"{result.service}: configuration rejected{where}", "\n".join(last))
    if not all(result.ok for result in results):
        raise typer.Exit(EXIT_FAILED)


@check_app.command("dns")
@output.guarded
def check_dns(
    domain: DomainArgument = None,
    resolver: Annotated[
        str | None,
        typer.Option(
            "--resolver",
            metavar="IP",
            help="Ask this resolver (default: the stack's own, its cache flushed first).",
            show_default=False,
        ),
    ] = None,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Query every record `dns records` lists and say what is missing or wrong."""
    if resolver is not None:
        try:
            resolver = str(ipaddress.ip_address(resolver))
        except ValueError:
            raise UsageError(
                f"--resolver: {resolver[:80]!r} is not an IP address (e.g. 192.0.2.53)"
            ) from None
    stack = lifecycle.Stack.load(directory)
    report = dnscheck.check_stack(stack, domain_argument(domain), resolver)
    if as_json:
        output.as_json({"resolver": report.resolver, "ok": report.ok, "rows": report.rows})
    else:
        output.dns_check_table(report)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)
