"""Turning result objects into text or JSON; the only place that prints."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mailstack.adapters.compose import ServiceState
from mailstack.errors import MailstackError
from mailstack.mailauth.dnscheck import DnsCheckReport
from mailstack.runtime import schedule
from mailstack.runtime.lifecycle import StackStatus, UpResult
from mailstack.runtime.schedule import Timer
from mailstack.stack.config import Config
from mailstack.stack.merge import Action
from mailstack.stack.stackdir import CANDIDATE_SUFFIX, RenderReport, Stack
from mailstack.verdict import Verdict

P = ParamSpec("P")
R = TypeVar("R")

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

VERDICT_STYLES = {Verdict.PASS: "green", Verdict.FAIL: "bold red", Verdict.WARN: "yellow"}


def error(message: str, hint: str | None = None) -> None:
    lines = message.splitlines() or [""]
    errors.print("[bold red]error:[/] ", end="", soft_wrap=True)
    errors.print(lines[0], markup=False, soft_wrap=True)
    for line in lines[1:]:
        errors.print(f"  {line}", markup=False, soft_wrap=True)
    if hint:
        errors.print("[dim]hint:[/] ", end="", soft_wrap=True)
        errors.print(hint, markup=False, soft_wrap=True)


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """The one error path: a MailstackError becomes one red line (+ hint) and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except MailstackError as e:
            error(e.message, e.hint)
            raise typer.Exit(e.exit_code) from None

    return wrapper


def warn(message: str) -> None:
    errors.print("[yellow]warning:[/] ", end="", soft_wrap=True)
    errors.print(message, markup=False, soft_wrap=True)


def info(message: str) -> None:
    console.print(message, markup=False, soft_wrap=True)


def note(message: str) -> None:
    """A line for the operator on stderr, beside output meant for a file or a pipe."""
    errors.print(message, markup=False, soft_wrap=True)


def verbatim(text: str) -> None:
    """Text exactly as given (a script, a key): no wrapping, no tab expansion."""
    sys.stdout.write(text)
    sys.stdout.flush()


def progress(message: str) -> None:
    errors.print(f"[dim]…[/] {message}", soft_wrap=True)


def as_json(value: Any) -> None:
    sys.stdout.write(json.dumps(plain(value), indent=2, sort_keys=True) + "\n")


def listing(items: list[Any], as_json_output: bool) -> None:
    """A list of result objects: JSON, or one line each."""
    if as_json_output:
        as_json(items)
        return
    for item in items:
        info(str(item))


def plain(value: Any) -> Any:  # noqa: PLR0911  # one return per kind of value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


_VERBS = {
    Action.WRITE: "wrote",
    Action.MERGED: "merged your edits into",
    Action.DELETE: "removed (dropped by the template)",
    Action.DELETED_BY_OPERATOR: "left deleted (you removed it)",
    Action.KEPT_DROPPED: "kept your edited file (the template dropped it)",
    Action.CONFLICT: "CONFLICT in",
}


def render_report(report: RenderReport) -> None:
    changed = report.changed()
    kept = [o.path for o in report.outcomes if o.action is Action.KEEP]
    written = [o for o in changed if o.action is Action.WRITE]
    if len(written) > 10:  # a first render: a count says enough
        info(f"  wrote {len(written)} generated files")
        changed = [o for o in changed if o.action is not Action.WRITE]
    for outcome in changed:
        info(f"  {_VERBS.get(outcome.action, outcome.action.value)} {outcome.path}")
    if kept:
        info(f"  kept your edits to {', '.join(kept)}")
    if not changed and not written:
        info("  nothing to change")
    for path in report.conflicts:
        errors.print(
            f"[bold red]conflict:[/] {path}: your file is untouched; the merge with the new "
            f"render is in {path}{CANDIDATE_SUFFIX} (diff3 markers). Edit {path} to the result "
            f"you want, then run `mailstack resolve {path}`.",
            soft_wrap=True,
        )


