"""Build, up, down, restart, status: the stack's lifecycle over `docker compose`."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailstack import services
from mailstack.accounts import directory, migrations
from mailstack.adapters import docker
from mailstack.adapters.compose import ServiceState
from mailstack.adapters.docker import DOCKER
from mailstack.errors import MailstackError, UsageError
from mailstack.images import builder, imagerefs, securitycheck
from mailstack.runtime import alerts, relay, schedule
from mailstack.stack.config import Config
from mailstack.stack.stackdir import Stack
from mailstack.tls import acme, certreload

Progress = Callable[[str], None]


@dataclass(frozen=True)
class StackStatus:
    project: str
    services: tuple[ServiceState, ...]
    conflicts: tuple[str, ...]
    deleted_by_operator: tuple[str, ...]
    kept_dropped: tuple[str, ...]
    # tls.mode acme: the last `tls renew`, None before one ran.
    certificate_renewal: acme.AcmeState | None = None
    # The last `check updates` in one line, and whether security fixes are pending.
    security: str = "security: not checked yet (`mailstack check updates`)"
    security_pending: bool = False
    security_last_run: str = ""  # the daily run's outcome (update.security)
    last_alert: str = ""  # the newest timer failure of the last week (runtime/alerts.py)
    # relay.host: the line saying mail waits on the relay's refusal of the credentials ("": none).
    relay_refused: str = ""

    @property
    def healthy(self) -> bool:
        return bool(self.services) and all(service_healthy(s) for s in self.services)


def service_healthy(state: ServiceState) -> bool:
    """Running, healthy (or without a healthcheck), and its last healthcheck passed."""
    return state.state == "running" and state.health in ("healthy", "") and not state.failing_checks


@dataclass(frozen=True)
class UpResult:
    seconds: float
    built: tuple[str, ...]
    migrations: tuple[str, ...]
    status: StackStatus
    reloaded: tuple[str, ...] = ()  # daemons told of a new certificate
    # What came after the stack was up: the ACME certificate (tls.mode acme), the timers.
    notes: tuple[str, ...] = ()


def take_changed_config(
    stack: Stack, changed: set[str], running: set[str], timeout: float = 300
) -> tuple[list[str], list[str]]:
    """Each running service whose rendered config changed takes it: reloaded where its
    record says how (services.Service.config_reload), else restarted and waited for.
    Returns (restarted, reloaded), in the registry's order."""
    takers = [s for s in services.SERVICES if s.name in changed and s.name in running]
    restart = [s.name for s in takers if s.config_reload is None]
    if restart:
        stack.compose.run(["restart", *restart], timeout=timeout)
        wait_healthy(stack, restart, timeout, None)
    reloaded = [s.name for s in takers if s.config_reload is not None]
    for service in takers:
        if service.config_reload is not None:
            stack.compose.exec(service.name, list(service.config_reload))
    return restart, reloaded


def build(
    stack: Stack, progress: Progress | None = None, names: list[str] | None = None
) -> builder.ImagesResult:
    """Every image the stack uses (or `names`) at Debian's newest packages, recorded in .env;
    an image whose packages did not change keeps its tag and is not rebuilt."""
    docker.available()
    wanted = names if names is not None else builder.wanted(stack)
    registry = stack.config.images.registry
    if registry:
        return builder.ImagesResult(
            builder.pull_and_record(stack.dir.root, registry, wanted), (), {}
        )
    result = builder.build_current(
        wanted, apt_sources=stack.config.images.apt_sources_path, progress=progress
    )
    imagerefs.write(stack.dir.root, result.references)
    return result


def up(
    stack: Stack, *, wait: bool = True, timeout: float = 300, progress: Progress | None = None
) -> UpResult:
    """Start the stack: images, network checks, db + schema first, then the rest, health."""
    started = time.monotonic()
    stack.dir.require_no_conflicts()
    relay.require_ready(stack.config, stack.dir.root)
    docker.available()
    stack.compose.config_check()
    check_subnets(stack.config, host_networks(exclude_project=stack.config.project))
    recorded = imagerefs.read(stack.dir.root)
    missing = [
        name
        for name in builder.wanted(stack)
        if name not in recorded or not DOCKER.has_image(recorded[name])
    ]
    built: list[str] = []
    if missing:
        _say(progress, f"images missing ({', '.join(missing)}): building them first")
        built = [result.service for result in build(stack, progress, missing).built]
    _say(progress, "starting the database")
    stack.compose.run(["up", "--detach", "--remove-orphans", "db"])
    wait_healthy(stack, ["db"], timeout, progress)
    _say(progress, "applying mail directory migrations")
    applied = migrations.migrate(stack.compose)
    # The first domain named in mailstack.yaml is a mail domain from the first `up` on.
    if stack.config.domain not in {domain.name for domain in directory.list_domains(stack.compose)}:
        directory.add_domain(stack.compose, stack.config.domain)
    _say(progress, "starting every service")
    stack.compose.run(["up", "--detach", "--remove-orphans"])
    reloaded: list[str] = []
    if wait:
        wait_healthy(stack, None, timeout, progress)
        # Containers that kept running since the certificate changed still serve the old one.
        reloaded = certreload.reload_if_changed(
            stack,
            stack.compose.running_services(),
            lambda services: wait_healthy(stack, services, timeout, progress),
        )
    current = status(stack)
    notes: list[str] = []
    # Once the front serves: the first ACME certificate (or a due one) and its renewals.
    if stack.config.tls.mode == "acme" and current.healthy:
        notes += acme.after_up(stack)
    notes += schedule.keep_security_timer(stack.dir.root, stack.config)
    notes += schedule.keep_jobs_timer(stack.dir.root, stack.config)
    notes += schedule.keep_monitoring_timers(stack.dir.root, stack.config)
    return UpResult(
        time.monotonic() - started,
        tuple(built),
        tuple(applied),
        current,
        tuple(reloaded),
        tuple(notes),
    )


