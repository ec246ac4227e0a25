"""Recovery from a dependency's restart (issue 14), on the session stack.

While an outside MTA keeps sending, one dependency is stopped for about ten seconds and
started again. Every accepted message must be delivered, nothing may be refused with a 5xx,
and within 30 s of the dependency being healthy again a message to an address that was
tried all through the outage (the same sender and recipient, which Postfix caches) must be
in its mailbox. Then: the healthchecks, and so `mailstack status`, see names stop resolving.
"""

from __future__ import annotations

import json
import smtplib
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.e2e.conftest import RunningStack
from tests.e2e.mail import delivered, fetch_by_subject, send_inbound
from tests.e2e.steady import SteadySender, permanent

DOWN = 10  # seconds each dependency stays stopped
RECOVERY = 30  # seconds after it is healthy again by which mail must flow
DELIVERY = 120  # seconds for every accepted message to arrive (deferred ones: 30 s backoff)


def health(stack: RunningStack, service: str) -> str:
    """Docker's health of one service: healthy, unhealthy, starting, or its state."""
    raw = stack.compose("ps", "--all", "--format", "json", service).stdout.decode()
    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
    item = lines[0] if lines else {}
    return str(item.get("Health") or item.get("State") or "missing")


def stack_status(stack: RunningStack) -> dict[str, dict[str, object]]:
    """`mailstack status --json`: {service: its record}."""
    result = stack.cli("status", "--json", check=False)
    document = json.loads(result.stdout)
    return {str(s["service"]): s for s in document["services"]}


def wait_until_healthy(stack: RunningStack, services: list[str], timeout: float) -> float:
    """Wait until each service's healthcheck passes; return when that was (monotonic)."""
    deadline = time.monotonic() + timeout
    while any(health(stack, s) != "healthy" for s in services):
        assert time.monotonic() < deadline, f"{services} not healthy after {timeout}s"
        time.sleep(0.5)
    return time.monotonic()


@pytest.fixture
def healthy_stack(stack: RunningStack) -> Iterator[RunningStack]:
    """The session stack, left with every service healthy and every check passing."""
    yield stack
    deadline = time.monotonic() + 180
    while stack.cli("status", check=False).returncode != 0:
        assert time.monotonic() < deadline, stack.cli("status", check=False).stderr
        time.sleep(2)


@dataclass
class Prober:
    """Sends to one address every 2 s from one sender, recording when it was accepted."""

    address: str
    tag: str
    accepted: dict[str, float] = field(default_factory=dict)  # subject: when (monotonic)
    deferred: int = 0
    refused: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        number = 0
        while not self.stop.is_set():
            subject = f"{self.tag} probe {number:03d}"
            number += 1
            try:
                send_inbound([self.address], subject)
                self.accepted[subject] = time.monotonic()
            except (OSError, smtplib.SMTPException) as e:
                if permanent(e):
                    self.refused.append(f"{subject}: {e}")
                    return
                self.deferred += 1
            self.stop.wait(2)

    def first_accepted_after(self, moment: float, timeout: float) -> tuple[str, float]:
        deadline = moment + timeout
        while time.monotonic() < deadline:
            later = [(when, subject) for subject, when in self.accepted.items() if when > moment]
            if later:
                when, subject = min(later)
                return subject, when
            time.sleep(0.2)
        raise AssertionError(f"no probe accepted within {timeout}s ({self.deferred} deferred)")


