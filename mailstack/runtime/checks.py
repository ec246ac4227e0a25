"""`check config`: each daemon's own checker run on the rendered config inside its image."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailstack import services
from mailstack.adapters.compose import Compose
from mailstack.errors import ExternalCommandFailed, UsageError

# Every image ships /usr/local/bin/check-config: it installs the mounted config exactly as the
# entrypoint does and runs the daemon's own checker (postgres -C and a scratch server, redis
# started on a scratch socket, unbound-checkconf, clamd/freshclam, rspamadm configtest,
# doveconf -n, postfix check and postconf -n, nginx -t, php -l and php-fpm -t). Services the
# stack does not run (clamav without features.antivirus, sink outside sandbox mode, webmail
# without features.webmail) are skipped.
CHECKED_SERVICES = tuple(service.name for service in services.checked())

# A throwaway container would get the service's fixed address, taken while the service runs:
# check inside the running container then (its check mode installs nothing over live files).
FIXED_ADDRESS = services.with_fixed_address()

# Where a daemon reads a copy of a generated file (container prefix → stack prefix). The
# copies keep the line numbers: overrides are appended after them (postfix comments out the
# entries an override replaces, never deletes them) or live in files of their own.
DAEMON_PATHS: dict[str, tuple[tuple[str, str], ...]] = {
    "postfix": (
        ("/etc/postfix/main.cf", "config/postfix/main.cf"),
        ("/etc/postfix/master.cf", "config/postfix/master.cf"),
        ("/run/mailstack/postfix-sql/", "config/postfix/sql/"),
    ),
    "sink": (
        ("/etc/postfix/main.cf", "config/sink/main.cf"),
        ("/etc/postfix/master.cf", "config/sink/master.cf"),
    ),
    "dovecot": (("/run/mailstack/dovecot-sql.conf.ext", "config/dovecot/dovecot-sql.conf.ext"),),
    "rspamd": (
        ("/etc/rspamd/local.d/", "config/rspamd/"),
        ("/etc/rspamd/override.d/", "overrides/rspamd/"),
    ),
}

# A path not glued to a word or a date ("2026/11/23" is no path).
_PATH = r"(?<![\w./])(?P<path>/[\w.@+-]+(?:/[\w.@+-]+)*)"

# How the checkers name a place, most specific first; the earliest place in the output wins.
_LOCATIONS = (
    # UCL (rspamd): "FILE:END unmatched open brace at LINE" — the brace, not the end of file.
    re.compile(_PATH + r":\d+ unmatched open brace at (?P<line>\d+)"),
    # PostgreSQL (pg_hba.conf, pg_ident.conf): 'line N of configuration file "FILE"'.
    re.compile(r"line (?P<line>\d+) of configuration file \"" + _PATH + '"'),
    # FILE:N (unbound, nginx, UCL, clamd, redis, the check scripts' own notes),
    # FILE, line N (postconf), FILE: line N (master.cf), FILE: line: N (UCL),
    # FILE line N (doveconf), "FILE" line N and "FILE" at end of line N (PostgreSQL),
    # FILE on line N (PHP).
    re.compile(
        '"?'
        + _PATH
        + r'"?(?::\s*line:?\s+|,\s*line\s+|\s+(?:at end of\s+|on\s+)?line\s+|:)(?P<line>\d+)'
    ),
)


@dataclass(frozen=True)
class CheckResult:
    service: str
    ok: bool
    location: str | None  # "config/postfix/main.cf:12" when the checker named one
    output: str


def check_config(compose: Compose, names: tuple[str, ...]) -> list[CheckResult]:
    """Run the checker of each service the stack defines; ask for none it lacks."""
    defined = compose.images()
    wanted = [name for name in names if name in defined]
    if not wanted:
        raise UsageError(
            f"not in this stack: {', '.join(names)}",
            hint="clamav runs with features.antivirus, sink in sandbox mode",
        )
    running: set[str] = set()
    if FIXED_ADDRESS.intersection(wanted):
        running = compose.running_services()
    results: list[CheckResult] = []
    for service in wanted:
        arguments = list(services.named(service).checker or ())
        if service in FIXED_ADDRESS and service in running:
            command = ["exec", "-T", service, services.CHECKER, *arguments]
        else:
            command = ["run", "--rm", "--no-deps", "-T", "--entrypoint", services.CHECKER, service]
            command += arguments
        try:
            out = compose.run(command, timeout=180)
            text = (out.stdout + out.stderr).decode(errors="replace")
            results.append(CheckResult(service, True, None, text.strip()))
        except ExternalCommandFailed as e:
            results.append(CheckResult(service, False, locate(service, e.output), e.output.strip()))
    return results


def locate(service: str, output: str) -> str | None:
    """The first file:line a checker names, as a path in the stack directory."""
    found = [match for pattern in _LOCATIONS if (match := pattern.search(output))]
    if not found:
        return None
    first = min(found, key=lambda match: match.start("path"))
    return f"{stack_path(service, first.group('path'))}:{first.group('line')}"


def stack_path(service: str, container_path: str) -> str:
    mounted = f"/etc/mailstack/{service}/"
    overrides = "/etc/mailstack/overrides/"
    if container_path.startswith(mounted):
        return f"config/{service}/" + container_path.removeprefix(mounted)
    if container_path.startswith(overrides):
        return f"overrides/{service}/" + container_path.removeprefix(overrides)
    for prefix, stack_prefix in DAEMON_PATHS.get(service, ()):
        if container_path.startswith(prefix):
            return stack_prefix + container_path.removeprefix(prefix)
    return container_path
