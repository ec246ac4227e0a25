"""Options and arguments shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
