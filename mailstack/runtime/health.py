"""`mailstack check health`: one verdict per item (mailstack.verdict's scale), each failing or
warning item with its fix in one line. This module is the judging: pure functions from what
was found (and the thresholds below) to a HealthItem; mailstack.runtime.healthprobes finds
it (the containers, the state files, the host reports) and calls these.

Thresholds (docs/health.md has the table, and why):
- the mail queue: WARN from QUEUE_WARN_MESSAGES messages or a message older than
  QUEUE_WARN_AGE; FAIL from QUEUE_FAIL_MESSAGES or older than QUEUE_FAIL_AGE;
- the last backup (daily): WARN after BACKUP_WARN_AGE (one run late), FAIL after
  BACKUP_FAIL_AGE (two runs missed); none at all is a WARN (a new stack);
- the last `backup verify`: FAIL when it failed, WARN when none or older than VERIFY_WARN_AGE;
- the certificate: WARN under judgement.WARN_DAYS days (as `check tls`), FAIL under
  CERT_FAIL_DAYS;
- free space: WARN under FREE_WARN_BYTES or FREE_WARN_SHARE of the file system, FAIL under
  FREE_FAIL_BYTES or FREE_FAIL_SHARE;
- ClamAV's signatures: WARN from SIGNATURES_WARN_AGE, FAIL from SIGNATURES_FAIL_AGE (the
  antivirus practice this project follows: definitions older than two days are a failure);
- the DNS report: the worst verdict in it; WARN when it is older than DNS_REPORT_WARN_AGE or
  missing;
- the images' security fixes (the stored security check, never run here): WARN while one is
  pending, when the daily run failed, or when the check is older than SECURITY_CHECK_WARN_AGE
  where a daily run is expected (production, update.security not off).
The DNS blocklists are judged in mailstack.runtime.blocklists.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mailstack.adapters.compose import ServiceState
from mailstack.errors import EXIT_FAILED, EXIT_HEALTH_WARN, EXIT_OK
from mailstack.images.securitycheck import UpdatesReport
from mailstack.runtime.lifecycle import service_healthy
from mailstack.runtime.relay import Refusal
from mailstack.tls.judgement import WARN_DAYS
from mailstack.verdict import FAIL, PASS, WARN, Verdict, worst

HOUR = 3600
DAY = 24 * HOUR
QUEUE_WARN_MESSAGES = 100
QUEUE_FAIL_MESSAGES = 1000
QUEUE_WARN_AGE = HOUR  # greylisting delays a first delivery by minutes, not hours
QUEUE_FAIL_AGE = DAY  # Postfix keeps trying for 5 days: a day is far past any hiccup
BACKUP_WARN_AGE = 26 * HOUR  # the timer's daily run, with room for its random delay
BACKUP_FAIL_AGE = 50 * HOUR  # two daily runs missed
VERIFY_WARN_AGE = 8 * DAY  # a weekly verify, one day late
CERT_FAIL_DAYS = 7
GIB = 1024**3
FREE_WARN_BYTES, FREE_WARN_SHARE = 5 * GIB, 0.10
FREE_FAIL_BYTES, FREE_FAIL_SHARE = 1 * GIB, 0.02
SIGNATURES_WARN_AGE = DAY  # freshclam checks several times a day; daily.cld changes daily
SIGNATURES_FAIL_AGE = 2 * DAY
DNS_REPORT_WARN_AGE = 3 * HOUR  # made hourly: two runs missed
SECURITY_CHECK_WARN_AGE = 50 * HOUR  # the daily security run: two runs missed


@dataclass(frozen=True)
class HealthItem:
    name: str  # what was judged, e.g. "service db", "recipient lookup"
    service: str  # the service it concerns ("" for the host's items: backups, free space)
    verdict: Verdict
    detail: str  # what was found, one line
    fix: str = ""  # one line; empty on a pass
    exempt: bool = False  # not judged here (e.g. the sandbox's signatures), and the detail says why
    seconds: float = 0.0  # how long finding it took

    def __str__(self) -> str:
        return f"{self.verdict}: {self.name}: {self.detail}" + (
            f" ({self.fix})" if self.fix else ""
        )


@dataclass(frozen=True)
class HealthReport:
    items: tuple[HealthItem, ...]
    seconds: float

    @property
    def verdict(self) -> Verdict:
        return worst(item.verdict for item in self.items)

    @property
    def exit_code(self) -> int:
        """0: every item passes (or is exempt); 1: an item fails; 6: none fails, one warns."""
        return {PASS: EXIT_OK, WARN: EXIT_HEALTH_WARN, FAIL: EXIT_FAILED}[self.verdict]

    def failing(self) -> tuple[HealthItem, ...]:
        return tuple(item for item in self.items if item.verdict != PASS)


def exempt(name: str, service: str, why: str) -> HealthItem:
    return HealthItem(name, service, PASS, f"exempt: {why}", exempt=True)


def first_line(text: str, limit: int = 200) -> str:
    """The first non-empty line of a daemon's output, bounded (an item is one line)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:limit]
    return ""


