"""Alerts that reach a person: a host timer that fails mails the postmaster.

Every timer mailstack installs (runtime/schedule.py) names `OnFailure=` a template unit of
its stack, `mailstack-alert-<project>@.service`, whose one command is
`mailstack alert unit-failed <the failed unit>`. That command mails the postmaster through
the stack (runtime/notify.py) what failed, when, and the unit's last journal lines, and
records the alert in .mailstack/alerts.json, which `status` shows for a week. An alert that
cannot be mailed (the stack itself is down) is still recorded, and says so. A unit that keeps
failing (the per-minute host jobs) is mailed about once an hour, not once a run.
"""

from __future__ import annotations

import datetime
import json
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass

from mailstack.adapters import process
from mailstack.errors import MailstackError, UsageError
from mailstack.runtime import notify
from mailstack.stack.stackdir import Stack, StackDir, atomic_write

ALERTS_FILE = "alerts.json"
KEPT = 50  # the newest alerts kept in the record
SHOWN_FOR = datetime.timedelta(days=7)  # how long `status` shows the newest
JOURNAL_LINES = 40
QUIET_FOR = datetime.timedelta(hours=1)  # one mail per unit per hour at most
MAILED = "the postmaster was mailed"
NOT_AGAIN = "not mailed again"  # mailed within the hour already
_UNIT_SUFFIXES = (".service", ".timer")


@dataclass(frozen=True)
class Alert:
    time: str  # UTC, ISO 8601
    unit: str
    what: str  # for people: "the daily backup"
    outcome: str  # MAILED, or why not

    @property
    def told(self) -> bool:
        """The postmaster has this failure: mailed now, or within the hour."""
        return self.outcome == MAILED or self.outcome.startswith(NOT_AGAIN)

    def line(self) -> str:
        return f"{self.what} failed at {self.time} ({self.unit}; {self.outcome})"


def checked_unit(unit: str) -> str:
    """A systemd unit name as OnFailure= hands it over: letters, digits and :-_.@\\ only."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.@\\")
    if not unit or len(unit) > 256 or not set(unit) <= allowed or not unit.endswith(_UNIT_SUFFIXES):
        raise UsageError(
            f"unit: {unit[:80]!r} is not a systemd unit name (NAME.service or NAME.timer)"
        )
    return unit


def describe(unit: str, known: dict[str, str]) -> str:
    """What the unit does, for the subject: "the daily backup" for one of the stack's timers,
    else the unit's own name."""
    name = unit.rsplit(".", 1)[0]
    return f"the {known[name]}" if name in known else unit


def journal_tail(unit: str, run: Callable[[list[str]], str] | None = None) -> str:
    """The unit's last journal lines; a sentence instead where there is no journal."""
    argv = ["journalctl", "--unit", unit, "--lines", str(JOURNAL_LINES), "--no-pager",
            "--output", "short-iso"]  # fmt: skip
    try:
        text = run(argv) if run else process.run(argv, timeout=30).stdout.decode(errors="replace")
    except MailstackError as failure:
        return f"(its journal could not be read: {failure.message})"
    return text.strip() or "(the journal has no lines of it)"


def message(stack: Stack, alert: Alert, journal: str) -> tuple[str, str]:
    """(subject, body) of the alert mail."""
    host = stack.config.hostname
    subject = f"[mailstack] {host}: {alert.what} failed"
    body = (
        f"{alert.what[0].upper()}{alert.what[1:]} failed on {socket.gethostname()} at "
        f"{alert.time} (systemd unit {alert.unit}, stack {stack.dir.root}).\n\n"
        f"Its last journal lines:\n\n{journal}\n\n"
        f"To look further: `systemctl status {alert.unit}`, `journalctl -u {alert.unit}`, "
        f"`mailstack status --dir {stack.dir.root}`. It runs again at its next time; to run "
        f"it now: `systemctl start {alert.unit}`.\n"
    )
    return subject, body


def unit_failed(
    stack: Stack,
    unit: str,
    known: dict[str, str],
    now: datetime.datetime | None = None,
    journal: Callable[[str], str] = journal_tail,
) -> Alert:
    """Mail the postmaster that a unit failed, and record it; the alert as recorded."""
    checked = checked_unit(unit)
    moment = now or datetime.datetime.now(datetime.UTC)
    when = moment.isoformat(timespec="seconds")
    what = describe(checked, known)
    last = last_mailed(stack.dir, checked)
    if last is not None and moment - _parsed(last.time) < QUIET_FOR:
        outcome = f"{NOT_AGAIN}: mailed at {last.time}, within the hour"
    else:
        subject, body = message(stack, Alert(when, checked, what, ""), journal(checked))
        mailed = notify.mail_postmaster(stack, subject, body)
        outcome = MAILED if mailed else "mailing the postmaster FAILED (the stack did not take it)"
    alert = Alert(when, checked, what, outcome)
    record(stack.dir, alert)
    return alert


def send_test(stack: Stack) -> None:
    """A test alert (`mailstack alert test`): proves the path to the postmaster; not recorded.
    A MailstackError says why it could not be sent."""
    subject = f"[mailstack] {stack.config.hostname}: a test alert (nothing failed)"
    body = (
        "This is a test of the alerts mailstack sends when one of its host timers (the daily "
        "backup, certificate renewal, security updates, host jobs) fails. Nothing failed.\n"
    )
    notify.send_to_postmaster(stack, subject, body)


def last_mailed(stack_dir: StackDir, unit: str) -> Alert | None:
    mailed = [item for item in recorded(stack_dir) if item.unit == unit and item.outcome == MAILED]
    return mailed[-1] if mailed else None


def _parsed(time: str) -> datetime.datetime:
    try:
        return datetime.datetime.fromisoformat(time)
    except ValueError:
        return datetime.datetime.min.replace(tzinfo=datetime.UTC)


def recorded(stack_dir: StackDir) -> list[Alert]:
    """The recorded alerts, oldest first; none when the record is missing or unreadable."""
    try:
        raw = json.loads((stack_dir.state_dir / ALERTS_FILE).read_text())
        return [Alert(**item) for item in raw]
    except (OSError, ValueError, TypeError, AttributeError):
        return []


def record(stack_dir: StackDir, alert: Alert) -> None:
    kept = [*recorded(stack_dir), alert][-KEPT:]
    data = json.dumps([asdict(item) for item in kept], indent=1) + "\n"
    atomic_write(stack_dir.state_dir / ALERTS_FILE, data.encode(), 0o600)


def recent(stack_dir: StackDir, now: datetime.datetime | None = None) -> Alert | None:
    """The newest alert of the last week, for `status`."""
    found = recorded(stack_dir)
    if not found:
        return None
    newest = found[-1]
    moment = now or datetime.datetime.now(datetime.UTC)
    return newest if moment - _parsed(newest.time) <= SHOWN_FOR else None
