"""`check health` on a timer (monitoring.schedule): a change of verdict is mailed once, with
each changed item's fix, resolved included; the same state never twice; a change that could
not be mailed is tried again; the items as gauges for the metrics service, which serves a
fresh file and reports a missing or stale one."""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailstack.errors import ConfigError
from mailstack.resources import build_contexts_dir
from mailstack.runtime import healthprobes, healthwatch, notify, schedule
from mailstack.runtime.health import HealthItem, HealthReport
from mailstack.runtime.healthwatch import Told, decide
from mailstack.stack import stackfiles
from mailstack.stack.config import validate_config
from mailstack.stack.render import RenderInputs, render_stack
from mailstack.stack.stackdir import Stack, StackDir
from mailstack.verdict import FAIL, WARN, Verdict
from tests.conftest import REFERENCE
from tests.unit.clirun import invoke
from tests.unit.fakes import FakeContainers
from tests.unit.test_metrics import metricsd

ROOT = Path("/srv/mail")
HOST = "mail.example.test"
NOON = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)


def item(name: str, verdict: str = "pass", detail: str = "fine", fix: str = "") -> HealthItem:
    service = name.removeprefix("service ") if name.startswith("service ") else ""
    return HealthItem(name, service, Verdict(verdict), detail, fix)


def report(*items: HealthItem) -> HealthReport:
    base = [item("service db"), item("service webmail"), item("mail queue", detail="empty")]
    named = {found.name: found for found in items}
    return HealthReport(
        tuple(named.pop(found.name, found) for found in base) + tuple(named.values()), 1.5
    )


WEBMAIL_DOWN = item("service webmail", "FAIL", "exited (Exited (0))", "`mailstack up` starts it")


# --- what to mail: a pure function of what was told and what was found --------------------------


def test_a_first_run_that_finds_every_item_passing_mails_nothing() -> None:
    assert decide(None, report(), HOST, ROOT) is None


def test_a_first_run_that_finds_a_failure_mails_it_with_its_fix() -> None:
    notice = decide(None, report(WEBMAIL_DOWN), HOST, ROOT)
    assert notice is not None
    assert notice.subject == f"[mailstack] {HOST}: health FAIL: service webmail FAIL"
    assert "FAIL (was pass): service webmail: exited (Exited (0))" in notice.body
    assert "fix: `mailstack up` starts it" in notice.body
    assert notice.told == Told(FAIL, {"service webmail": FAIL})


def test_the_same_state_is_never_mailed_twice_even_when_its_details_move() -> None:
    told = Told(FAIL, {"service webmail": FAIL})
    later = item("service webmail", "FAIL", "exited (Exited (0) 5 minutes ago)", "`up`")
    assert decide(told, report(later), HOST, ROOT) is None


def test_back_to_green_is_mailed_as_resolved() -> None:
    notice = decide(Told(FAIL, {"service webmail": FAIL}), report(), HOST, ROOT)
    assert notice is not None
    assert notice.subject == (
        f"[mailstack] {HOST}: health resolved: every item passes (service webmail resolved)"
    )
    assert "resolved (was FAIL): service webmail: fine" in notice.body
    assert notice.told == Told()


def test_a_changed_set_of_failing_items_is_mailed_with_only_the_changes() -> None:
    told = Told(FAIL, {"service webmail": FAIL})
    queue = item("mail queue", "warn", "120 messages", "`mailstack queue` lists them")
    notice = decide(told, report(WEBMAIL_DOWN, queue), HOST, ROOT)
    assert notice is not None
    assert notice.subject == f"[mailstack] {HOST}: health FAIL: mail queue warn"
    assert "warn (was pass): mail queue: 120 messages" in notice.body
    assert "Still not passing (you were told):\n  FAIL: service webmail" in notice.body


def test_a_warning_that_becomes_a_failure_is_a_change() -> None:
    told = Told(WARN, {"mail queue": WARN})
    worse = item("mail queue", "FAIL", "1500 messages", "`mailstack queue`")
    notice = decide(told, report(worse), HOST, ROOT)
    assert notice is not None and "FAIL (was warn): mail queue" in notice.body


def test_an_item_no_longer_checked_is_resolved() -> None:
    notice = decide(Told(FAIL, {"service clamav": FAIL}), report(), HOST, ROOT)
    assert notice is not None
    assert "resolved (was FAIL): service clamav (no longer checked)" in notice.body


def test_many_changes_keep_the_subject_short() -> None:
    down = [item(f"service s{n}", "FAIL", "exited", "`mailstack up`") for n in range(5)]
    notice = decide(None, report(*down), HOST, ROOT)
    assert notice is not None and notice.subject.endswith("and 2 more")


# --- a run: the record, the retry, the gauges --------------------------------------------------