def ago(seconds: float) -> str:
    """A duration as an operator reads it: 40 s, 12 min, 5 h, 3 days."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * HOUR:
        return f"{seconds // 60} min"
    if seconds < 2 * DAY:
        return f"{seconds // HOUR} h"
    return f"{seconds // DAY} days"


# --- services (what `mailstack status` computes) -----------------------------------------------


def judge_services(
    states: Sequence[ServiceState], expected: Iterable[str]
) -> tuple[HealthItem, ...]:
    """One item per service this stack runs: running and healthy as `status` says (the last
    healthcheck included: Docker says unhealthy only after its retries)."""
    by_name = {state.service: state for state in states}
    return tuple(judge_service(name, by_name.get(name)) for name in expected)


def judge_service(name: str, state: ServiceState | None) -> HealthItem:
    item = f"service {name}"
    logs = f"`mailstack logs {name}` says why"
    if state is None:
        return HealthItem(item, name, FAIL, "no container", f"`mailstack up` creates it; {logs}")
    if state.state != "running":
        return HealthItem(
            item, name, FAIL, f"{state.state} ({state.status})", f"`mailstack up` starts it; {logs}"
        )
    if service_healthy(state):
        return HealthItem(item, name, PASS, f"running, {state.health or 'no healthcheck'}")
    why = first_line(state.last_check) or "(no output)"
    if state.failing_checks:
        detail = f"healthcheck failing ({state.failing_checks} in a row): {why}"
        fix = f"{logs}; docs/health.md says what its healthcheck proves"
        return HealthItem(item, name, FAIL, detail, fix)
    if state.health == "starting":
        return HealthItem(
            item, name, WARN, "starting: its healthcheck has not passed yet", "wait, then ask again"
        )
    return HealthItem(item, name, FAIL, f"{state.health}: {why}", logs)


# --- functional probes --------------------------------------------------------------------------


def judge_probe(name: str, service: str, answer: str | None, error: str, fix: str) -> HealthItem:
    """A functional probe: its answer (one line) or the error that stopped it."""
    if answer is not None:
        return HealthItem(name, service, PASS, answer)
    return HealthItem(name, service, FAIL, first_line(error) or "no answer", fix)


# --- the mail queue -----------------------------------------------------------------------------


def judge_queue(arrivals: Sequence[int], now: float) -> HealthItem:
    """The queue's size and its oldest message's age (arrival times, seconds since the epoch)."""
    name = "mail queue"
    if not arrivals:
        return HealthItem(name, "postfix", PASS, "empty")
    count, oldest = len(arrivals), now - min(arrivals)
    detail = f"{count} message{'' if count == 1 else 's'}, the oldest {ago(oldest)} old"
    fix = "`mailstack queue` lists them with the reason of each delay"
    if count >= QUEUE_FAIL_MESSAGES or oldest >= QUEUE_FAIL_AGE:
        return HealthItem(name, "postfix", FAIL, detail, fix)
    if count >= QUEUE_WARN_MESSAGES or oldest >= QUEUE_WARN_AGE:
        return HealthItem(name, "postfix", WARN, detail, fix)
    return HealthItem(name, "postfix", PASS, detail)


def judge_relay(relays: Sequence[str], refusals: Sequence[Refusal]) -> HealthItem:
    """The relays (relay.host, relay.by_sender_domain): FAIL while one refuses mailstack's
    credentials, naming each that does (the messages it refused wait in the queue, deferred,
    and are retried)."""
    name = "relay host"
    if refusals:
        detail = "; ".join(
            f"{refusal} refuses the credentials: {refusal.waiting}" for refusal in refusals
        )
        fixes = " / ".join(refusal.fix for refusal in refusals)
        return HealthItem(
            name,
            "postfix",
            FAIL,
            detail,
            f"{fixes} stores the right one; `mailstack queue retry --all` sends them now",
        )
    return HealthItem(
        name, "postfix", PASS, f"{', '.join(relays)}: no message waits on refused credentials"
    )


# --- backups ------------------------------------------------------------------------------------


def judge_last_backup(last: datetime.datetime | None, now: datetime.datetime) -> HealthItem:
    name = "last backup"
    schedule = "`mailstack backup create` now; `mailstack backup schedule on` makes one daily"
    if last is None:
        return HealthItem(name, "", WARN, "no backup yet", schedule)
    age = (now - last).total_seconds()
    detail = f"{ago(age)} ago ({_iso(last)})"
    if age >= BACKUP_FAIL_AGE:
        return HealthItem(name, "", FAIL, detail, schedule + "; `journalctl -u` its timer says why")
    if age >= BACKUP_WARN_AGE:
        return HealthItem(name, "", WARN, detail, schedule)
    return HealthItem(name, "", PASS, detail)


def judge_last_verify(
    when: datetime.datetime | None, ok: bool, error: str, now: datetime.datetime
) -> HealthItem:
    name = "last backup verify"
    fix = "`mailstack backup verify` restores a snapshot and compares it"
    if when is None:
        return HealthItem(name, "", WARN, "never verified", fix)
    age = (now - when).total_seconds()
    if not ok:
        why = f": {first_line(error)}" if error else ""
        return HealthItem(
            name, "", FAIL, f"failed {ago(age)} ago{why}", "`mailstack backup verify` shows why"
        )
    detail = f"passed {ago(age)} ago ({_iso(when)})"
    if age >= VERIFY_WARN_AGE:
        return HealthItem(name, "", WARN, detail, fix)
    return HealthItem(name, "", PASS, detail)


# --- certificate, free space, signatures --------------------------------------------------------


def judge_certificate(not_after: datetime.datetime | None, now: datetime.datetime) -> HealthItem:
    name = "certificate"
    renew = "`mailstack check tls` says more; renew it (`mailstack tls renew`, or `render`)"
    if not_after is None:
        return HealthItem(name, "front", FAIL, "tls/cert.pem is missing or unreadable", renew)
    days = (not_after - now).days
    detail = f"{days} days left (until {_iso(not_after)})"
    if days < CERT_FAIL_DAYS:
        return HealthItem(name, "front", FAIL, detail, renew)
    if days < WARN_DAYS:
        return HealthItem(name, "front", WARN, detail, renew)
    return HealthItem(name, "front", PASS, detail)


def judge_free_space(name: str, path: str, total: int, free: int) -> HealthItem:
    share = free / total if total else 0.0
    detail = f"{free / GIB:.1f} GiB free of {total / GIB:.1f} GiB ({share:.0%}) at {path}"
    fix = f"free space on the file system of {path}, or grow it"
    if free < FREE_FAIL_BYTES or share < FREE_FAIL_SHARE:
        return HealthItem(name, "", FAIL, detail, fix)
    if free < FREE_WARN_BYTES or share < FREE_WARN_SHARE:
        return HealthItem(name, "", WARN, detail, fix)
    return HealthItem(name, "", PASS, detail)


def judge_signatures(mtimes: Mapping[str, float], now: float) -> HealthItem:
    """ClamAV's signature databases ({file: modification time}): the newest one's age."""
    name = "antivirus signatures"
    fix = "freshclam keeps them current: `mailstack logs clamav` says why it does not"
    if not mtimes:
        return HealthItem(name, "clamav", FAIL, "no signature database", fix)
    newest = max(mtimes, key=lambda file: mtimes[file])
    age = now - mtimes[newest]
    detail = f"newest {newest}, {ago(age)} old"
    if age >= SIGNATURES_FAIL_AGE:
        return HealthItem(name, "clamav", FAIL, detail, fix)
    if age >= SIGNATURES_WARN_AGE:
        return HealthItem(name, "clamav", WARN, detail, fix)
    return HealthItem(name, "clamav", PASS, detail)


# --- the DNS check's summary (the dns host report) ----------------------------------------------


def judge_dns_report(body: Any, age: int | None) -> HealthItem:
    """The dns host report's index (mailstack.mailauth.dnsreport.index): the worst verdict of
    the server's checks and each domain's, and the report's age (None: no report yet)."""
    name = "dns records"
    make = "`mailstack jobs run` makes it (its timer does, hourly)"
    if age is None:
        return HealthItem(name, "", WARN, "no DNS report yet", make)
    if not isinstance(body, dict) or "error" in body or not isinstance(body.get("domains"), list):
        why = str(body.get("error", "")) if isinstance(body, dict) else ""
        return HealthItem(
            name, "", WARN, f"the last DNS report could not be made: {why}"[:200], make
        )
    verdicts: list[Verdict] = []
    unchecked: list[str] = []
    server = body.get("server")
    for check in (server.get("checks") if isinstance(server, dict) else None) or []:
        verdicts.append(_verdict(check.get("verdict") if isinstance(check, dict) else None))
    for line in body["domains"]:
        if not isinstance(line, dict):
            continue
        if line.get("verdict") is None:
            unchecked.append(str(line.get("domain", "?"))[:80])
        else:
            verdicts.append(_verdict(line["verdict"]))
    found = worst(verdicts)
    domains = len(body["domains"])
    detail = (
        f"{found} for the server and {domains} domain{'' if domains == 1 else 's'}"
        + (f" ({len(unchecked)} not checked: {', '.join(unchecked[:3])})" if unchecked else "")
        + f", checked {ago(age)} ago"
    )
    if found != PASS:
        return HealthItem(name, "", found, detail, "`mailstack check dns` shows each record's fix")
    if unchecked or age >= DNS_REPORT_WARN_AGE:
        return HealthItem(name, "", WARN, detail, make)
    return HealthItem(name, "", PASS, detail)


