"""Timers on the host: the daily backup (`backup create` and `prune`) and the certificate
renewal (`tls renew`), each a systemd timer and a oneshot service.

Timers rather than a scheduler container: a backup drives Docker (pause, pg_dump through
the db container, the one-shot restic container), and a container that may do that needs the
Docker socket, which is root on the host. The host's systemd already has what a schedule
needs: catch-up after downtime (Persistent=), a random delay, logs in the journal and a
failure state that monitoring sees (`systemctl --failed`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from mailstack.adapters import process
from mailstack.errors import UsageError
from mailstack.stack.config import Config
from mailstack.stack.stackdir import atomic_write

SYSTEMD_DIR = Path("/etc/systemd/system")
TIMER_KINDS = (
    "backup",
    "verify",
    "tls",
    "security",
    "jobs",
    "health",
    "summary",
)  # mailstack-<kind>-<project>.timer
_RUNNING_MARKER = Path("/run/systemd/system")  # exists only when systemd is PID 1


@dataclass(frozen=True)
class Timer:
    """A systemd timer and the oneshot service it starts: mailstack commands on one stack."""

    name: str  # the units' name, without .service/.timer
    what: str  # for people: "daily backup"
    owner: str  # the command that writes and removes the units
    calendar: str  # OnCalendar=
    random_delay: str  # RandomizedDelaySec=
    commands: tuple[tuple[str, ...], ...]
    nice: bool  # background work: lowest CPU and I/O priority
    stack_root: Path  # whose alert unit a failure starts (OnFailure=, runtime/alerts.py)
    project: str


@dataclass(frozen=True)
class ScheduleResult:
    what: str
    enabled: bool
    units: tuple[str, ...]
    when: str
    activated: bool  # systemd took it up now (False: files written, systemd is not running)

    def __str__(self) -> str:
        if not self.enabled:
            return f"{self.what} off: removed {', '.join(self.units) or 'nothing (was off)'}"
        line = f"{self.what} on at {self.when}: wrote {', '.join(self.units)}"
        if not self.activated:
            timer = Path(self.units[-1]).name
            line += (
                "\nsystemd is not running on this host: enable the timer where it is "
                f"(systemctl daemon-reload && systemctl enable --now {timer})"
            )
        return line


def backup_timer(stack_root: Path, config: Config) -> Timer:
    """`backup create` then `prune`, daily at backup.schedule_time in the stack's time zone."""
    return Timer(
        name=f"mailstack-backup-{config.project}",
        what="daily backup",
        owner="mailstack backup schedule",
        calendar=f"*-*-* {config.backup.schedule_time}:00 {config.timezone}",
        random_delay="15min",
        commands=(
            mailstack_command(stack_root, "backup", "create", "--tag", "daily"),
            mailstack_command(stack_root, "backup", "prune"),
        ),
        nice=True,
        stack_root=stack_root,
        project=config.project,
    )


_VERIFY_DAYS = {"daily": "*-*-*", "weekly": "Sun *-*-*", "monthly": "*-*-01"}
VERIFY_AFTER_HOURS = 3  # after the backup it checks, which prune follows


def verify_calendar(config: Config) -> str:
    """OnCalendar= of the trial restore: backup.verify_schedule's days, three hours after
    backup.schedule_time, in the stack's time zone."""
    hour, minute = (int(part) for part in config.backup.schedule_time.split(":"))
    days = _VERIFY_DAYS[config.backup.verify_schedule]
    return f"{days} {(hour + VERIFY_AFTER_HOURS) % 24:02d}:{minute:02d}:00 {config.timezone}"


def verify_timer(stack_root: Path, config: Config) -> Timer:
    """`backup verify` (a trial restore into scratch space) on backup.verify_schedule."""
    return Timer(
        name=f"mailstack-verify-{config.project}",
        what="backup verify (trial restore)",
        owner="mailstack backup schedule",
        calendar=verify_calendar(config)
        if config.backup.verify_schedule != "off"
        else "never (backup.verify_schedule: off)",
        random_delay="30min",
        commands=(mailstack_command(stack_root, "backup", "verify"),),
        nice=True,
        stack_root=stack_root,
        project=config.project,
    )


