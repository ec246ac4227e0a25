"""A host timer that fails reaches a person: the units `backup schedule on` writes name the
stack's alert unit in OnFailure=; running that unit's command as systemd would (this host has
no systemd as PID 1, so systemd's own trigger is the one step not run here) mails the
postmaster through the stack, read back over IMAP; `status` shows the alert; a second failure
within the hour is recorded but not mailed again; `alert test` proves the path on demand."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import DOMAIN, HOSTNAME, PROJECT, RunningStack
from tests.e2e.mail import fetch_by_subject, postmaster_mailbox
from tests.e2e.test_backup import unit_commands

pytestmark = pytest.mark.e2e


def test_a_failed_backup_timer_mails_the_postmaster_and_status_shows_it(
    stack: RunningStack, tmp_path: Path
) -> None:
    postmaster, password = postmaster_mailbox(stack)
    units = tmp_path / "units"
    stack.cli("backup", "schedule", "on", "--unit-dir", str(units))
    backup_unit = f"mailstack-backup-{PROJECT}.service"
    assert f"OnFailure=mailstack-alert-{PROJECT}@%n.service" in (units / backup_unit).read_text()
    template = units / f"mailstack-alert-{PROJECT}@.service"
    # systemd starts mailstack-alert-<project>@<failed unit>.service: %i is the failed unit.
    (command,) = unit_commands(template)
    assert command[-1] == "%i"
    argv = [*command[:-1], backup_unit]
    ran = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert ran.returncode == 0, ran.stderr
    assert "the daily backup failed at" in ran.stdout and "the postmaster was mailed" in ran.stdout
    alert = fetch_by_subject(
        stack, postmaster, password, f"[mailstack] {HOSTNAME}: the daily backup failed"
    )
    assert alert["To"] == f"postmaster@{DOMAIN}"
    body = alert.get_body(("plain",))
    assert body is not None and f"systemctl status {backup_unit}" in body.get_content()
    shown = stack.cli("status").stdout + stack.cli("status", check=False).stderr
    assert "alert: the daily backup failed at" in shown, shown
    # The per-minute host jobs failing every run would be an alert storm: once an hour.
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0 and "not mailed again" in again.stdout, again.stdout
    # Off removes the units, the alert template with the stack's last timer.
    stack.cli("backup", "schedule", "off", "--unit-dir", str(units))
    assert sorted(units.iterdir()) == []


def test_alert_test_reaches_the_postmaster(stack: RunningStack) -> None:
    postmaster, password = postmaster_mailbox(stack)
    sent = stack.cli("alert", "test")
    assert f"a test alert was mailed to postmaster@{DOMAIN}" in sent.stdout + sent.stderr
    fetch_by_subject(stack, postmaster, password, f"[mailstack] {HOSTNAME}: a test alert")
