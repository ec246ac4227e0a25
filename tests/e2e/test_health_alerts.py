"""`check health` on a timer (monitoring.schedule) reaches a person, once per change: the
command of the unit `alert schedule on` writes (run as systemd would; this host has no
systemd as PID 1) mails the postmaster when a service goes down, naming it with its fix (read
over IMAP), stays quiet while nothing changes, and mails "resolved" when it is back; each run's
verdicts are gauges in a scrape of the metrics endpoint."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import HOSTNAME, PROJECT, RunningStack
from tests.e2e.mail import fetch_by_subject, inbox_subjects, postmaster_mailbox
from tests.e2e.test_backup import unit_commands
from tests.e2e.test_metrics import scrape

pytestmark = pytest.mark.e2e

BROKEN = "webmail"  # stopping it breaks no mail path the alert itself takes
ITEM = f"service {BROKEN}"
GAUGE = f'mailstack_health_item{{item="{ITEM}",service="{BROKEN}"}}'


def not_passing(stack: RunningStack) -> set[str]:
    found = json.loads(stack.cli("check", "health", "--json", check=False).stdout)
    return {item["name"] for item in found["items"] if item["verdict"] != "pass"}


def gauges(stack: RunningStack) -> str:
    token = (stack.root / "secrets" / "metrics_token").read_text().strip()
    status, text = scrape(token)
    assert status == 200, text
    return text


def test_a_health_change_is_mailed_once_and_its_resolution_too(
    stack: RunningStack, tmp_path: Path
) -> None:
    postmaster, password = postmaster_mailbox(stack)
    units = tmp_path / "units"
    stack.cli("alert", "schedule", "on", "--unit-dir", str(units))
    unit = units / f"mailstack-health-{PROJECT}.service"
    assert f"OnFailure=mailstack-alert-{PROJECT}@%n.service" in unit.read_text()
    (command,) = unit_commands(unit)

    def run() -> str:
        ran = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        return ran.stdout

    # Whatever this stack's state, after one run the postmaster knows it.
    run()
    state = stack.root / ".mailstack" / "health.json"
    assert state.stat().st_mode & 0o777 == 0o600
    before = set(json.loads(state.read_text())["told"]["items"])
    assert ITEM not in before
    assert f"{GAUGE} 0" in gauges(stack)

    stack.compose("stop", BROKEN)
    try:
        broken = run()
        assert "the postmaster was mailed" in broken and ITEM in broken, broken
        alert = fetch_by_subject(
            stack, postmaster, password, f"[mailstack] {HOSTNAME}: health FAIL"
        )
        assert f"{ITEM} FAIL" in str(alert["Subject"])
        body = alert.get_body(("plain",))
        assert body is not None
        text = body.get_content()
        assert f"FAIL (was pass): {ITEM}:" in text and "fix: `mailstack up` starts it" in text
        scraped = gauges(stack)
        assert f"{GAUGE} 2" in scraped and "mailstack_health_verdict 2" in scraped
        assert 'mailstack_metrics_source_up{source="health"} 1' in scraped
        # The same state again: no second mail about it (on a loaded host another item
        # may flap meanwhile, a healthcheck over its timeout: that one is a change).
        again = run()
        assert "unchanged: not mailed" in again or ITEM not in again, again
    finally:
        stack.compose("start", BROKEN)
    deadline = time.monotonic() + 120
    while not_passing(stack) != before:
        assert time.monotonic() < deadline, f"not back after 120 s: {not_passing(stack)}"
        time.sleep(3)
    resolved = run()
    assert "the postmaster was mailed" in resolved and "resolved" in resolved, resolved
    mail = fetch_by_subject(stack, postmaster, password, f"{ITEM} resolved")
    mail_body = mail.get_body(("plain",))
    assert mail_body is not None and f"resolved (was FAIL): {ITEM}" in mail_body.get_content()
    subjects = inbox_subjects(stack, postmaster, password)
    assert sum(f"{ITEM} FAIL" in subject for subject in subjects) == 1, subjects
    assert f"{GAUGE} 0" in gauges(stack)
    stack.cli("alert", "schedule", "off", "--unit-dir", str(units))
    assert sorted(units.iterdir()) == []


def test_the_daily_summary_names_every_item(stack: RunningStack) -> None:
    postmaster, password = postmaster_mailbox(stack)
    stack.cli("alert", "summary")
    summary = fetch_by_subject(
        stack, postmaster, password, f"[mailstack] {HOSTNAME}: daily health summary"
    )
    body = summary.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    for item in ("service postfix", "recipient lookup", "mail queue", "certificate"):
        assert f": {item}: " in text, text