def switch_backup(state: str, stack_root: Path, config: Config, unit_dir: Path = SYSTEMD_DIR
                  ) -> list[ScheduleResult]:  # fmt: skip
    """`backup schedule on|off`: the daily backup and, as backup.verify_schedule says, the
    trial restore (off removes both)."""
    wanted = config.backup.verify_schedule != "off"
    return [
        switch(state, backup_timer(stack_root, config), unit_dir),
        *switch_wanted(state, verify_timer(stack_root, config), wanted, unit_dir),
    ]


def switch_wanted(state: str, timer: Timer, wanted: bool, unit_dir: Path) -> list[ScheduleResult]:
    """A timer mailstack.yaml may turn off: installed by `on` when wanted, else removed if
    it is there (nothing to say when it is neither)."""
    if state == "on" and wanted:
        return [install(timer, unit_dir)]
    return [remove(timer, unit_dir)] if installed(timer, unit_dir) else []


def renewal_timer(stack_root: Path, config: Config) -> Timer:
    """`tls renew` twice a day (as certbot's own timer does); it renews only when due."""
    return Timer(
        name=f"mailstack-tls-{config.project}",
        what="certificate renewal",
        owner="mailstack tls schedule",
        calendar="*-*-* 04,16:00:00",
        random_delay="1h",  # spreads the load on the CA, as it asks
        commands=(mailstack_command(stack_root, "tls", "renew"),),
        nice=False,
        stack_root=stack_root,
        project=config.project,
    )


def security_timer(stack_root: Path, config: Config) -> Timer:
    """`update --security --unattended` daily at the start of update.window: it applies
    (auto) or mails (notify) Debian's security fixes, as update.security says."""
    start = config.update.window.split("-", 1)[0]
    return Timer(
        name=f"mailstack-security-{config.project}",
        what="daily security update",
        owner="mailstack up (update.security)",
        calendar=f"*-*-* {start}:00 {config.timezone}",
        random_delay="10min",  # stays inside the window; the run checks it again
        commands=(mailstack_command(stack_root, "update", "--security", "--unattended"),),
        nice=False,
        stack_root=stack_root,
        project=config.project,
    )


def jobs_timer(stack_root: Path, config: Config) -> Timer:
    """`jobs run` every minute: the host's part of what the admin service is asked (a new
    domain's DKIM key); a run with nothing queued is one database query."""
    return Timer(
        name=f"mailstack-jobs-{config.project}",
        what="admin service host jobs",
        owner="mailstack up (features.admin)",
        calendar="*-*-* *:*:00",
        random_delay="5s",
        commands=(mailstack_command(stack_root, "jobs", "run"),),
        nice=False,
        stack_root=stack_root,
        project=config.project,
    )


def health_calendar(minutes: int) -> str:
    """OnCalendar= of every N minutes (N divides the hour, as monitoring.schedule allows)."""
    if minutes >= 60:
        return "*-*-* *:00:00"
    return "*-*-* *:*:00" if minutes == 1 else f"*-*-* *:00/{minutes:02d}:00"


def health_timer(stack_root: Path, config: Config) -> Timer:
    """`alert health` on monitoring.schedule: `check health`, its gauges written, and a mail
    to the postmaster only when the verdict changed (runtime/healthwatch.py)."""
    minutes = config.monitoring.schedule_minutes
    return Timer(
        name=f"mailstack-health-{config.project}",
        what="health check",
        owner="mailstack alert schedule",
        calendar=health_calendar(minutes) if minutes else "never (monitoring.schedule: off)",
        random_delay="20s",
        commands=(mailstack_command(stack_root, "alert", "health"),),
        nice=False,
        stack_root=stack_root,
        project=config.project,
    )


def summary_timer(stack_root: Path, config: Config) -> Timer:
    """`alert summary` daily at monitoring.daily_summary: every item's verdict by mail."""
    when = config.monitoring.daily_summary
    return Timer(
        name=f"mailstack-summary-{config.project}",
        what="daily health summary",
        owner="mailstack alert schedule",
        calendar=f"*-*-* {when}:00 {config.timezone}"
        if when != "off"
        else "never (monitoring.daily_summary: off)",
        random_delay="5min",
        commands=(mailstack_command(stack_root, "alert", "summary"),),
        nice=False,
        stack_root=stack_root,
        project=config.project,
    )


def monitoring_timers(stack_root: Path, config: Config) -> tuple[tuple[Timer, bool], ...]:
    """The health check's timers, each with whether mailstack.yaml wants it (monitoring.
    schedule, monitoring.daily_summary)."""
    return (
        (health_timer(stack_root, config), config.monitoring.schedule != "off"),
        (summary_timer(stack_root, config), config.monitoring.daily_summary != "off"),
    )