def _stack(tmp_path: Path) -> Stack:
    config = stackfiles.initial_config(HOST, "example.test", {"mode": "sandbox"})
    stackfiles.init_stack(tmp_path / "stack", config, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    return Stack(stack_dir, stack_dir.load_config(), FakeContainers())  # type: ignore[arg-type]


class Postmaster:
    def __init__(self) -> None:
        self.subjects: list[str] = []
        self.reachable = True

    def __call__(self, stack: Stack, subject: str, body: str) -> bool:
        if self.reachable:
            self.subjects.append(subject)
        return self.reachable


def test_a_change_that_could_not_be_mailed_is_mailed_by_the_next_run_that_can(
    tmp_path: Path,
) -> None:
    stack, postmaster = _stack(tmp_path), Postmaster()

    def run(found: HealthReport) -> healthwatch.WatchResult:
        return healthwatch.watch(stack, lambda _: found, postmaster, NOON)

    postmaster.reachable = False
    first = run(report(WEBMAIL_DOWN))
    assert not first.mailed and "FAILED" in first.outcome and postmaster.subjects == []
    postmaster.reachable = True
    assert run(report(WEBMAIL_DOWN)).outcome == healthwatch.MAILED
    assert run(report(WEBMAIL_DOWN)).outcome == healthwatch.UNCHANGED
    assert run(report()).outcome == healthwatch.MAILED
    assert postmaster.subjects == [
        f"[mailstack] {HOST}: health FAIL: service webmail FAIL",
        f"[mailstack] {HOST}: health resolved: every item passes (service webmail resolved)",
    ]
    state = stack.dir.state_dir / healthwatch.STATE_FILE
    assert state.stat().st_mode & 0o777 == 0o600


def test_an_unreadable_record_counts_as_told_every_item_passes(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    (stack.dir.state_dir / healthwatch.STATE_FILE).write_text('{"told": "garbage"}')
    assert healthwatch.read_told(stack.dir) is None


def test_the_gauges_name_each_item_and_are_the_metrics_groups_only(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    odd = item('free space "backups"', "warn", "4 GiB", "free some")
    healthwatch.watch(stack, lambda _: report(WEBMAIL_DOWN, odd), Postmaster(), NOON)
    path = stack.dir.state_dir / healthwatch.GAUGES_DIR / healthwatch.GAUGES_FILE
    text = path.read_text()
    assert 'mailstack_health_item{item="service webmail",service="webmail"} 2\n' in text
    assert 'mailstack_health_item{item="service db",service="db"} 0\n' in text
    assert 'mailstack_health_item{item="free space \\"backups\\"",service=""} 1\n' in text
    assert "mailstack_health_verdict 2\n" in text
    assert f"mailstack_health_last_run_timestamp_seconds {NOON.timestamp():.0f}\n" in text
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.parent.stat().st_mode & 0o777 == 0o750
    if os.geteuid() == 0:
        assert path.stat().st_gid == path.parent.stat().st_gid == healthwatch.METRICS_GID
    # What metricsd serves of it: every family parses.
    families = [family.name for family in metricsd.parse_families(text)]
    assert families == [
        "mailstack_health_item",
        "mailstack_health_verdict",
        "mailstack_health_last_run_timestamp_seconds",
        "mailstack_health_check_seconds",
    ]


def test_the_metrics_group_is_the_metrics_images() -> None:
    dockerfile = (build_contexts_dir() / "metrics" / "Dockerfile").read_text()
    assert f"groupadd --system --gid {healthwatch.METRICS_GID} metrics" in dockerfile


# --- metricsd: the file source -------------------------------------------------------------------


def _source(path: Path, max_age: float = 600) -> Any:
    return metricsd.Source("health", str(path), max_age=max_age)


def test_metricsd_serves_fresh_health_gauges_with_their_age(tmp_path: Path) -> None:
    path = tmp_path / "health.prom"
    path.write_text("# TYPE mailstack_health_verdict gauge\nmailstack_health_verdict 1\n")
    os.utime(path, (time.time() - 30, time.time() - 30))
    served = metricsd.union({"health": metricsd.fetch(_source(path))})
    assert "mailstack_health_verdict 1" in served
    assert "mailstack_health_age_seconds 30" in served
    assert 'mailstack_metrics_source_up{source="health"} 1' in served


@pytest.mark.parametrize("case", ["missing", "stale"])
def test_metricsd_reports_missing_or_stale_health_gauges_as_a_source_down(
    tmp_path: Path, case: str
) -> None:
    path = tmp_path / "health.prom"
    if case == "stale":
        path.write_text("mailstack_health_verdict 0\n")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    served = metricsd.union({"health": metricsd.fetch(_source(path))})
    assert 'mailstack_metrics_source_up{source="health"} 0' in served
    assert "mailstack_health_verdict" not in served


# --- configuration, render, timers ---------------------------------------------------------------


def with_monitoring(**values: Any) -> dict[str, Any]:
    return {**REFERENCE, "monitoring": values}


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"schedule": "7min"}, "monitoring.schedule: '7min' is not one of: off, 1min, 5min"),
        ({"daily_summary": "25:00"}, "monitoring.daily_summary: '25:00' is neither \"off\""),
        ({"daily_summary": "07:00\nx"}, "monitoring.daily_summary"),
    ],
)
def test_a_bad_schedule_is_one_line_naming_the_key(values: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        validate_config(with_monitoring(**values))
    assert says in str(refused.value) and "\n" not in str(refused.value)


def _metrics_service(**values: Any) -> dict[str, Any]:
    config = validate_config(with_monitoring(metrics=True, **values))
    files = render_stack(RenderInputs(config, "1"))
    return dict(yaml.safe_load(files["compose.yaml"])["services"]["metrics"])


def test_the_metrics_service_reads_the_health_gauges_read_only() -> None:
    service = _metrics_service()
    assert "./.mailstack/metrics:/var/lib/mailstack/health:ro" in service["volumes"]
    assert "--health=/var/lib/mailstack/health/health.prom" in service["command"]
    assert "--health-max-age=960" in service["command"]  # three 5-minute runs missed, + 1 min


def test_without_a_health_schedule_the_metrics_service_has_no_health_source() -> None:
    service = _metrics_service(schedule="off")
    assert not any("health" in argument for argument in service["command"])
    assert not any(".mailstack" in volume for volume in service["volumes"])


@pytest.mark.parametrize(
    ("minutes", "calendar"),
    [(1, "*-*-* *:*:00"), (5, "*-*-* *:00/05:00"), (15, "*-*-* *:00/15:00"), (60, "*-*-* *:00:00")],
)
def test_the_health_timer_runs_every_n_minutes(minutes: int, calendar: str) -> None:
    assert schedule.health_calendar(minutes) == calendar


def test_alert_schedule_writes_the_timers_monitoring_asks_for(tmp_path: Path) -> None:
    config = validate_config(with_monitoring(daily_summary="07:30"))
    units = tmp_path / "units"
    results = schedule.switch_monitoring("on", ROOT, config, units)
    assert [result.what for result in results] == ["health check", "daily health summary"]
    health = (units / f"mailstack-health-{config.project}.service").read_text()
    assert '"alert" "health" "--dir" "/srv/mail"' in health
    assert f"OnFailure=mailstack-alert-{config.project}@%n.service" in health
    summary = (units / f"mailstack-summary-{config.project}.timer").read_text()
    assert f"OnCalendar=*-*-* 07:30:00 {config.timezone}" in summary
    off = validate_config(with_monitoring(schedule="off"))
    assert schedule.switch_monitoring("on", ROOT, off, units)[0].enabled is False
    assert sorted(path.name for path in units.iterdir()) == []


def test_up_in_sandbox_mode_schedules_no_health_check(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    assert schedule.keep_monitoring_timers(stack.dir.root, stack.config) == []


def test_a_changed_schedule_is_a_timer_to_write_again(tmp_path: Path) -> None:
    units = tmp_path / "units"
    every_five = validate_config(with_monitoring())
    schedule.switch_monitoring("on", ROOT, every_five, units)
    assert schedule.up_to_date(schedule.health_timer(ROOT, every_five), units)
    every_fifteen = validate_config(with_monitoring(schedule="15min"))
    assert not schedule.up_to_date(schedule.health_timer(ROOT, every_fifteen), units)


def test_alert_health_exits_1_only_when_a_change_could_not_be_mailed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, postmaster = _stack(tmp_path), Postmaster()
    monkeypatch.setattr(healthprobes, "check_health", lambda _: report(WEBMAIL_DOWN))
    monkeypatch.setattr(notify, "mail_postmaster", postmaster)
    postmaster.reachable = False
    code, output = invoke("alert", "health", "--dir", str(stack.dir.root))
    assert code == 1 and "mailing the postmaster FAILED" in output
    postmaster.reachable = True
    code, output = invoke("alert", "health", "--dir", str(stack.dir.root))
    assert code == 0 and "the postmaster was mailed (FAIL (was pass): service webmail" in output
    code, output = invoke("alert", "health", "--dir", str(stack.dir.root))
    assert code == 0 and "unchanged: not mailed" in output  # a FAIL verdict is no failed run
    code, output = invoke("alert", "summary", "--dir", str(stack.dir.root))
    assert code == 0 and postmaster.subjects[-1].startswith(
        f"[mailstack] {HOST}: daily health summary: FAIL (1 item not passing)"
    )
