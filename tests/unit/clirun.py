"""Running the CLI in the unit tests (Typer's CliRunner) and reading its one error line."""

from __future__ import annotations

from typer.testing import CliRunner

from mailstack.cli.main import app

runner = CliRunner()


def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    """The exit code and the output; a traceback (an exception other than the exit) fails."""
    result = runner.invoke(app, list(args), input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def one_error_line(text: str) -> str:
    """The one `error:` line of a refusal (a hint may follow), without its prefix."""
    lines = [line for line in text.splitlines() if not line.startswith("hint:")]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: ")
    return lines[0].removeprefix("error: ")