def switch_monitoring(state: str, stack_root: Path, config: Config,
                      unit_dir: Path = SYSTEMD_DIR) -> list[ScheduleResult]:  # fmt: skip
    """`alert schedule on|off`: the timers monitoring.* asks for (off removes both)."""
    if state not in ("on", "off"):
        raise UsageError(f"on|off: {state[:40]!r} is not on or off")
    return [
        result
        for timer, wanted in monitoring_timers(stack_root, config)
        for result in switch_wanted(state, timer, wanted, unit_dir)
    ]


def keep_monitoring_timers(root: Path, config: Config) -> list[str]:
    """What `up` does with the health check's timers: installed as monitoring.* says, removed
    when off; never in sandbox mode (tests run `alert health` themselves)."""
    notes: list[str] = []
    for timer, wanted in monitoring_timers(root, config):
        if not wanted or config.mode == "sandbox":
            notes += [str(remove(timer))] if installed(timer) else []
        elif not systemd_running():
            command = " ".join(timer.commands[0][2:-2])
            notes.append(
                f"the {timer.what} is not scheduled (systemd is not running here): run "
                f"`{command}` at {timer.calendar} from your scheduler"
            )
        elif not up_to_date(timer):  # new, or monitoring.* changed since it was written
            notes.append(str(install(timer)))
    return notes


def up_to_date(timer: Timer, unit_dir: Path = SYSTEMD_DIR) -> bool:
    """The timer is installed as written now (its schedule and command unchanged)."""
    try:
        written = [(unit_dir / f"{timer.name}.{kind}").read_text() for kind in ("timer", "service")]
    except OSError:
        return False
    return written == [timer_unit(timer), service_unit(timer)]


def systemd_quote(argument: str) -> str:
    r"""One ExecStart= argument: double quotes, with \ " escaped and % $ doubled (specifiers)."""
    escaped = argument.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def mailstack_command(stack_root: Path, *args: str) -> tuple[str, ...]:
    """The command a unit runs: this mailstack (its Python), on this stack directory."""
    return (sys.executable, "-m", "mailstack", *args, "--dir", str(stack_root))


def alert_template(project: str) -> str:
    """The name of a stack's alert unit template (without @.service)."""
    return f"mailstack-alert-{project}"


def alert_unit(timer: Timer) -> str:
    """The template unit each of the stack's timers names in OnFailure=: `mailstack alert
    unit-failed` with the failed unit's name (%i, as systemd hands it over)."""
    command = mailstack_command(timer.stack_root, "alert", "unit-failed")
    quoted = " ".join(systemd_quote(argument) for argument in command)
    return "\n".join(
        [
            "# Written beside the stack's timers; removed with the last of them.",
            "[Unit]",
            f"Description=mailstack alert: %i failed ({timer.project})",
            "",
            "[Service]",
            "Type=oneshot",
            f"ExecStart={quoted} %i",
            "",
        ]
    )


def timer_names(project: str) -> tuple[str, ...]:
    """The unit names of every timer a stack may have (TIMER_KINDS)."""
    return tuple(f"mailstack-{kind}-{project}" for kind in TIMER_KINDS)


def stack_timers(stack_root: Path, config: Config) -> tuple[Timer, ...]:
    """Every timer mailstack may install for a stack (installed or not)."""
    return tuple(
        make(stack_root, config)
        for make in (
            backup_timer,
            verify_timer,
            renewal_timer,
            security_timer,
            jobs_timer,
            health_timer,
            summary_timer,
        )
    )


def service_unit(timer: Timer) -> str:
    lines = [
        f"# Written by `{timer.owner} on`; `... off` removes it.",
        "[Unit]",
        f"Description=mailstack {timer.what}",
        "Wants=network-online.target",
        "After=network-online.target docker.service",
        # A failure mails the postmaster (runtime/alerts.py).
        f"OnFailure={alert_template(timer.project)}@%n.service",
        "",
        "[Service]",
        "Type=oneshot",
        *(f"ExecStart={' '.join(systemd_quote(a) for a in command)}" for command in timer.commands),
    ]
    if timer.nice:
        lines += ["Nice=10", "IOSchedulingClass=best-effort", "IOSchedulingPriority=7"]
    return "\n".join([*lines, ""])