# --- the images' pending security fixes (the stored security check) -----------------------------


def judge_security(
    report: UpdatesReport | None, last_run: str, expected_daily: bool, now: datetime.datetime
) -> HealthItem:
    """The last security check's report (`.mailstack/security.json`), the daily run's outcome
    (`last_run`, "" when none) and whether a daily run is expected (production mode with
    update.security not off): never re-checked here, it takes minutes."""
    name = "security fixes"
    run = "`mailstack check updates` checks now"
    if report is None:
        if not expected_daily:
            return exempt(
                name, "", f"no daily security check here (sandbox or update.security: off); {run}"
            )
        return HealthItem(
            name,
            "",
            WARN,
            "the images were never checked",
            f"{run}; the daily run (`mailstack up` installs its timer) keeps it current",
        )
    checked = parse_time(report.checked)
    age = (now - checked).total_seconds() if checked else None
    when = f"checked {ago(age)} ago" if age is not None else f"checked {report.checked!r}"
    if report.security_fixes:
        cves = (
            f" ({', '.join(report.cves[:3])}{', …' if len(report.cves) > 3 else ''})"
            if report.cves
            else ""
        )
        detail = (
            f"{report.security_fixes} pending in {', '.join(report.security_images)}{cves}, {when}"
        )
        return HealthItem(
            name,
            "",
            WARN,
            detail,
            "`mailstack update --security` applies them (health-gated, rolled back on failure)",
        )
    if last_run.startswith("failed"):
        return HealthItem(
            name,
            "",
            WARN,
            f"the last daily security run {first_line(last_run)}",
            "`journalctl -u` its timer, or `mailstack update --security`, says why",
        )
    if expected_daily and (age is None or age >= SECURITY_CHECK_WARN_AGE):
        return HealthItem(
            name,
            "",
            WARN,
            f"none pending, but {when}",
            f"{run}; the daily run (its timer) has not run: `mailstack up` installs it",
        )
    return HealthItem(name, "", PASS, f"none pending, {when}")


def parse_time(text: str) -> datetime.datetime | None:
    """An ISO time as the state files and reports write it (naive: UTC; "Z" accepted)."""
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _verdict(text: object) -> Verdict:
    """A verdict as a report wrote it; anything else counts as a failure to be looked at."""
    try:
        return Verdict(str(text))
    except ValueError:
        return FAIL


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