def wait_healthy(
    stack: Stack, services: list[str] | None, timeout: float, progress: Progress | None
) -> None:
    """Poll until every (given) service is running and healthy; name the first that is not."""
    deadline = time.monotonic() + timeout
    last_line = ""
    while True:
        states = [s for s in stack.compose.ps() if services is None or s.service in services]
        pending = [s for s in states if not (s.state == "running" and s.health in ("healthy", ""))]
        failed = [s for s in states if s.state in ("exited", "dead") or s.health == "unhealthy"]
        if states and not pending:
            return
        line = "waiting for " + ", ".join(f"{s.service} ({s.health or s.state})" for s in pending)
        if progress and line != last_line:
            progress(line)
            last_line = line
        # "unhealthy" means the healthcheck used up its retries: waiting longer will not help.
        if (failed and any(s.health == "unhealthy" for s in failed)) or time.monotonic() > deadline:
            if not states:
                raise MailstackError("no service of the stack is running")
            culprit = (failed or pending)[0]
            logs = stack.compose.logs(culprit.service, tail=25)
            raise MailstackError(
                f"service {culprit.service} is not healthy ({culprit.status}); last log lines:\n"
                + logs.rstrip(),
                hint=f"see `mailstack logs {culprit.service}`; fix, then `mailstack up` again",
            )
        time.sleep(1)


def down(stack: Stack, *, volumes: bool = False) -> None:
    args = ["down", "--remove-orphans"]
    if volumes:
        args.append("--volumes")
    stack.compose.run(args, timeout=300)


def restart(stack: Stack, service: str | None, timeout: float = 300) -> None:
    stack.dir.require_no_conflicts()
    known = set(stack.compose.images())
    if service is not None and service not in known:
        raise UsageError(
            f"service: {service!r} is not a service of this stack",
            hint=f"services: {', '.join(sorted(known))}",
        )
    stack.compose.run(["restart", *([service] if service else [])], timeout=timeout)
    wait_healthy(stack, [service] if service else None, timeout, None)


def status(stack: Stack) -> StackStatus:
    manifest = stack.dir.manifest()
    security = securitycheck.load(stack.dir.root)
    report = security.report
    return StackStatus(
        project=stack.config.project,
        services=tuple(stack.compose.ps_with_checks()),
        conflicts=tuple(manifest.conflicts),
        deleted_by_operator=tuple(manifest.deleted_by_operator),
        kept_dropped=tuple(manifest.kept_dropped),
        certificate_renewal=acme.read_state(stack.dir.root)
        if stack.config.tls.mode == "acme"
        else None,
        security=securitycheck.summary_line(report) if report else StackStatus.security,
        security_pending=bool(report and report.security_fixes),
        security_last_run=security.last_run.get("outcome", ""),
        last_alert=alert.line() if (alert := alerts.recent(stack.dir)) else "",
        relay_refused=relay.refusal_line(stack),
    )


# --- network overlap ---------------------------------------------------------------------------


def host_networks(exclude_project: str) -> list[tuple[str, ipaddress.IPv4Network]]:
    """Networks already in use here: host routes and Docker networks of other projects."""
    found: list[tuple[str, ipaddress.IPv4Network]] = []
    found += [("host route", net) for net in routes_from_proc(Path("/proc/net/route"))]
    for name, subnets in DOCKER.network_subnets(exclude_prefix=f"{exclude_project}_"):
        for subnet in subnets:
            try:
                network = ipaddress.ip_network(subnet, strict=False)
            except ValueError:
                continue
            if isinstance(network, ipaddress.IPv4Network):
                found.append((f"docker network {name}", network))
    return found


def routes_from_proc(path: Path) -> list[ipaddress.IPv4Network]:
    """Directly connected IPv4 networks from /proc/net/route (default route excluded)."""
    networks: list[ipaddress.IPv4Network] = []
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return networks
    for line in lines:
        fields = line.split()
        # Docker's own bridges are checked through `docker network inspect` instead.
        if len(fields) < 8 or fields[1] == "00000000" or fields[0].startswith(("br-", "docker")):
            continue
        destination = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
        mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
        networks.append(ipaddress.IPv4Network(f"{destination}/{mask}", strict=False))
    return networks


def check_subnets(config: Config, existing: list[tuple[str, ipaddress.IPv4Network]]) -> None:
    for key in ("frontend_subnet", "backend_subnet"):
        ours = ipaddress.ip_network(getattr(config.network, key))
        for name, network in existing:
            if ours.overlaps(network) and not network.is_loopback:
                raise UsageError(
                    f"mailstack.yaml: network.{key}: {ours} overlaps {name} ({network})",
                    hint="choose a free private subnet in mailstack.yaml, then run "
                    "`mailstack render`",
                )


def _say(progress: Progress | None, message: str) -> None:
    if progress:
        progress(message)
