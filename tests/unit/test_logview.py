"""`mailstack logs --since/--grep/--tail`: the options checked before Compose runs, the
arguments Compose gets, and the filter; bad input is one line naming the option."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailstack.errors import MailstackError, UsageError
from mailstack.runtime import logview
from mailstack.stack import stackfiles
from mailstack.stack.stackdir import Stack, StackDir
from tests.unit.clirun import invoke, one_error_line


@dataclass
class LoggingCompose:
    """Compose's `logs`: the lines it would print, and the arguments it got."""

    lines: list[str] = field(default_factory=list)
    code: int = 0
    got: list[list[str]] = field(default_factory=list)

    def stream(self, args: list[str], on_line: Callable[[str], None]) -> tuple[int, str]:
        self.got.append(args)
        for line in self.lines:
            on_line(line)
        return self.code, "" if self.code == 0 else "no such service\n"


def _stack(tmp_path: Path, compose: LoggingCompose, **settings: object) -> Stack:
    config = stackfiles.initial_config(
        "mail.example.test", "example.test", {"mode": "sandbox", **settings}
    )
    stackfiles.init_stack(tmp_path / "stack", config, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    return Stack(stack_dir, stack_dir.load_config(), compose)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), (" 5m ", 300)],
)
def test_a_duration_becomes_seconds_ago(given: str, seconds: int) -> None:
    assert logview.parse_since(given) == f"{seconds}s"


def test_a_date_or_time_becomes_an_rfc3339_time_local_when_it_names_no_zone() -> None:
    assert logview.parse_since("2026-12-06T08:00:00Z") == "2026-12-06T08:00:00+00:00"
    assert logview.parse_since("2026-12-06T08:00+01:00") == "2026-12-06T08:00:00+01:00"
    local = datetime.datetime(2026, 12, 6).astimezone().isoformat(timespec="seconds")
    assert logview.parse_since("2026-12-06") == local


@pytest.mark.parametrize("given", ["yesterday", "5 minutes", "-5m", "5w", "2026-13-01", "m", ""])
def test_a_since_that_is_neither_is_refused_naming_the_option(given: str) -> None:
    with pytest.raises(UsageError, match=r"^--since: .* is neither a duration"):
        logview.parse_since(given)


def test_a_pattern_that_is_no_regular_expression_is_refused() -> None:
    with pytest.raises(UsageError, match=r"^--grep: '\(unclosed' is not a regular expression"):
        logview.parse_pattern("(unclosed", ignore_case=False)


def test_since_and_grep_look_at_every_line_unless_tail_says_otherwise() -> None:
    assert logview.query(None).tail == logview.DEFAULT_TAIL
    assert logview.query(None, since="1h").tail is None
    assert logview.query(None, grep="reject").tail is None
    assert logview.query(None, grep="reject", tail=500).tail == 500
    with pytest.raises(UsageError, match=r"^--tail: -1 is negative"):
        logview.query(None, tail=-1)


def test_compose_gets_the_query_as_its_own_arguments() -> None:
    wanted = logview.query("postfix", follow=True, since="10m", grep="NOQUEUE")
    assert logview.compose_arguments(wanted) == [
        "logs", "--tail", "all", "--since", "600s", "--no-color", "--follow", "postfix",
    ]  # fmt: skip
    assert logview.compose_arguments(logview.query(None)) == ["logs", "--tail", "100"]


def test_grep_shows_the_matching_lines_only_and_counts_them(tmp_path: Path) -> None:
    compose = LoggingCompose(
        lines=[
            "postfix-1  | NOQUEUE: reject: RCPT from unknown[192.0.2.9]",
            "postfix-1  | connect from client.example.net",
            "postfix-1  | noqueue: lower case",
        ]
    )
    shown: list[str] = []
    wanted = logview.query("postfix", grep="NOQUEUE", ignore_case=True)
    assert logview.show(_stack(tmp_path, compose), wanted, shown.append) == 2
    assert shown == [compose.lines[0], compose.lines[2]]
    assert compose.got == [["logs", "--tail", "all", "--no-color", "postfix"]]


def test_a_service_the_stack_does_not_run_is_refused_with_the_ones_it_does(
    tmp_path: Path,
) -> None:
    compose = LoggingCompose()
    with pytest.raises(UsageError) as refused:
        stack = _stack(tmp_path, compose, features={"antivirus": False})
        logview.show(stack, logview.query("postfx", grep="x"), print)
    assert str(refused.value).startswith("logs: 'postfx' is not a service of this stack: one of ")
    assert "postfix" in str(refused.value) and "clamav" not in str(refused.value)  # off here
    assert compose.got == []


def test_compose_failing_is_one_line(tmp_path: Path) -> None:
    compose = LoggingCompose(code=1)
    with pytest.raises(MailstackError, match=r"^docker compose logs failed \(exit 1\): no such"):
        logview.show(_stack(tmp_path, compose), logview.query(None, grep="x"), print)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--since", "last tuesday"], "--since: 'last tuesday' is neither a duration"),
        (["--grep", "[a-"], "--grep: '[a-' is not a regular expression"),
    ],
)
def test_the_cli_refuses_bad_options_with_one_line_before_reading_the_stack(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    code, output = invoke("logs", *args, "--dir", str(tmp_path / "nothing-here"))
    assert code == 2
    assert one_error_line(output).startswith(expected)
