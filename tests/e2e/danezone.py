"""DANE for inbound mail, end to end: a DNSSEC-signed example.test zone, a validating Unbound
that serves it (and nothing else), and a real sending Postfix with `smtp_tls_security_level =
dane` that delivers to the stack's Postfix on port 25 over the stack's frontend network.

Both containers run from the stack's own images (resolver, postfix) with configurations of
this module. The zone is signed here with dnspython (one ECDSA P-256 key, flags 257), and
Unbound trusts the key by a static DS: it validates without any chain from the root.

    with dane_world(stack, directory) as world:
        world.publish(published_tlsa(stack))
        queue_id = world.send(recipient, subject)
        world.wait_for_attempts(queue_id)  # each attempt: the smtp process's lines

The resolver's address also serves other checks against the signed zone (e.g. `mailstack
check dns --resolver ADDRESS`): publish() takes extra zone lines for that.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.dnssec
import dns.dnssectypes
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rrset
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.conftest import DOMAIN, HOSTNAME, PROJECT, SUBNETS, RunningStack
from tests.e2e.mail import message

ZONE = dns.name.from_text(DOMAIN)
TLSA_NAME = f"_25._tcp.{HOSTNAME}."
SENDER_NAME = "sender.dane.test"
SENDER_ADDRESS = f"someone@{SENDER_NAME}"
RESOLVER = f"{PROJECT}-dane-resolver"
SENDER = f"{PROJECT}-dane-sender"
NETWORK = f"{PROJECT}_frontend"
# Short: each smtp process of Postfix keeps TLSA answers for their TTL (Unbound's cache is
# emptied by the reload of every publish, and the sender's processes restart too).
TTL = 2
CONFIG_DIR = "/etc/danetest"
ZONE_FILE = "example.test.zone"

# Unbound serves the signed zone itself: an auth-zone for-upstream is answered as if by an
# authoritative server, so its answers go through the validator, which trusts the DS below.
# "." static answers every other name NXDOMAIN at once, so nothing leaves the container; the
# more specific transparent example.test. lets names under it through to the auth zone (it
# also overrides Unbound's built-in static test. zone: no `test. nodefault` is needed).
UNBOUND_CONF = """\
server:
    verbosity: 1
    val-log-level: 2
    use-syslog: no
    logfile: ""
    interface: 0.0.0.0
    port: 53
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    access-control: 0.0.0.0/0 refuse
    access-control: 127.0.0.0/8 allow
    access-control: {frontend} allow
    # root in a throwaway container: it reads the zone from a root-only bind mount.
    username: ""
    chroot: ""
    directory: "{config_dir}"
    module-config: "validator iterator"
    trust-anchor: "{anchor}"
    trust-anchor-signaling: no
    local-zone: "." static
    local-zone: "{zone}" transparent

remote-control:
    control-enable: yes
    control-use-cert: no
    control-interface: "/run/danetest-unbound.ctl"

auth-zone:
    name: "{zone}"
    zonefile: "{config_dir}/{zone_file}"
    for-upstream: yes
    for-downstream: no
    fallback-enabled: no
"""

# The sender: the package's master.cf with chroot off (nothing copies resolv.conf into a
# chroot under start-fg) and a main.cf of a few lines. dnssec_probe asks the signed zone
# (the default asks the root, which the resolver does not serve). Retries come only from
# flush(): a test decides when the next attempt is.
SENDER_SCRIPT = f"""\
set -eu
: > /etc/postfix/main.cf
postconf -e \\
    compatibility_level=3.6 \\
    myhostname={SENDER_NAME} \\
    mydestination= \\
    inet_interfaces=loopback-only \\
    inet_protocols=ipv4 \\
    maillog_file=/dev/stdout \\
    smtp_dns_support_level=dnssec \\
    smtp_tls_security_level=dane \\
    smtp_tls_loglevel=1 \\
    dnssec_probe=soa:{DOMAIN}. \\
    queue_run_delay=3600s \\
    minimal_backoff_time=3600s \\
    maximal_backoff_time=3600s
