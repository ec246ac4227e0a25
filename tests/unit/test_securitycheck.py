"""What check updates, status and the daily security run tell, from a report (no Docker)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from mailstack import errors
from mailstack.images import securitycheck
from mailstack.images.securitycheck import ImageUpdates, PendingFix, UpdatesReport
from mailstack.runtime import schedule
from mailstack.stack.config import validate_config

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
FIX = PendingFix(
    "libssl3",
    "3.0.20-1~deb12u2",
    "3.0.22-1~deb12u2",
    ("Debian-Security:12/oldstable-security",),
    security=True,
    cves=("CVE-2026-0001", "CVE-2026-0002"),
    published="2026-12-01",
)
UPDATE = PendingFix(
    "tzdata", "2026a-0+deb12u1", "2026b-0+deb12u1", ("Debian:12.15/oldstable",), False
)
REPORT = UpdatesReport(
    "2026-12-06T10:00:00+00:00",
    (
        ImageUpdates("postfix", "mailstack/postfix:aa", ("postfix", "sink"), (FIX, UPDATE)),
        ImageUpdates("redis", "mailstack/redis:bb", ("redis",), ()),
        ImageUpdates("backup", "mailstack/backup:cc", (), (UPDATE,)),
    ),
)


def test_security_fixes_pending_give_exit_4_and_name_images_cves_and_age() -> None:
    assert REPORT.exit_code == errors.EXIT_SECURITY_PENDING == 4
    assert REPORT.security_images == ("postfix",)
    assert REPORT.cves == ("CVE-2026-0001", "CVE-2026-0002")
    line = securitycheck.summary_line(REPORT, NOW)
    assert line == (
        "security: 1 fix(es) pending in postfix, the oldest published 5 days ago (checked 2 h "
        "ago); run `mailstack update --security`"
    )
    text = str(REPORT)
    assert "postfix (postfix, sink): 2 package(s) pending, 1 with security fixes" in text
    assert (
        "security libssl3 3.0.20-1~deb12u2 -> 3.0.22-1~deb12u2 "
        "[Debian-Security:12/oldstable-security] fixes CVE-2026-0001, CVE-2026-0002"
    ) in text
    assert "  tzdata 2026a-0+deb12u1 -> 2026b-0+deb12u1" in text


def test_only_ordinary_updates_pending_is_exit_0() -> None:
    report = UpdatesReport(REPORT.checked, (REPORT.images[2],))
    assert report.exit_code == 0
    assert securitycheck.summary_line(report, NOW) == (
        "security: no fixes pending (checked 2 h ago); 1 other update(s) come with the next "
        "`mailstack update`"
    )


def test_the_state_file_round_trips_the_report(tmp_path: Path) -> None:
    assert securitycheck.load(tmp_path).report is None
    securitycheck.save(tmp_path, REPORT)
    state = securitycheck.load(tmp_path)
    assert state.report == REPORT
    state.notified_digest = REPORT.digest()
    securitycheck.store(tmp_path, state)
    assert securitycheck.load(tmp_path).notified_digest == REPORT.digest()
    assert (tmp_path / ".mailstack" / "security.json").stat().st_mode & 0o777 == 0o600


def test_a_damaged_state_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / ".mailstack").mkdir()
    (tmp_path / ".mailstack" / "security.json").write_text("{not json")
    with pytest.raises(securitycheck.MailstackError, match=r"security\.json is damaged"):
        securitycheck.load(tmp_path)


def test_the_notice_digest_changes_only_with_what_is_pending() -> None:
    same = UpdatesReport("2026-12-07T10:00:00+00:00", REPORT.images)
    assert same.digest() == REPORT.digest()
    newer = PendingFix(FIX.package, FIX.installed, "3.0.23-1~deb12u1", FIX.releases, True)
    other = UpdatesReport(REPORT.checked, (ImageUpdates("postfix", "x", (), (newer,)),))
    assert other.digest() != REPORT.digest()


def test_the_notice_names_images_packages_cves_and_the_command() -> None:
    subject, body = securitycheck.notice(REPORT, "mail.example.org")
    assert subject == "[mailstack] mail.example.org: 1 security fix(es) pending for postfix"
    assert "postfix (runs postfix, sink):" in body
    assert "libssl3 3.0.20-1~deb12u2 -> 3.0.22-1~deb12u2" in body
    assert "CVEs: CVE-2026-0001, CVE-2026-0002" in body
    assert "mailstack update --security" in body
    assert "tzdata" not in body  # a notice is about security fixes
    subject, body = securitycheck.notice(REPORT, "mail.example.org", applied=True)
    assert "applied to postfix" in subject and "Nothing is left to do" in body


@pytest.mark.parametrize(
    ("window", "time", "inside"),
    [
        ("04:00-06:00", "04:00", True),
        ("04:00-06:00", "05:59", True),
        ("04:00-06:00", "06:00", False),
        ("04:00-06:00", "03:59", False),
        ("22:30-01:00", "23:00", True),
        ("22:30-01:00", "00:30", True),
        ("22:30-01:00", "12:00", False),
    ],
)
def test_the_maintenance_window_may_cross_midnight(window: str, time: str, inside: bool) -> None:
    assert securitycheck.in_window(window, datetime.time.fromisoformat(time)) is inside


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("4-6", "is not a time of day"),
        ("04:00", "is not a time window"),
        ("05:00-05:00", "is an empty window"),
        ("04:00-25:00", "is not a time of day"),
    ],
)
def test_a_bad_window_is_one_clear_line(value: str, message: str) -> None:
    with pytest.raises(securitycheck.MailstackError, match=rf"update\.window: .*{message}"):
        validate_config({"hostname": "mail.example.org", "domain": "example.org",
                         "update": {"window": value}})  # fmt: skip


def test_the_daily_timer_runs_the_unattended_security_update_at_the_window(
    tmp_path: Path,
) -> None:
    config = validate_config(
        {"hostname": "mail.example.org", "domain": "example.org", "timezone": "Europe/Paris",
         "update": {"security": "notify", "window": "02:15-03:00"}}
    )  # fmt: skip
    timer = schedule.security_timer(tmp_path, config)
    assert timer.calendar == "*-*-* 02:15:00 Europe/Paris"
    unit = schedule.service_unit(timer)
    assert '"update" "--security" "--unattended" "--dir"' in unit
    assert config.update.security == "notify"
    default = validate_config({"hostname": "mail.example.org", "domain": "example.org"})
    assert (default.update.security, default.update.window) == ("auto", "04:00-06:00")
