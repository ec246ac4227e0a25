"""The one way mailstack runs an external program: argument list, timeout, captured output."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from mailstack.errors import ExternalCommandFailed, MailstackError

log = logging.getLogger("mailstack.process")


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,  # mirrors subprocess.run
    timeout: float = 120,
    check: bool = True,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv (never through a shell); map failures to errors quoting the program's output."""
    label = what or Path(argv[0]).name
    log.debug("run: %s", shlex.join(argv))
    try:
        result = subprocess.run(
            list(argv),
            input=input,
            # Without input, never let a child read the operator's terminal (prompts follow).
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=capture,
            timeout=timeout,
            check=False,
            cwd=cwd,
            env=dict(env) if env is not None else None,
        )
    except FileNotFoundError:
        raise MailstackError(f"{argv[0]} is not installed or not on PATH") from None
    except subprocess.TimeoutExpired as e:
        output = (e.stderr or b"") + (e.stdout or b"")
        raise ExternalCommandFailed(
            f"{label} (timed out after {timeout:.0f}s)", output.decode(errors="replace")
        ) from None
    if check and result.returncode != 0:
        output = (result.stderr or b"") + (result.stdout or b"")
        raise ExternalCommandFailed(
            f"{label} (exit {result.returncode})", output.decode(errors="replace")
        )
    return result
