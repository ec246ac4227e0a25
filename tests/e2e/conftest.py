"""End-to-end fixtures: one real stack per test session, on the real Docker engine.

The stack runs in sandbox mode (local DNS zone, outbound mail to a sink) with its ports on
127.0.0.1, behind an egress guard: a DOCKER-USER rule that drops anything a container on a
Compose bridge sends off its bridge. The rule is removed when the session ends, also on failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mailstack.images import imagerefs

HOSTNAME = "mail.example.test"
DOMAIN = "example.test"


def _slot() -> int:
    """MAILSTACK_E2E_SLOT=1..7 runs a second test session beside the first (own project name,
    ports and subnets), e.g. while developing one area; CI uses slot 0. Under pytest-xdist
    (scripts/test.sh runs two workers) worker gw0 keeps that slot and worker gwN takes the
    slot 7 + N above it, past the ones developers use."""
    base = int(os.environ.get("MAILSTACK_E2E_SLOT", "0"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    return base + 7 + worker if worker else base


SLOT = _slot()
PROJECT = "mailstack-e2e" + (str(SLOT) if SLOT else "")


def slot_base(slot: int) -> int:
    """Where a slot's published ports start (each port is this plus a fixed offset)."""
    return 2000 if slot == 0 else 30000 + 100 * slot


def slot_ports(slot: int) -> dict[str, int]:
    """The published ports of a slot's stack, on the host's loopback."""
    base = slot_base(slot)
    if slot == 0:
        offsets = {"smtp": 525, "submission": 587, "submissions": 465, "imap": 143,
                   "imaps": 993, "http": 80, "https": 443, "managesieve": 4190,
                   "pop3": 110, "pop3s": 995}  # fmt: skip
    else:
        offsets = {"smtp": 25, "submission": 87, "submissions": 65, "imap": 43,
                   "imaps": 93, "http": 80, "https": 44, "managesieve": 90,
                   "pop3": 10, "pop3s": 95}  # fmt: skip
    return {name: base + offset for name, offset in offsets.items()}


PORTS = slot_ports(SLOT)


def side_stack_ports(shift: int, side: int) -> dict[str, int]:
    """The ports of a side stack (test_update: side 1, test_security_update: side 2): in
    slot 0 each session port shifted by `shift`, which no port of slot 0 uses; in another
    slot the layout of a slot of its own, 20 x side above (a shift there would land on
    another port of the slot: 80 + 7 is the submission port)."""
    if SLOT == 0:
        return {name: port + shift for name, port in PORTS.items()}
    return slot_ports(SLOT + 20 * side)


SUBNETS = (
    ("172.29.90.0/24", "172.29.91.0/24")
    if SLOT == 0
    else (f"172.30.{2 * SLOT}.0/24", f"172.30.{2 * SLOT + 1}.0/24")
)
# monitoring.metrics is on in the session stack (tests/e2e/test_metrics.py scrapes it): its
# port on the host's loopback and its network, each the slot's own.
METRICS_PORT = slot_base(SLOT) + (9154 if SLOT == 0 else 54)
METRICS_SUBNET = f"172.29.{96 + SLOT}.0/24"
# Where every test client on the host arrives from: the frontend network's gateway.
GATEWAY = str(ipaddress.ip_network(SUBNETS[0]).network_address + 1)
BUILD_LOCK = Path("/tmp/mailstack-e2e-build.lock")
GUARD_RULE = [
    "DOCKER-USER",
    "-i",
    "br+",
    "!",
    "-o",
    "br+",
    "-j",
    "DROP",
    "-m",
    "comment",
    "--comment",
    "mailstack-e2e-egress-guard",
]


def mailstack(
    *args: str, stdin: str | None = None, check: bool = True, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI, as an operator would."""
    result = subprocess.run(
        [sys.executable, "-m", "mailstack", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"mailstack {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@dataclass(frozen=True)
class RunningStack:
    root: Path
    ca_file: Path

    def cli(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return mailstack(*args, "--dir", str(self.root), stdin=stdin, check=check, timeout=timeout)

    def compose(
        self, *args: str, stdin: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                "docker",
                "compose",
                "--project-name",
                PROJECT,
                "--project-directory",
                str(self.root),
                "--file",
                str(self.root / "compose.yaml"),
                *args,
            ],
            input=stdin,
            capture_output=True,
            timeout=300,
            check=check,
        )

    def container(self, service: str) -> str:
        """The id of the service's running container."""
        container = self.compose("ps", "--quiet", service).stdout.decode().strip()
        assert container, f"{service} is not running"
        return container

    def image(self, name: str) -> str:
        """The image the stack runs for this build context (postfix, resolver, …), as
        mailstack recorded it in the stack's .env."""
        recorded = imagerefs.read(self.root)
        if name not in recorded:
            raise AssertionError(f"no {name} image recorded in {self.root / imagerefs.ENV_FILE}")
        return recorded[name]

    def addresses(self, service: str) -> dict[str, str]:
        """The service's container address on each network: {"frontend": …, "backend": …}."""
        networks = json.loads(
            subprocess.run(
                ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}",
                 self.container(service)],
                capture_output=True, text=True, check=True,
            ).stdout
        )  # fmt: skip
        prefix = f"{PROJECT}_"
        return {
            name.removeprefix(prefix): str(network["IPAddress"])
            for name, network in networks.items()
            if name.startswith(prefix)
        }

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.check_hostname = False  # we connect to 127.0.0.1; the chain is still verified
        return context

    def new_mailbox(
        self,
        password: str = "Correct-horse-42-battery",  # noqa: S107  # a test account
    ) -> tuple[str, str]:
        address = f"user-{uuid.uuid4().hex[:10]}@{DOMAIN}"
        self.cli("mailbox", "add", address, "--password-stdin", stdin=password + "\n")
        return address, password


