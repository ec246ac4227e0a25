"""Alerts that reach a person: each timer's OnFailure= names its stack's alert unit, which
mails the postmaster what failed (once an hour per unit at most) and records it for
`status`; a hostile unit name is refused before anything is mailed or written."""

from __future__ import annotations

import datetime
import shlex
from pathlib import Path

import pytest

from mailstack.errors import MailstackError, UsageError
from mailstack.runtime import alerts, lifecycle, notify, schedule
from mailstack.stack import stackfiles
from mailstack.stack.config import validate_config
from mailstack.stack.stackdir import Stack, StackDir
from tests.unit.clirun import invoke, one_error_line
from tests.unit.fakes import FakeContainers

NOON = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
UNIT = "mailstack-backup-mailstack.service"
KNOWN = {"mailstack-backup-mailstack": "daily backup"}


def _stack(tmp_path: Path) -> Stack:
    config = stackfiles.initial_config("mail.example.test", "example.test", {"mode": "sandbox"})
    stackfiles.init_stack(tmp_path / "stack", config, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    return Stack(stack_dir, stack_dir.load_config(), FakeContainers())  # type: ignore[arg-type]


@pytest.fixture
def mailed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """What reached the postmaster: (to, subject, body)."""
    sent: list[tuple[str, str, str]] = []

    def send(stack: Stack, subject: str, body: str) -> bool:
        sent.append((notify.postmaster(stack), subject, body))
        return True

    monkeypatch.setattr(notify, "mail_postmaster", send)
    return sent


def _journal(unit: str) -> str:
    return f"2026-12-06T02:15:01+0000 host systemd[1]: {unit}: Main process exited, status=1"


def test_every_timer_names_its_stacks_alert_unit_on_failure(tmp_path: Path) -> None:
    config = validate_config({"hostname": "mail.example.org", "domain": "example.org"})
    for timer in schedule.stack_timers(tmp_path / "my stack", config):
        assert "OnFailure=mailstack-alert-mailstack@%n.service\n" in schedule.service_unit(timer)
    alert_unit = schedule.alert_unit(schedule.backup_timer(tmp_path / "my stack", config))
    (exec_line,) = [line for line in alert_unit.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_line.removeprefix("ExecStart="))
    # %i, the failed unit as systemd hands it over, is the one unquoted argument.
    assert argv[1:] == ["-m", "mailstack", "alert", "unit-failed", "--dir",
                        str(tmp_path / "my stack"), "%i"]  # fmt: skip
    assert exec_line.endswith('" %i')


def test_every_timer_of_a_stack_is_known_to_the_alerts_by_its_kind(tmp_path: Path) -> None:
    config = validate_config({"hostname": "mail.example.org", "domain": "example.org"})
    timers = schedule.stack_timers(tmp_path, config)
    assert [timer.name for timer in timers] == list(schedule.timer_names("mailstack"))
    assert alerts.describe("mailstack-verify-mailstack.service",
                           {t.name: t.what for t in timers}) == "the backup verify (trial restore)"  # fmt: skip


def test_the_alert_unit_stays_while_a_timer_of_its_stack_does(tmp_path: Path) -> None:
    config = validate_config({"hostname": "mail.example.org", "domain": "example.org"})
    backup, renewal = (make(tmp_path / "s", config) for make in (schedule.backup_timer,
                                                                  schedule.renewal_timer))  # fmt: skip
    schedule.install(backup, tmp_path)
    schedule.install(renewal, tmp_path)
    template = tmp_path / "mailstack-alert-mailstack@.service"
    assert template.is_file()
    schedule.remove(backup, tmp_path)
    assert template.is_file()  # the renewal timer still names it
    removed = schedule.remove(renewal, tmp_path)
    assert str(template) in removed.units and not template.exists()


def test_a_failed_unit_mails_the_postmaster_with_its_journal_and_is_recorded(
    tmp_path: Path, mailed: list[tuple[str, str, str]]
) -> None:
    stack = _stack(tmp_path)
    alert = alerts.unit_failed(stack, UNIT, KNOWN, now=NOON, journal=_journal)
    assert alert == alerts.Alert(
        "2026-12-06T12:00:00+00:00", UNIT, "the daily backup", alerts.MAILED
    )
    ((to, subject, body),) = mailed
    assert to == "postmaster@example.test"
    assert subject == "[mailstack] mail.example.test: the daily backup failed"
    assert "Main process exited, status=1" in body and f"systemctl status {UNIT}" in body
    assert alerts.recorded(stack.dir) == [alert]
    record = stack.dir.state_dir / alerts.ALERTS_FILE
    assert oct(record.stat().st_mode)[-3:] == "600"
    # `status` shows it for a week, then no more.
    assert alerts.recent(stack.dir, NOON + datetime.timedelta(days=6)) == alert
    assert alerts.recent(stack.dir, NOON + datetime.timedelta(days=8)) is None


def test_a_unit_that_keeps_failing_is_mailed_about_once_an_hour(
    tmp_path: Path, mailed: list[tuple[str, str, str]]
) -> None:
    stack = _stack(tmp_path)
    minutes = [0, 1, 2, 59, 61, 62]
    outcomes = [
        alerts.unit_failed(
            stack, UNIT, KNOWN, NOON + datetime.timedelta(minutes=m), _journal
        ).outcome
        for m in minutes
    ]
    assert [outcome == alerts.MAILED for outcome in outcomes] == [True, False, False, False,
                                                                   True, False]  # fmt: skip
    assert outcomes[1] == "not mailed again: mailed at 2026-12-06T12:00:00+00:00, within the hour"
    assert len(mailed) == 2 and len(alerts.recorded(stack.dir)) == 6
    assert all(alert.told for alert in alerts.recorded(stack.dir))  # mailed, or within the hour
    # Another unit is mailed at once: the quiet hour is per unit.
    other = alerts.unit_failed(stack, "mailstack-tls-mailstack.service", KNOWN, NOON, _journal)
    assert other.outcome == alerts.MAILED and other.what == "mailstack-tls-mailstack.service"


def test_an_alert_the_stack_cannot_take_is_recorded_as_not_mailed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "mail_postmaster", lambda stack, subject, body: False)
    stack = _stack(tmp_path)
    alert = alerts.unit_failed(stack, UNIT, KNOWN, NOON, _journal)
    assert alert.outcome.startswith("mailing the postmaster FAILED") and not alert.told
    assert lifecycle.StackStatus(
        "p", (), (), (), (), last_alert=alert.line()
    ).last_alert.startswith("the daily backup failed at 2026-12-06T12:00:00+00:00")
    # Not mailed, so the next failure tries again at once.
    monkeypatch.setattr(notify, "mail_postmaster", lambda stack, subject, body: True)
    assert alerts.unit_failed(stack, UNIT, KNOWN, NOON, _journal).outcome == alerts.MAILED


