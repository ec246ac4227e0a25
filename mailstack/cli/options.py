"""Options and arguments shared by several commands."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from mailstack.errors import UsageError

StackDirOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        envvar="MAILSTACK_DIR",
        help="The stack directory (default: $MAILSTACK_DIR, else the current directory).",
        file_okay=False,
        show_default=False,
    ),
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

# `backup schedule` and `tls schedule`: a host timer on or off, and where its units go.
OnOffArgument = Annotated[
    str, typer.Argument(metavar="on|off", help="Turn the timer on or off.", show_default=False)
]
UnitDirOption = Annotated[Path, typer.Option(help="Where the systemd units go.", show_default=True)]

# `check dns` and `tls rollover`: the DNS resolver to ask instead of the stack's own.
ResolverOption = Annotated[
    str | None,
    typer.Option(
        "--resolver",
        metavar="IP",
        help="Ask this resolver (default: the stack's own, its cache flushed first).",
        show_default=False,
    ),
]


def resolver_address(resolver: str | None) -> str | None:
    """--resolver as a normalised IP address; one line naming the option when it is not."""
    if resolver is None:
        return None
    try:
        return str(ipaddress.ip_address(resolver))
    except ValueError:
        raise UsageError(
            f"--resolver: {resolver[:80]!r} is not an IP address (e.g. 192.0.2.53)"
        ) from None
