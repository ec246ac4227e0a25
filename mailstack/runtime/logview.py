"""`mailstack logs`: which lines of the services' logs to show, checked before Compose runs.

Every service logs to its container's stdout and stderr; Docker keeps them (json-file,
rotated at 3 x 10 MB per container, or journald when logging.driver says so) and
`docker compose logs` reads them back. This module turns the operator's --since, --tail and
--grep into Compose's arguments and a line filter, refusing a bad value with one line.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass

from mailstack import services
from mailstack.errors import MailstackError, UsageError
from mailstack.stack.stackdir import Stack

DEFAULT_TAIL = 100  # lines per service when neither --since nor --grep widens the view
_RELATIVE = re.compile(r"(?:\d+[dhms])+")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


@dataclass(frozen=True)
class LogQuery:
    service: str | None = None
    follow: bool = False
    tail: int | None = DEFAULT_TAIL  # None: every line Docker still keeps
    since: str | None = None  # as Compose takes it: seconds ago ("90s") or an RFC 3339 time
    pattern: re.Pattern[str] | None = None


def parse_since(text: str) -> str:
    """--since: a duration ago (30m, 2h, 1d, 1h30m) or a date/time (2026-12-06,
    2026-12-06T08:00, with or without a zone; without one it is the host's local time).
    Returned as Compose's --since takes it."""
    value = text.strip()
    if _RELATIVE.fullmatch(value):
        seconds = sum(
            int(amount) * _UNIT_SECONDS[unit] for amount, unit in re.findall(r"(\d+)(\w)", value)
        )
        return f"{seconds}s"
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--since: {text!r} is neither a duration (30m, 2h, 1d, 1h30m) "
            "nor a date/time (2026-12-06, 2026-12-06T08:00, 2026-12-06T08:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the host's local time, as `date` shows it
    return moment.isoformat(timespec="seconds")


def parse_pattern(text: str, ignore_case: bool) -> re.Pattern[str]:
    """--grep: a Python regular expression, searched anywhere in each line."""
    try:
        return re.compile(text, re.IGNORECASE if ignore_case else 0)
    except re.error as error:
        raise UsageError(f"--grep: {text!r} is not a regular expression ({error})") from None


def query(
    service: str | None,
    *,
    follow: bool = False,
    tail: int | None = None,
    since: str | None = None,
    grep: str | None = None,
    ignore_case: bool = False,
) -> LogQuery:
    """The operator's options, checked. Without --tail, --since and --grep look at every
    line Docker keeps (a search of the last 100 lines alone would miss what was asked for)."""
    if tail is not None and tail < 0:
        raise UsageError(f"--tail: {tail} is negative: give a number of lines, 0 or more")
    widened = since is not None or grep is not None
    return LogQuery(
        service=service,
        follow=follow,
        tail=tail if tail is not None else (None if widened else DEFAULT_TAIL),
        since=parse_since(since) if since is not None else None,
        pattern=parse_pattern(grep, ignore_case) if grep is not None else None,
    )


def compose_arguments(wanted: LogQuery) -> list[str]:
    """`docker compose logs …` for the query (colors off when lines are filtered)."""
    args = ["logs", "--tail", "all" if wanted.tail is None else str(wanted.tail)]
    if wanted.since is not None:
        args += ["--since", wanted.since]
    if wanted.pattern is not None:
        args.append("--no-color")
    if wanted.follow:
        args.append("--follow")
    if wanted.service:
        args.append(wanted.service)
    return args


def check_service(stack: Stack, service: str | None) -> None:
    """An unknown service is refused with the ones there are (Compose's own message names
    neither)."""
    if service is None:
        return
    known = [each.name for each in services.SERVICES if each.runs_in(stack.config)]
    if service not in known:
        raise UsageError(
            f"logs: {service!r} is not a service of this stack: one of {', '.join(sorted(known))}"
        )


def show(stack: Stack, wanted: LogQuery, write: Callable[[str], None]) -> int:
    """Show the lines; with --grep, the matching ones only. The number of lines written
    (without --grep, Compose writes to the terminal itself and this is -1)."""
    check_service(stack, wanted.service)
    args = compose_arguments(wanted)
    if wanted.pattern is None:
        stack.compose.run(args, capture=False, check=False, timeout=10**7)
        return -1
    pattern = wanted.pattern
    shown = 0

    def keep(line: str) -> None:
        nonlocal shown
        if pattern.search(line):
            write(line)
            shown += 1

    code, error = stack.compose.stream(args, keep)
    if code != 0:
        raise MailstackError(f"docker compose logs failed (exit {code}): {error.strip()}")
    return shown