postconf -F '*/*/chroot = n'
postfix check
exec postfix start-fg
"""

_SMTP_LINE = re.compile(r" postfix/smtp\[(\d+)\]: (.*)$")


def published_tlsa(stack: RunningStack) -> list[str]:
    """The TLSA data `mailstack dns records` tells the operator to publish (the served key's
    first, then the next key's)."""
    records = json.loads(stack.cli("dns", "records", "--json").stdout)
    return [
        record["data"]
        for group in records["groups"]
        for record in group["records"]
        if record["kind"] == "TLSA"
    ]


def wait_until(check: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    """Poll check every half second; fail with what() after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:.0f} s: {what()}")
        time.sleep(0.5)


def _docker(*args: str, stdin: bytes | None = None, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], input=stdin, capture_output=True, check=False)
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} … exited {done.returncode}:\n{output}")
    return output


def _remove(container: str) -> None:
    subprocess.run(
        ["docker", "rm", "--force", "--volumes", container], capture_output=True, check=False
    )


def _running(container: str) -> bool:
    state = _docker("inspect", "--format", "{{.State.Running}}", container, check=False)
    return state.strip() == "true"


def _frontend_address(container: str) -> str:
    address = _docker(
        "inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}',
        container,
    ).strip()  # fmt: skip
    assert address, f"{container} has no address on {NETWORK}"
    return address


@dataclass
class DaneWorld:
    """The signed zone, its validating resolver and the sending Postfix, for one stack."""

    stack: RunningStack
    directory: Path
    # The one zone key of every publish: Unbound's trust anchor never changes.
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    serial: int = field(default_factory=lambda: int(time.time()))
    resolver_address: str = ""
    mx_address: str = ""  # the stack's Postfix on the frontend network, as last published

    @property
    def dnskey(self) -> dns.rdtypes.ANY.DNSKEY.DNSKEY:
        return dns.dnssec.make_dnskey(
            self.key.public_key(), dns.dnssectypes.Algorithm.ECDSAP256SHA256, flags=257
        )

    @property
    def trust_anchor(self) -> str:
        ds = dns.dnssec.make_ds(ZONE, self.dnskey, "SHA256")
        return f"{ZONE} DS {ds.to_text()}"

    def zone_text(
        self, tlsa: Sequence[str], extra: Sequence[str] = (), forged: bool = False
    ) -> str:
        """The signed zone: SOA, NS, MX, the MX host's A, its TLSA records and extra zone
        lines with absolute names. forged changes the A after signing: a bad signature."""
        lines = [
            f"{ZONE} {TTL} IN SOA {HOSTNAME}. hostmaster.{ZONE} {self.serial} 3600 600 86400 {TTL}",
            f"{ZONE} {TTL} IN NS {HOSTNAME}.",
            f"{ZONE} {TTL} IN MX 10 {HOSTNAME}.",
            f"{HOSTNAME}. {TTL} IN A {self.mx_address}",
            *(f"{TLSA_NAME} {TTL} IN TLSA {rdata}" for rdata in tlsa),
            *extra,
        ]
        zone = dns.zone.from_text("\n".join(lines) + "\n", origin=ZONE, relativize=False)
        now = datetime.datetime.now(datetime.UTC)
        dns.dnssec.sign_zone(
            zone,
            keys=[(self.key, self.dnskey)],
            inception=now - datetime.timedelta(hours=1),  # clock skew is harmless
            expiration=now + datetime.timedelta(days=1),
        )
        if forged:
            with zone.writer() as txn:  # the A's RRSIG stays, now over other data
                name = dns.name.from_text(HOSTNAME)
                txn.replace(name, dns.rrset.from_text(name, TTL, "IN", "A", "192.0.2.1"))
        return zone.to_text(relativize=False)

    def publish(self, tlsa: Sequence[str], extra: Sequence[str] = (), forged: bool = False) -> None:
        """Serve a newly signed zone with these TLSA rdata ("3 1 1 <hex>") for the MX host,
        and wait until the resolver answers from it. The A is the stack's Postfix as it is
        now (a recreated container may have another address)."""
        self.serial += 1
        self.mx_address = self.stack.addresses("postfix")["frontend"]
        zone_file = self.directory / ZONE_FILE
        zone_file.with_suffix(".new").write_text(self.zone_text(tlsa, extra, forged))
        zone_file.with_suffix(".new").replace(zone_file)
        (self.directory / "unbound.conf").write_text(
            UNBOUND_CONF.format(
                frontend=SUBNETS[0], config_dir=CONFIG_DIR, anchor=self.trust_anchor,
                zone=ZONE, zone_file=ZONE_FILE,
            )
        )  # fmt: skip
        if self.resolver_address:
            # A reload re-reads the zone file and empties the cache.
            self.unbound_control("reload")
            wait_until(
                self._serves_this_serial, 15, lambda: "unbound did not reload:\n" + _logs(RESOLVER)
            )
        if _running(SENDER):
            # New smtp processes: none holds a TLSA answer of the zone before.
            _docker("exec", SENDER, "postfix", "reload")

    def _serves_this_serial(self) -> bool:
        try:
            answer = self.query(DOMAIN, "SOA")
        except (dns.exception.Timeout, OSError):
            return False
        soa = answer.get_rrset(answer.answer, ZONE, dns.rdataclass.IN, dns.rdatatype.SOA)
        return soa is not None and soa[0].serial == self.serial

    def query(self, name: str, rdtype: str) -> dns.message.Message:
        """Ask the resolver from the host (which reaches the frontend bridge directly), with
        DNSSEC records: answer.flags has AD when the resolver validated the answer."""
        request = dns.message.make_query(name, rdtype, want_dnssec=True)
        return dns.query.udp(request, self.resolver_address, timeout=3)

    def unbound_control(self, *command: str, check: bool = True) -> str:
        return _docker(
            "exec", RESOLVER, "unbound-control", "-c", f"{CONFIG_DIR}/unbound.conf", *command,
            check=check,
        )  # fmt: skip

    def start(self) -> None:
        """The resolver (with the zone published last), then the sender pointed at it."""
        self.close()
        _docker(
            "run", "--detach", "--name", RESOLVER, "--network", NETWORK,
            "--volume", f"{self.directory}:{CONFIG_DIR}:ro",
            "--entrypoint", "unbound", self.stack.image("resolver"),
            "-d", "-p", "-c", f"{CONFIG_DIR}/unbound.conf",
        )  # fmt: skip
        self.resolver_address = _frontend_address(RESOLVER)
        wait_until(
            self._serves_this_serial, 30, lambda: "unbound did not start:\n" + _logs(RESOLVER)
        )
        # A resolv.conf of ours, not --dns: Docker's embedded DNS (127.0.0.11) answers
        # mail.example.test itself, unsigned, with the address of every container of that
        # hostname (postfix and dovecot), so Postfix would find no secure A and skip DANE.
        # trust-ad: glibc clears the AD bit of answers unless resolv.conf says so.
        resolv = self.directory / "sender-resolv.conf"
        resolv.write_text(f"nameserver {self.resolver_address}\noptions trust-ad\n")
        _docker(
            "run", "--detach", "--name", SENDER, "--network", NETWORK,
            "--hostname", SENDER_NAME, "--volume", f"{resolv}:/etc/resolv.conf:ro",
            "--entrypoint", "/bin/sh", self.stack.image("postfix"), "-c", SENDER_SCRIPT,
        )  # fmt: skip
        wait_until(
            lambda: "daemon started" in self.sender_log(),
            30, lambda: "the sending Postfix did not start:\n" + self.sender_log(),
        )  # fmt: skip

    def close(self) -> None:
        _remove(SENDER)
        _remove(RESOLVER)

    def send(self, recipient: str, subject: str) -> str:
        """Hand a message to the sender's sendmail; return its queue id."""
        mail = message(SENDER_ADDRESS, recipient, subject)
        message_id = str(mail["Message-ID"])
        _docker("exec", "-i", SENDER, "sendmail", "-f", SENDER_ADDRESS, "--", recipient,
                stdin=mail.as_bytes())  # fmt: skip
        pattern = re.compile(rf"\b([0-9A-F]+): message-id={re.escape(message_id)}$", re.MULTILINE)
        wait_until(
            lambda: pattern.search(self.sender_log()) is not None,
            30, lambda: f"{message_id} never reached cleanup:\n{self.tail()}",
        )  # fmt: skip
        found = pattern.search(self.sender_log())
        assert found is not None
        return found.group(1)

    def sender_log(self) -> str:
        return _logs(SENDER)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.sender_log().splitlines()[-lines:])

    def attempts(self, queue_id: str) -> list[list[str]]:
        """Each delivery attempt of a message: the log lines of its smtp process since that
        process's verdict before (connection, TLS), ending with this verdict (status=…)."""
        pending: dict[str, list[str]] = {}
        found: list[list[str]] = []
        for line in self.sender_log().splitlines():
            matched = _SMTP_LINE.search(line)
            if matched is None:
                continue
            pid, text = matched.groups()
            pending.setdefault(pid, []).append(text)
            if "status=" in text:
                lines = pending.pop(pid)
                if text.startswith(f"{queue_id}: to=<"):
                    found.append(lines)
        return found

    def wait_for_attempts(
        self, queue_id: str, count: int = 1, timeout: float = 60
    ) -> list[list[str]]:
        wait_until(
            lambda: len(self.attempts(queue_id)) >= count,
            timeout, lambda: f"{queue_id}: fewer than {count} attempt(s):\n{self.tail()}",
        )  # fmt: skip
        return self.attempts(queue_id)

    def flush(self) -> None:
        """Try deferred mail again now (its backoff is an hour: only this retries it)."""
        _docker("exec", SENDER, "postqueue", "-f")

    def queued(self) -> list[dict[str, Any]]:
        """The sender's queue, one `postqueue -j` object a message."""
        out = _docker("exec", SENDER, "postqueue", "-j")
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _logs(container: str) -> str:
    return _docker("logs", container, check=False)


@contextlib.contextmanager
def dane_world(stack: RunningStack, directory: Path) -> Iterator[DaneWorld]:
    """A started DaneWorld (its zone with no TLSA record yet), removed again on exit."""
    world = DaneWorld(stack, directory)
    try:
        world.publish([])
        world.start()
        yield world
    finally:
        world.close()