def backup_password_notice(stack_dir: Path) -> None:
    """Said once, when the backup repository password is made."""
    errors.print("[bold yellow]store this elsewhere:[/] ", end="", soft_wrap=True)
    errors.print(
        f"the backup password is in {stack_dir / 'secrets' / 'backup_password'}. Copy it now "
        "to a password manager or a safe place off this host: without it no backup can be "
        "read, and a lost host takes its copy with it.",
        markup=False,
        soft_wrap=True,
    )


def _health_cell(service: ServiceState) -> str:
    """Docker's health, or "failing (N)" from the first failed check on (Docker waits for its
    `retries` before it says unhealthy)."""
    health = service.health or "-"
    colour = {"healthy": "green", "unhealthy": "red", "starting": "yellow"}.get(health, "")
    if service.failing_checks and health != "unhealthy":
        health, colour = f"failing ({service.failing_checks})", "red"
    return f"[{colour}]{health}[/]" if colour else health


def status_table(status: StackStatus) -> None:
    table = Table(title=f"stack {status.project}")
    for column in ("service", "state", "health", "status", "ports"):
        table.add_column(column)
    for service in status.services:
        table.add_row(
            service.service,
            service.state,
            _health_cell(service),
            service.status,
            "\n".join(service.ports),
        )
    if not status.services:
        info(f"stack {status.project}: no containers (run `mailstack up`)")
    else:
        console.print(table)
    for service in status.services:
        if service.failing_checks:
            warn(f"{service.service}: healthcheck failed: {service.last_check or '(no output)'}")
    if status.relay_refused:
        warn(status.relay_refused)
    for path in status.conflicts:
        warn(f"unresolved render conflict: {path} (see {path}{CANDIDATE_SUFFIX})")
    for path in status.deleted_by_operator:
        info(f"note: {path} was deleted by you; mailstack does not re-create it")
    for path in status.kept_dropped:
        info(f"note: {path} is no longer generated but kept because you edited it")
    _host_runs(status)


def _host_runs(status: StackStatus) -> None:
    """What the host's timers did lately: security runs, alerts, certificate renewal."""
    (warn if status.security_pending else info)(status.security)
    if status.security_last_run.startswith("failed"):
        warn(f"the last unattended security update {status.security_last_run}")
    elif status.security_last_run:
        info(f"last daily security run: {status.security_last_run}")
    if status.last_alert:
        warn(f"alert: {status.last_alert}")
    renewal = status.certificate_renewal
    if renewal and not renewal.ok:
        warn(
            f"certificate renewal failed at {renewal.checked}: {renewal.error} "
            f"(the certificate served expires {renewal.not_after or 'unknown'})"
        )


def up_result(result: UpResult) -> None:
    if result.migrations:
        info(f"applied migrations: {', '.join(result.migrations)}")
    state = "healthy" if result.status.healthy else "started"
    info(f"stack {result.status.project} {state} in {result.seconds:.0f}s")
    if result.reloaded:
        info(f"new certificate in tls/: reloaded {', '.join(result.reloaded)}")
    for note in result.notes:
        info(note)


def dns_check_table(report: DnsCheckReport) -> None:
    """`check dns`: one row per record, the failures' fixes below the table."""
    table = Table(title=f"DNS as resolver {report.resolver} sees it", show_lines=False)
    for column in ("record", "expected", "found", "verdict"):
        table.add_column(column, overflow="fold")
    for row in report.rows:
        table.add_row(
            Text(f"{row.kind} {row.name}"),
            Text(row.expected),
            Text(row.found),
            Text(row.verdict, style=VERDICT_STYLES[row.verdict]),
        )
    console.print(table)
    for row in report.rows:
        if row.fix:
            info(f"{row.verdict}: {row.kind} {row.name}: {row.fix}")
    failed = len(report.failures)
    info(
        f"{len(report.rows)} checks, {failed} failed"
        if failed
        else f"{len(report.rows)} checks passed"
    )


def timer_switch(
    state: str,
    timer_for: Callable[[Path, Config], Timer],
    unit_dir: Path,
    stack: Stack,
    json_output: bool,
) -> None:
    """`... schedule on|off`: the stack's timer installed or removed, and said."""
    result = schedule.switch(state, timer_for(stack.dir.root, stack.config), unit_dir)
    as_json(result) if json_output else info(str(result))
