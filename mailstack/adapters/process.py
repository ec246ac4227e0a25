"""The one way mailstack runs an external program: argument list, timeout, captured output."""

from __future__ import annotations

import logging
import shlex
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mailstack.errors import ExternalCommandFailed, MailstackError

log = logging.getLogger("mailstack.adapters.process")


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


def pipe(producer: Sequence[str], consumer: Sequence[str], *, timeout: float, what: str) -> None:
    """Run producer | consumer, never through a shell, the data streamed rather than held
    (`docker save | docker load` of several images); a failure of either quotes its output."""
    log.debug("pipe: %s | %s", shlex.join(producer), shlex.join(consumer))
    try:
        source = subprocess.Popen(  # argv lists built by mailstack, never shell text
            list(producer), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
    except FileNotFoundError:
        raise MailstackError(f"{producer[0]} is not installed or not on PATH") from None
    output, errors = source.stdout, source.stderr
    if output is None or errors is None:  # both PIPE above: never
        raise MailstackError(f"{what}: no pipe from {producer[0]}")
    try:
        sink = subprocess.run(
            list(consumer), stdin=output, capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        source.kill()
        raise MailstackError(f"{consumer[0]} is not installed or not on PATH") from None
    except subprocess.TimeoutExpired:
        source.kill()
        raise ExternalCommandFailed(f"{what} (timed out after {timeout:.0f}s)", "") from None
    finally:
        output.close()
    source_errors = errors.read()
    source.wait()
    if source.returncode != 0:
        raise ExternalCommandFailed(
            f"{what} ({Path(producer[0]).name} exit {source.returncode})",
            source_errors.decode(errors="replace"),
        )
    if sink.returncode != 0:
        raise ExternalCommandFailed(
            f"{what} ({Path(consumer[0]).name} exit {sink.returncode})",
            (sink.stderr + sink.stdout).decode(errors="replace"),
        )


def stream(
    argv: Sequence[str],
    on_line: Callable[[str], None],
    *,
    timeout: float = 86400,
    what: str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    """Run argv, handing each stdout line to on_line as it comes; return (exit code, stderr).

    For long jobs that report progress line by line (restic --json). Never through a shell.
    """
    label = what or Path(argv[0]).name
    log.debug("stream: %s", shlex.join(argv))
    try:
        child = subprocess.Popen(  # argv is a list built by mailstack, never shell text
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
        )
    except FileNotFoundError:
        raise MailstackError(f"{argv[0]} is not installed or not on PATH") from None
    assert child.stdout is not None and child.stderr is not None  # noqa: S101  # PIPE above
    error_stream = child.stderr
    stderr_chunks: list[bytes] = []
    # stderr is drained beside stdout, so a chatty child never blocks on a full pipe.
    reader = threading.Thread(target=lambda: stderr_chunks.append(error_stream.read()))
    reader.start()
    try:
        for raw in child.stdout:
            on_line(raw.decode(errors="replace").rstrip("\n"))
        code = child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise ExternalCommandFailed(f"{label} (timed out after {timeout:.0f}s)", "") from None
    except BaseException:
        child.kill()
        child.wait()
        raise
    finally:
        reader.join()
    return code, b"".join(stderr_chunks).decode(errors="replace")