def timer_unit(timer: Timer) -> str:
    return "\n".join(
        [
            f"# Written by `{timer.owner} on`; `... off` removes it.",
            "[Unit]",
            f"Description=mailstack {timer.what} ({timer.name})",
            "",
            "[Timer]",
            f"OnCalendar={timer.calendar}",
            # A host that was off at the time runs it when it comes back.
            "Persistent=true",
            f"RandomizedDelaySec={timer.random_delay}",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )


def install(timer: Timer, unit_dir: Path = SYSTEMD_DIR) -> ScheduleResult:
    service = unit_dir / f"{timer.name}.service"
    timer_file = unit_dir / f"{timer.name}.timer"
    alert = unit_dir / f"{alert_template(timer.project)}@.service"
    atomic_write(alert, alert_unit(timer).encode(), 0o644)
    atomic_write(service, service_unit(timer).encode(), 0o644)
    atomic_write(timer_file, timer_unit(timer).encode(), 0o644)
    activated = systemd_running() and unit_dir == SYSTEMD_DIR
    if activated:
        process.run(["systemctl", "daemon-reload"], timeout=60)
        process.run(["systemctl", "enable", "--now", timer_file.name], timeout=60)
    return ScheduleResult(
        timer.what, True, (str(service), str(timer_file)), timer.calendar, activated
    )


def remove(timer: Timer, unit_dir: Path = SYSTEMD_DIR) -> ScheduleResult:
    timer_file = unit_dir / f"{timer.name}.timer"
    if systemd_running() and unit_dir == SYSTEMD_DIR and timer_file.exists():
        process.run(["systemctl", "disable", "--now", timer_file.name], timeout=60, check=False)
    removed: list[str] = []
    alert = unit_dir / f"{alert_template(timer.project)}@.service"
    others = [
        name
        for name in timer_names(timer.project)
        if name != timer.name and (unit_dir / f"{name}.timer").exists()
    ]
    for path in (unit_dir / f"{timer.name}.service", timer_file, *([] if others else [alert])):
        if path.exists():
            path.unlink()
            removed.append(str(path))
    if removed and systemd_running() and unit_dir == SYSTEMD_DIR:
        process.run(["systemctl", "daemon-reload"], timeout=60, check=False)
    return ScheduleResult(timer.what, False, tuple(removed), "", False)


def switch(state: str, timer: Timer, unit_dir: Path = SYSTEMD_DIR) -> ScheduleResult:
    """`... schedule on|off`: install or remove the timer."""
    if state == "on":
        return install(timer, unit_dir)
    if state == "off":
        return remove(timer, unit_dir)
    raise UsageError(f"on|off: {state[:40]!r} is not on or off")


def installed(timer: Timer, unit_dir: Path = SYSTEMD_DIR) -> bool:
    return (unit_dir / f"{timer.name}.timer").exists()


def systemd_running() -> bool:
    return _RUNNING_MARKER.is_dir()


def keep_security_timer(root: Path, config: Config) -> list[str]:
    """What `up` does with the daily security timer, as update.security says: installed
    unless off; never in sandbox mode (staging and tests: nothing runs behind their back)."""
    timer = security_timer(root, config)
    if config.update.security == "off":
        return [str(remove(timer))] if installed(timer) else []
    if config.mode == "sandbox":
        return [] if not installed(timer) else [str(remove(timer))]
    if systemd_running():
        return [] if installed(timer) else [str(install(timer))]
    return [
        f"security fixes are not scheduled (systemd is not running here): run `mailstack "
        f"update --security --unattended` daily from your scheduler (update.security: "
        f"{config.update.security})"
    ]


def keep_jobs_timer(root: Path, config: Config) -> list[str]:
    """What `up` does with the host jobs timer: installed while the admin service is on (its
    POST /domains needs the host to publish the key), removed when it is off; never in
    sandbox mode, like the security timer (tests and staging run `jobs run` themselves)."""
    timer = jobs_timer(root, config)
    if not config.features.admin or config.mode == "sandbox":
        note = ["host jobs are not scheduled in sandbox mode: run `mailstack jobs run`"]
        removed = [str(remove(timer))] if installed(timer) else []
        return removed + (note if config.features.admin else [])
    if systemd_running():
        return [] if installed(timer) else [str(install(timer))]
    return [
        "the admin service's host jobs (a new domain's DKIM key) are not scheduled (systemd "
        "is not running here): run `mailstack jobs run` every minute from your scheduler"
    ]