def survives_restart(stack: RunningStack, service: str) -> None:
    steady_address, password = stack.new_mailbox()
    probe_address, _ = stack.new_mailbox(password)
    tag = f"recovery {service} {uuid.uuid4().hex[:8]}"
    sender = SteadySender(
        lambda subject: send_inbound([steady_address], f"{tag} {subject}"), interval=0.5
    )
    prober = Prober(probe_address, tag)
    probing = threading.Thread(target=prober.run, daemon=True)
    sender.start()
    probing.start()
    try:
        time.sleep(3)
        stopped = time.monotonic()
        stack.compose("stop", service)
        time.sleep(DOWN)
        stack.compose("start", service)
        healthy = wait_until_healthy(stack, [service], timeout=120)
        subject, accepted = prober.first_accepted_after(healthy, RECOVERY)
        fetch_by_subject(
            stack, probe_address, password, subject, timeout=max(1.0, healthy + RECOVERY - accepted)
        )
        flowing = time.monotonic() - healthy
        assert flowing <= RECOVERY, f"mail flowed {flowing:.0f}s after {service} was healthy"
    finally:
        prober.stop.set()
        sender.finish()
        probing.join(timeout=60)
    print(
        f"{service}: down {healthy - stopped:.0f}s until healthy; a probe to the address tried "
        f"during the outage delivered {flowing:.1f}s after; {len(sender.sent)} steady messages, "
        f"{sender.retries} retries; {prober.deferred} probes deferred"
    )
    assert not sender.refused and not prober.refused, sender.refused + prober.refused
    expected = {f"{tag} {subject}" for subject in sender.sent}
    deadline = time.monotonic() + DELIVERY
    while missing := expected - delivered(stack, steady_address, password, tag):
        assert time.monotonic() < deadline, f"{len(missing)} accepted message(s) lost: {missing}"
        time.sleep(3)
    missing_probes = set(prober.accepted) - delivered(stack, probe_address, password, tag)
    assert not missing_probes, f"accepted probes never delivered: {missing_probes}"


def test_mail_flows_within_30s_of_the_database_restarting(healthy_stack: RunningStack) -> None:
    survives_restart(healthy_stack, "db")


def test_mail_flows_within_30s_of_rspamd_restarting(healthy_stack: RunningStack) -> None:
    survives_restart(healthy_stack, "rspamd")


def test_mail_flows_within_30s_of_dovecot_restarting(healthy_stack: RunningStack) -> None:
    survives_restart(healthy_stack, "dovecot")


def test_mail_flows_within_30s_of_redis_restarting(healthy_stack: RunningStack) -> None:
    survives_restart(healthy_stack, "redis")


def test_mail_flows_within_30s_of_the_resolver_restarting(healthy_stack: RunningStack) -> None:
    survives_restart(healthy_stack, "resolver")


# --- names stop resolving ---------------------------------------------------------------------

# Services that connect to others by name. Docker's embedded DNS answers at 127.0.0.11 in each
# container's own network namespace; refusing that address there is what a lost record looks
# like to the container (no answer for any service name), while every connection stays up.
NAMED = ("postfix", "dovecot", "webmail")
DNS_LOSS = ["OUTPUT", "-d", "127.0.0.11", "-j", "REJECT", "-m", "comment", "--comment",
            "mailstack-e2e-dns-loss"]  # fmt: skip


def in_netns(stack: RunningStack, service: str, *argv: str) -> subprocess.CompletedProcess[str]:
    container = stack.compose("ps", "--quiet", service).stdout.decode().strip()
    pid = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Pid}}", container],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return subprocess.run(
        ["nsenter", "--target", pid, "--net", *argv], capture_output=True, text=True, check=False
    )


def test_status_shows_services_failing_when_names_stop_resolving(
    healthy_stack: RunningStack,
) -> None:
    stack = healthy_stack
    recipient, _ = stack.new_mailbox()
    blocked: list[str] = []
    try:
        for service in NAMED:
            assert in_netns(stack, service, "iptables", "-I", *DNS_LOSS).returncode == 0
            blocked.append(service)
        deadline = time.monotonic() + 60
        while True:
            services = stack_status(stack)
            failing = {
                name: str(services[name]["last_check"])
                for name in NAMED
                if int(str(services[name]["failing_checks"])) > 0
            }
            if len(failing) == len(NAMED) or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert set(failing) == set(NAMED), f"status saw only {failing}"
        for name, output in failing.items():
            assert "does not resolve" in output, f"{name}: {output}"
        # What the healthcheck says is what a sender meets: the milter cannot be reached.
        with pytest.raises(smtplib.SMTPException) as refused:
            send_inbound([recipient], "while names do not resolve")
        assert not permanent(refused.value), refused.value
    finally:
        for service in blocked:
            if in_netns(stack, service, "iptables", "-D", *DNS_LOSS).returncode != 0:
                stack.compose("restart", service)  # a fresh namespace has no such rule
    wait_until_healthy(stack, list(NAMED), timeout=120)