def _docker_usable() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    )


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    with BUILD_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def egress_guard() -> Iterator[None]:
    subprocess.run(["iptables", "-N", "DOCKER-USER"], capture_output=True, check=False)
    subprocess.run(["iptables", "-I", *GUARD_RULE], check=True)
    try:
        yield
    finally:
        # One rule per session: a session beside this one (another slot) keeps its own.
        subprocess.run(["iptables", "-D", *GUARD_RULE], capture_output=True, check=False)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, egress_guard: None) -> Iterator[RunningStack]:
    if not _docker_usable():
        pytest.fail("end-to-end tests need a running Docker engine: run scripts/setup-host.sh")
    root = tmp_path_factory.mktemp("e2e") / "stack"
    mailstack(
        "init",
        "--non-interactive",
        "--sandbox",
        "--bind",
        "127.0.0.1",
        "--hostname",
        HOSTNAME,
        "--domain",
        DOMAIN,
        "--dir",
        str(root),
    )
    config_path = root / "mailstack.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["project"] = PROJECT
    config["features"]["antivirus"] = False
    # POP3 on both doors (tests/e2e/test_pop3.py; `check tls` and testssl see them too).
    config["features"]["pop3"] = config["features"]["pop3_starttls"] = True
    config["network"]["frontend_subnet"], config["network"]["backend_subnet"] = SUBNETS
    config["network"]["ports"] = dict(PORTS)
    config["monitoring"] = {
        "metrics": True,
        "metrics_port": METRICS_PORT,
        "metrics_subnet": METRICS_SUBNET,
    }
    # Every test client reaches the stack from one address (the bridge gateway, through the
    # loopback proxy), and testssl alone opens hundreds of connections a minute.
    config.setdefault("policy", {}).setdefault("rate_limits", {})
    config["policy"]["rate_limits"]["client_connections_per_minute"] = 0
    # The same single address (the gateway) tries wrong passwords in several tests: it is
    # exempt from brute-force bans; test_bans.py connects from other addresses of its own.
    config["policy"].setdefault("bans", {})["exempt_networks"] = [GATEWAY]
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    mailstack("render", "--dir", str(root))
    # Build (layer cache: quick when nothing changed) so the images match compose/ as checked out.
    # One session builds at a time: a second (another xdist worker or slot) then finds every
    # image built instead of debootstrapping and building the same ones beside it.
    with _build_lock():
        mailstack("build", "--dir", str(root))
    running = RunningStack(root, root / "tls" / "ca.pem")
    _down(running)
    try:
        up = mailstack("up", "--dir", str(root), "--timeout", "400", check=False)
        if up.returncode != 0:
            _print_logs(running)
            raise AssertionError(f"mailstack up failed:\n{up.stdout}\n{up.stderr}")
        yield running
    finally:
        if sys.exc_info()[0] is not None:
            _print_logs(running)
        _down(running)


def _down(running: RunningStack) -> None:
    """Down with its volumes, the project's volumes the compose file no longer names (a
    module that turned a feature on and off again, e.g. the antivirus's signatures), and the
    backup jobs' cache (a volume of mailstack's own, outside Compose)."""
    running.compose("down", "--volumes", "--remove-orphans", check=False)
    listed = subprocess.run(
        ["docker", "volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    volumes = [*listed.stdout.split(), f"{PROJECT}-backup-cache"]
    subprocess.run(
        ["docker", "volume", "rm", "--force", *volumes], capture_output=True, check=False
    )


def _print_logs(running: RunningStack) -> None:
    logs = running.compose("logs", "--no-color", "--tail", "60", check=False)
    sys.stderr.write(logs.stdout.decode(errors="replace") + logs.stderr.decode(errors="replace"))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Print every container's last log lines when an end-to-end test fails."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "stack" in item.fixturenames:
        running = item.funcargs.get("stack")
        if isinstance(running, RunningStack):
            _print_logs(running)
