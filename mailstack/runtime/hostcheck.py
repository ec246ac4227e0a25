"""Facts about the host that `init` reports: hostname, memory, ports already taken."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ANTIVIRUS_MIN_BYTES = 3 * 1024**3
# The webmail (PHP-FPM with Roundcube) takes ~40-100 MiB; the rest of the stack ~600 MiB.
WEBMAIL_MIN_BYTES = 1024**3


@dataclass(frozen=True)
class HostFact:
    level: str  # "ok", "warn"
    message: str


def memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def antivirus_default(memory: int | None) -> bool:
    return memory is not None and memory >= ANTIVIRUS_MIN_BYTES


def webmail_default(memory: int | None) -> bool:
    """On unless the host is known to be small (an unknown size keeps the default: on)."""
    return memory is None or memory >= WEBMAIL_MIN_BYTES


def admin_default(memory: int | None) -> bool:
    """The admin service: on where the webmail would be (the same small-host threshold)."""
    return webmail_default(memory)


def port_in_use(port: int, address: str = "0.0.0.0") -> bool:  # noqa: S104  # probing a bind
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return True
    return False


def listening_process(port: int, proc: Path = Path("/proc")) -> str | None:
    """The name of the process listening on a TCP port, when /proc lets us see it."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None
    for pid_dir in proc.glob("[0-9]*"):
        try:
            for fd in (pid_dir / "fd").iterdir():
                target = fd.readlink().as_posix()
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return (pid_dir / "comm").read_text().strip()
        except OSError:
            continue
    return None


def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes: set[str] = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def check_host(hostname: str, ports: Iterable[int], bind: str) -> list[HostFact]:
    facts: list[HostFact] = []
    system_name = socket.getfqdn()
    if "." not in system_name:
        facts.append(
            HostFact(
                "warn",
                f"this host's own name {system_name!r} is not fully qualified; "
                f"set it to {hostname} so bounces and logs name it correctly",
            )
        )
    memory = memory_bytes()
    if memory is not None and not antivirus_default(memory):
        facts.append(
            HostFact(
                "warn",
                f"{memory / 1024**3:.1f} GiB of RAM: antivirus (ClamAV needs ~1.5 GiB) is off "
                "by default; turn it on in mailstack.yaml if you add memory",
            )
        )
    for port in sorted(set(ports)):
        if port_in_use(port, bind):
            owner = listening_process(port)
            who = f" by {owner}" if owner else ""
            facts.append(HostFact("warn", f"port {port} is already in use{who}"))
    return facts
