"""`check health` on a timer (monitoring.schedule): the postmaster hears of a change, not of
every run.

Each run (`mailstack alert health`, the health timer's command) checks the stack, writes its
items as Prometheus gauges for the metrics service (GAUGES_DIR, read-only in its container)
and compares what it found with what the postmaster was last told (.mailstack/health.json):
the overall verdict and each item that does not pass. A difference is mailed, once: the
items that changed, each with its fix, and those back to PASS as resolved. The record moves
on only when the mail went out, so a change that could not be mailed (the stack itself
down) is mailed at the first run that can, unless it was over by then; that run exits 1,
and the timer's OnFailure= records it for `status` (runtime/alerts.py). The daily summary
(`alert summary`, monitoring.daily_summary) mails every item's verdict whatever changed.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mailstack.runtime import healthprobes, notify
from mailstack.runtime.health import HealthItem, HealthReport
from mailstack.stack.stackdir import Stack, StackDir, atomic_write
from mailstack.verdict import PASS, Verdict

STATE_FILE = "health.json"
GAUGES_DIR = "metrics"  # under .mailstack/: mounted read-only into the metrics service
GAUGES_FILE = "health.prom"
METRICS_GID = 978  # the metrics image's group (compose/metrics/Dockerfile): reads the gauges
GAUGE_VALUES = {Verdict.PASS: 0, Verdict.WARN: 1, Verdict.FAIL: 2}
MAILED = "the postmaster was mailed"
UNCHANGED = "unchanged: not mailed"


@dataclass(frozen=True)
class Told:
    """What the postmaster knows: the overall verdict and each item that did not pass."""

    verdict: Verdict = PASS
    items: Mapping[str, Verdict] = field(default_factory=dict)

    @classmethod
    def of(cls, report: HealthReport) -> Told:
        return cls(report.verdict, {item.name: item.verdict for item in report.failing()})


@dataclass(frozen=True)
class Change:
    name: str
    before: Verdict
    after: Verdict
    item: HealthItem | None  # as found now (None: the item is no longer checked)

    def line(self) -> str:
        if self.after == PASS or self.item is None:  # not found now: it passes (changes())
            found = f": {self.item.detail}" if self.item else " (no longer checked)"
            return f"resolved (was {self.before}): {self.name}{found}"
        fix = f"\n    fix: {self.item.fix}" if self.item.fix else ""
        return f"{self.after} (was {self.before}): {self.name}: {self.item.detail}{fix}"


@dataclass(frozen=True)
class Notice:
    """A mail to send: the changes, and what the postmaster then knows."""

    subject: str
    body: str
    changes: tuple[Change, ...]
    told: Told


def changes(told: Told, report: HealthReport) -> tuple[Change, ...]:
    """Each item whose verdict differs from what the postmaster was told, in report order
    (then those no longer checked)."""
    now = Told.of(report)
    found = {item.name: item for item in report.items}
    names = [item.name for item in report.items] + sorted(set(told.items) - set(found))
    return tuple(
        Change(name, told.items.get(name, PASS), now.items.get(name, PASS), found.get(name))
        for name in names
        if told.items.get(name, PASS) != now.items.get(name, PASS)
    )


def decide(told: Told | None, report: HealthReport, host: str, root: Path) -> Notice | None:
    """The mail a run sends, or None when the postmaster already knows this state. No record
    yet counts as told "every item passes": a first run that finds trouble mails it."""
    before = told or Told()
    now = Told.of(report)
    found = changes(before, report)
    if not found:  # the verdict follows the items: no item changed, nothing did
        return None
    parts = [f"{c.name} {'resolved' if c.after == PASS else c.after}" for c in found]
    summary = ", ".join(parts[:3]) + (f" and {len(parts) - 3} more" if len(parts) > 3 else "")
    if now.verdict == PASS:
        subject = f"[mailstack] {host}: health resolved: every item passes ({summary})"
    else:
        subject = f"[mailstack] {host}: health {now.verdict}: {summary}"
    still = [
        f"  {item}"
        for item in report.failing()
        if item.name not in {change.name for change in found}
    ]
    body = "\n".join(
        [
            f"mailstack's health check on {socket.gethostname()} (stack {root}) found "
            f"{now.verdict}, after {before.verdict} when you were last told.",
            "",
            "What changed:",
            *(f"  {change.line()}" for change in found),
            *(["", "Still not passing (you were told):", *still] if still else []),
            "",
            f"Every item: `mailstack check health --dir {root}`. This mail comes only when "
            "the verdict or the set of failing items changes (monitoring.schedule).",
            "",
        ]
    )
    return Notice(subject, body, found, now)


def summary(report: HealthReport, host: str, root: Path) -> tuple[str, str]:
    """(subject, body) of the daily summary: every item's verdict, with the fix of each that
    does not pass."""
    failing = len(report.failing())
    subject = f"[mailstack] {host}: daily health summary: {report.verdict}" + (
        f" ({failing} item{'' if failing == 1 else 's'} not passing)" if failing else ""
    )
    body = "\n".join(
        [
            f"mailstack's daily health summary of {socket.gethostname()} (stack {root}): "
            f"{report.verdict}, {len(report.items)} items.",
            "",
            *(str(item) for item in report.items),
            "",
            "Sent daily at monitoring.daily_summary; changes are mailed as they happen "
            "(monitoring.schedule).",
            "",
        ]
    )
    return subject, body


# --- the record and the gauges ------------------------------------------------------------------


def read_told(stack_dir: StackDir) -> Told | None:
    """What the postmaster was last told; None when there is no readable record."""
    try:
        raw = json.loads((stack_dir.state_dir / STATE_FILE).read_text())
        items = {str(name): Verdict(verdict) for name, verdict in raw["told"]["items"].items()}
        return Told(Verdict(raw["told"]["verdict"]), items)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def write_state(stack_dir: StackDir, told: Told, report: HealthReport, when: str) -> None:
    state = {
        "checked": when,
        "verdict": report.verdict,
        "told": {"verdict": told.verdict, "items": dict(told.items)},
    }
    data = json.dumps(state, indent=1) + "\n"
    atomic_write(stack_dir.state_dir / STATE_FILE, data.encode(), 0o600)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def gauges(report: HealthReport, now: float) -> str:
    """The report in Prometheus's text format: each item's verdict, the overall one, when."""
    lines = [
        "# HELP mailstack_health_item The verdict of each check health item at the last "
        "run: 0 pass (or exempt), 1 warn, 2 fail.",
        "# TYPE mailstack_health_item gauge",
        *(
            f'mailstack_health_item{{item="{_label(item.name)}",service="{_label(item.service)}"}}'
            f" {GAUGE_VALUES[item.verdict]}"
            for item in report.items
        ),
        "# HELP mailstack_health_verdict The overall verdict at the last run: 0 pass, 1 warn, "
        "2 fail.",
        "# TYPE mailstack_health_verdict gauge",
        f"mailstack_health_verdict {GAUGE_VALUES[report.verdict]}",
        "# HELP mailstack_health_last_run_timestamp_seconds When check health last ran.",
        "# TYPE mailstack_health_last_run_timestamp_seconds gauge",
        f"mailstack_health_last_run_timestamp_seconds {now:.0f}",
        "# HELP mailstack_health_check_seconds How long the last check health took.",
        "# TYPE mailstack_health_check_seconds gauge",
        f"mailstack_health_check_seconds {report.seconds:.3f}",
    ]
    return "\n".join(lines) + "\n"


def write_gauges(stack_dir: StackDir, report: HealthReport, now: float) -> Path:
    """The gauges where the metrics service reads them: a directory of their own (the mount),
    readable by the metrics group only."""
    directory = stack_dir.state_dir / GAUGES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / GAUGES_FILE
    atomic_write(path, gauges(report, now).encode(), 0o640)
    for target, mode in ((directory, 0o750), (path, 0o640)):
        with contextlib.suppress(PermissionError):  # not root: the operator's own ids stay
            os.chown(target, -1, METRICS_GID)
        target.chmod(mode)
    return path


# --- a run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchResult:
    verdict: Verdict
    changes: tuple[str, ...]  # each changed item's line
    outcome: str  # MAILED, UNCHANGED, or why it could not be mailed
    gauges: str  # where they were written

    @property
    def mailed(self) -> bool:
        return self.outcome in (MAILED, UNCHANGED)

    def __str__(self) -> str:
        changed = "; ".join(line.split("\n", 1)[0] for line in self.changes)
        return f"check health: {self.verdict}; {self.outcome}" + (
            f" ({changed})" if changed else ""
        )


Check = Callable[[Stack], HealthReport]
Send = Callable[[Stack, str, str], bool]


def watch(
    stack: Stack,
    check: Check | None = None,
    send: Send | None = None,
    now: datetime.datetime | None = None,
) -> WatchResult:
    """One run of the health timer: check, write the gauges, mail a change, record it
    (check and send: healthprobes.check_health and notify.mail_postmaster unless given)."""
    moment = now or datetime.datetime.now(datetime.UTC)
    report = (check or healthprobes.check_health)(stack)
    written = write_gauges(stack.dir, report, moment.timestamp())
    told = read_told(stack.dir)
    notice = decide(told, report, stack.config.hostname, stack.dir.root)
    when = moment.isoformat(timespec="seconds")
    if notice is None:
        write_state(stack.dir, told or Told(), report, when)
        return WatchResult(report.verdict, (), UNCHANGED, str(written))
    lines = tuple(change.line() for change in notice.changes)
    if not (send or notify.mail_postmaster)(stack, notice.subject, notice.body):
        write_state(stack.dir, told or Told(), report, when)
        outcome = (
            "mailing the postmaster FAILED (the stack did not take it; the next run tries again)"
        )
        return WatchResult(report.verdict, lines, outcome, str(written))
    write_state(stack.dir, notice.told, report, when)
    return WatchResult(report.verdict, lines, MAILED, str(written))


def mail_summary(
    stack: Stack,
    check: Check | None = None,
    send: Send | None = None,
) -> WatchResult:
    """The daily summary: check (the gauges written too), mail every item's verdict."""
    report = (check or healthprobes.check_health)(stack)
    written = write_gauges(stack.dir, report, time.time())
    subject, body = summary(report, stack.config.hostname, stack.dir.root)
    mailed = (send or notify.mail_postmaster)(stack, subject, body)
    outcome = MAILED if mailed else "mailing the postmaster FAILED"
    return WatchResult(report.verdict, (), outcome, str(written))