@pytest.mark.parametrize(
    "unit",
    ["", "backup; rm -rf /", "../../etc/passwd.service", "x.service\nBcc: a@evil.example",
     "mailstack-backup", "a" * 300 + ".service", "$(reboot).service"],
)  # fmt: skip
def test_a_hostile_unit_name_is_refused_and_nothing_is_mailed_or_written(
    tmp_path: Path, mailed: list[tuple[str, str, str]], unit: str
) -> None:
    stack = _stack(tmp_path)
    with pytest.raises(UsageError, match=r"^unit: .* is not a systemd unit name"):
        alerts.unit_failed(stack, unit, KNOWN, NOON, _journal)
    assert mailed == [] and alerts.recorded(stack.dir) == []


def test_a_journal_that_cannot_be_read_is_said_in_the_mail() -> None:
    def no_journal(argv: list[str]) -> str:
        raise MailstackError("journalctl is not installed or not on PATH")

    assert alerts.journal_tail(UNIT, no_journal) == (
        "(its journal could not be read: journalctl is not installed or not on PATH)"
    )
    assert alerts.journal_tail(UNIT, lambda argv: "  \n") == "(the journal has no lines of it)"


def test_an_unreadable_record_is_no_alert(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    stack.dir.state_dir.mkdir(exist_ok=True)
    for text in ("{not json", "[1, 2]", '[{"time": "x"}]'):
        (stack.dir.state_dir / alerts.ALERTS_FILE).write_text(text)
        assert alerts.recorded(stack.dir) == [] and alerts.recent(stack.dir, NOON) is None


def test_the_cli_refuses_a_bad_unit_with_one_line(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    code, output = invoke("alert", "unit-failed", "x;y", "--dir", str(stack.dir.root))
    assert code == 2
    assert one_error_line(output).startswith("unit: 'x;y' is not a systemd unit name")


def test_a_test_alert_that_cannot_be_sent_says_why_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(stack: Stack, subject: str, body: str) -> None:
        raise MailstackError(
            "the notice to postmaster@example.test could not be submitted: (550, b'5.1.1 "
            "<postmaster@example.test>: Recipient address rejected: User unknown')"
        )

    monkeypatch.setattr(notify, "send_to_postmaster", refused)
    stack = _stack(tmp_path)
    code, output = invoke("alert", "test", "--dir", str(stack.dir.root))
    assert code == 1
    (line, hint) = output.splitlines()[:2]
    assert line.startswith("error: the test alert could not be sent: the notice to postmaster@")
    assert "User unknown" in line
    assert hint.startswith("hint: postmaster@example.test must be a mailbox or an alias")
