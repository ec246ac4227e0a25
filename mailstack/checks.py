"""`check config`: each daemon's own checker run on the rendered config inside its image."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailstack.compose import Compose
from mailstack.errors import ExternalCommandFailed

# Every image ships /usr/local/bin/check-config: it installs the mounted config exactly as
# the entrypoint does and runs the daemon's own checker (postfix check, doveconf -n,
# rspamadm configtest, nginx -t, unbound-checkconf, redis/postgres sanity).
CHECKED_SERVICES = ("postfix", "dovecot", "rspamd", "resolver", "front", "redis", "db")
CHECKER = "/usr/local/bin/check-config"

# Where each daemon reads the files mailstack mounts at /etc/mailstack/<service>.
DAEMON_PATHS: dict[str, tuple[str, ...]] = {
    "postfix": ("/etc/postfix/",),
    "dovecot": ("/etc/dovecot/conf.d/", "/etc/dovecot/"),
    "rspamd": ("/etc/rspamd/local.d/",),
    "resolver": ("/etc/unbound/unbound.conf.d/", "/etc/unbound/"),
    "front": ("/etc/nginx/conf.d/", "/etc/nginx/"),
    "redis": ("/etc/redis/",),
    "db": ("/etc/postgresql/",),
}

_LOCATION = re.compile(r"(?P<path>/etc/[\w./-]+?)(?:,\s*line\s+|:|\s+line\s+)(?P<line>\d+)")


@dataclass(frozen=True)
class CheckResult:
    service: str
    ok: bool
    location: str | None  # "config/postfix/main.cf:12" when the checker named one
    output: str


def check_config(compose: Compose, services: tuple[str, ...]) -> list[CheckResult]:
    results: list[CheckResult] = []
    for service in services:
        try:
            out = compose.run(
                ["run", "--rm", "--no-deps", "-T", "--entrypoint", CHECKER, service],
                timeout=180,
            )
            text = (out.stdout + out.stderr).decode(errors="replace")
            results.append(CheckResult(service, True, None, text.strip()))
        except ExternalCommandFailed as e:
            results.append(CheckResult(service, False, locate(service, e.output), e.output.strip()))
    return results


def locate(service: str, output: str) -> str | None:
    """The first file:line a checker names, as a path in the stack directory."""
    for match in _LOCATION.finditer(output):
        path, line = match.group("path"), match.group("line")
        return f"{stack_path(service, path)}:{line}"
    return None


def stack_path(service: str, container_path: str) -> str:
    mounted = f"/etc/mailstack/{service}/"
    overrides = "/etc/mailstack/overrides/"
    if container_path.startswith(mounted):
        return f"config/{service}/" + container_path.removeprefix(mounted)
    if container_path.startswith(overrides):
        return f"overrides/{service}/" + container_path.removeprefix(overrides)
    for prefix in DAEMON_PATHS.get(service, ()):
        if container_path.startswith(prefix):
            return f"config/{service}/" + container_path.removeprefix(prefix)
    return container_path
