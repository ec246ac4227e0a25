"""Options shared by every command."""

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
