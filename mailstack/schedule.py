"""The daily backup: a systemd timer on the host that runs `mailstack backup create` and `prune`.

A timer rather than a scheduler container: a backup drives Docker (pause, pg_dump through
the db container, the one-shot restic container), and a container that may do that needs the
Docker socket, which is root on the host. The host's systemd already has what a schedule
needs: catch-up after downtime (Persistent=), a random delay, logs in the journal and a
failure state that monitoring sees (`systemctl --failed`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from mailstack import process
from mailstack.config import Config
from mailstack.stackdir import atomic_write

SYSTEMD_DIR = Path("/etc/systemd/system")
_RUNNING_MARKER = Path("/run/systemd/system")  # exists only when systemd is PID 1


@dataclass(frozen=True)
class ScheduleResult:
    enabled: bool
    units: tuple[str, ...]
    when: str
    activated: bool  # systemd took it up now (False: files written, systemd is not running)

    def __str__(self) -> str:
        if not self.enabled:
            return f"daily backup off: removed {', '.join(self.units) or 'nothing (was off)'}"
        line = f"daily backup on at {self.when}: wrote {', '.join(self.units)}"
        if not self.activated:
            timer = Path(self.units[-1]).name
            line += (
                "\nsystemd is not running on this host: enable the timer where it is "
                f"(systemctl daemon-reload && systemctl enable --now {timer})"
            )
        return line


def unit_name(config: Config) -> str:
    return f"mailstack-backup-{config.project}"


def calendar(config: Config) -> str:
    """OnCalendar= for backup.schedule_time in the stack's time zone."""
    return f"*-*-* {config.backup.schedule_time}:00 {config.timezone}"


def systemd_quote(argument: str) -> str:
    r"""One ExecStart= argument: double quotes, with \ " escaped and % $ doubled (specifiers)."""
    escaped = argument.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def mailstack_command(stack_root: Path, *args: str) -> list[str]:
    """The command a unit runs: this mailstack (its Python), on this stack directory."""
    return [sys.executable, "-m", "mailstack", *args, "--dir", str(stack_root)]


def service_unit(stack_root: Path, config: Config) -> str:
    create = mailstack_command(stack_root, "backup", "create", "--tag", "daily")
    prune = mailstack_command(stack_root, "backup", "prune")
    return "\n".join(
        [
            "# Written by `mailstack backup schedule on`; `... off` removes it.",
            "[Unit]",
            f"Description=mailstack daily backup of stack {config.project}",
            "Wants=network-online.target",
            "After=network-online.target docker.service",
            "",
            "[Service]",
            "Type=oneshot",
            f"ExecStart={' '.join(systemd_quote(a) for a in create)}",
            f"ExecStart={' '.join(systemd_quote(a) for a in prune)}",
            "Nice=10",
            "IOSchedulingClass=best-effort",
            "IOSchedulingPriority=7",
            "",
        ]
    )


def timer_unit(config: Config) -> str:
    return "\n".join(
        [
            "# Written by `mailstack backup schedule on`; `... off` removes it.",
            "[Unit]",
            f"Description=daily backup of mailstack stack {config.project}",
            "",
            "[Timer]",
            f"OnCalendar={calendar(config)}",
            # A host that was off at the time backs up when it comes back.
            "Persistent=true",
            "RandomizedDelaySec=15min",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )


def install(stack_root: Path, config: Config, unit_dir: Path = SYSTEMD_DIR) -> ScheduleResult:
    name = unit_name(config)
    service = unit_dir / f"{name}.service"
    timer = unit_dir / f"{name}.timer"
    atomic_write(service, service_unit(stack_root, config).encode(), 0o644)
    atomic_write(timer, timer_unit(config).encode(), 0o644)
    activated = _systemd_running() and unit_dir == SYSTEMD_DIR
    if activated:
        process.run(["systemctl", "daemon-reload"], timeout=60)
        process.run(["systemctl", "enable", "--now", timer.name], timeout=60)
    return ScheduleResult(True, (str(service), str(timer)), calendar(config), activated)


def remove(config: Config, unit_dir: Path = SYSTEMD_DIR) -> ScheduleResult:
    name = unit_name(config)
    timer = unit_dir / f"{name}.timer"
    if _systemd_running() and unit_dir == SYSTEMD_DIR and timer.exists():
        process.run(["systemctl", "disable", "--now", timer.name], timeout=60, check=False)
    removed: list[str] = []
    for path in (unit_dir / f"{name}.service", timer):
        if path.exists():
            path.unlink()
            removed.append(str(path))
    if removed and _systemd_running() and unit_dir == SYSTEMD_DIR:
        process.run(["systemctl", "daemon-reload"], timeout=60, check=False)
    return ScheduleResult(False, tuple(removed), "", False)


def _systemd_running() -> bool:
    return _RUNNING_MARKER.is_dir()
