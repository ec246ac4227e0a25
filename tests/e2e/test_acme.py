"""tls.mode acme end to end: pebble (the Let's Encrypt test server, Debian's package) inside
the test network issues the stack's certificate over real HTTP-01 through the front; the
daemons reload and keep their open connections; a due certificate is renewed, one not due
is left alone; a failed renewal is reported by `tls renew` and `status`; and the stack goes
back to its own certificate when the mode is switched back.

Shares the session stack: the fixture switches it to acme and back to selfsigned at the end.
"""

from __future__ import annotations

import imaplib
import ipaddress
import json
import smtplib
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from mailstack.mailauth import dkim
from mailstack.stack.config import validate_config
from mailstack.tls import acme, dane
from tests.e2e.conftest import DOMAIN, HOSTNAME, PORTS, PROJECT, SUBNETS, RunningStack
from tests.e2e.testca import server_certificate

PEBBLE_IMAGE = "mailstack-test/pebble"
PEBBLE_CONTEXT = Path(__file__).parent / "pebble"
FRONTEND = ipaddress.ip_network(SUBNETS[0])
PEBBLE_IP = str(FRONTEND.network_address + 70)  # below Docker's dynamic range (.128+)
RESOLVER_IP = str(FRONTEND.network_address + 53)  # the stack's resolver: the sandbox zone
NAMES = {HOSTNAME, f"mta-sts.{DOMAIN}", f"autoconfig.{DOMAIN}", f"autodiscover.{DOMAIN}"}
SECOND = "acme-second.example.test"  # a mail domain added once the certificate is there


@dataclass(frozen=True)
class Pebble:
    container: str
    trust: Path  # the API's CA and pebble's issuing root: what tls.ca_file names


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=900, check=check
    )


def _fetch(url: str, cafile: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(cafile))
    with urllib.request.urlopen(url, context=context, timeout=10) as response:  # noqa: S310
        body: bytes = response.read()
        return body


@pytest.fixture(scope="module")
def pebble(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    directory = tmp_path_factory.mktemp("pebble")
    directory.chmod(0o755)
    api_ca, _, _ = server_certificate(directory, PEBBLE_IP, "pebble")
    (directory / "config.json").write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": "0.0.0.0:14000",
                    "managementListenAddress": "0.0.0.0:15000",
                    "certificate": "/etc/pebble/cert.pem",
                    "privateKey": "/etc/pebble/key.pem",
                    "httpPort": 80,  # HTTP-01 on the real port: the front's
                    "tlsPort": 443,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    (directory / "config.json").chmod(0o644)
    _docker("build", "--quiet", "--tag", PEBBLE_IMAGE, str(PEBBLE_CONTEXT))
    container = f"{PROJECT}-pebble"
    _docker("rm", "--force", container, check=False)
    _docker(
        "run", "--detach", "--name", container,
        "--network", f"{PROJECT}_frontend", "--ip", PEBBLE_IP,
        "--env", "PEBBLE_VA_NOSLEEP=1", "--env", "PEBBLE_WFE_NONCEREJECT=0",
        "--volume", f"{directory}:/etc/pebble:ro",
        PEBBLE_IMAGE, "-config", "/etc/pebble/config.json",
        # Validation asks the stack's resolver: the sandbox zone names the front.
        "-dnsserver", f"{RESOLVER_IP}:53",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                root = _fetch(f"https://{PEBBLE_IP}:15000/roots/0", api_ca)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        trust = directory / "trust.pem"
        trust.write_bytes(api_ca.read_bytes() + root)
        yield Pebble(container, trust)
    finally:
        _docker("rm", "--force", container, check=False)


def _set_tls(stack: RunningStack, tls: dict[str, object]) -> None:
    path = stack.root / "mailstack.yaml"
    config = yaml.safe_load(path.read_text())
    config["tls"] = tls
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def acme_stack(stack: RunningStack, pebble: Pebble) -> Iterator[dict[str, object]]:
    tls: dict[str, object] = {
        "mode": "acme",
        "acme_server": f"https://{PEBBLE_IP}:14000/dir",
        "acme_email": f"postmaster@{DOMAIN}",
        "ca_file": str(pebble.trust),
    }
    _set_tls(stack, tls)
    try:
        yield tls
    finally:
        _set_tls(stack, {"mode": "selfsigned"})
        stack.cli("render")
        stack.cli("up", "--timeout", "400")
        # The stack's own certificate again, for the tests after this file.
        ca = x509.load_pem_x509_certificate((stack.root / "tls" / "ca.pem").read_bytes())
        for port, name in (("imaps", HOSTNAME), ("smtp", HOSTNAME), ("https", HOSTNAME)):
            served = _reloaded(stack, port, name, lambda cert: cert.issuer == ca.subject)
            assert served.issuer == ca.subject, port


def _reloaded(
    stack: RunningStack, port: str, name: str, taken: Callable[[x509.Certificate], bool]
) -> x509.Certificate:
    """The certificate served once the reload took effect: a reload is a signal, and each
    daemon starts serving the new files within moments, not at the instant it returns."""
    deadline = time.monotonic() + 20
    while True:
        served = _served(stack, port, name)
        if taken(served) or time.monotonic() > deadline:
            return served
        time.sleep(0.5)


def _served(stack: RunningStack, port: str, name: str) -> x509.Certificate:
    """The certificate a port serves (STARTTLS where the protocol has it), by SNI name."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # read what is served; verified separately below
    if port == "smtp":
        with smtplib.SMTP("127.0.0.1", PORTS["smtp"], local_hostname="client.example.net") as smtp:
            smtp.starttls(context=context)
            der = smtp.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    else:
        with (
            socket.create_connection(("127.0.0.1", PORTS[port]), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _spki(cert: x509.Certificate) -> str:
    return dane.spki_sha256(cert.public_key())


def _names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(san.value.get_values_for_type(x509.DNSName))


def _wanted(stack: RunningStack) -> list[str]:
    config = validate_config(yaml.safe_load((stack.root / "mailstack.yaml").read_text()))
    return acme.wanted_names(config, dkim.signing_domains(stack.root))


def _verified(stack: RunningStack, trust: Path, name: str) -> None:
    """A client that trusts pebble's root accepts the chain the front serves for `name`."""
    context = ssl.create_default_context(cafile=str(trust))
    context.check_hostname = False  # 127.0.0.1; the names are checked from the certificate
    with (
        socket.create_connection(("127.0.0.1", PORTS["https"]), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name),
    ):
        pass


def test_acme_issues_renews_reloads_and_reports(
    stack: RunningStack, pebble: Pebble, acme_stack: dict[str, object]
) -> None:
    # Before the switch: a logged-in IMAP session on the old certificate, kept open.
    address, password = stack.new_mailbox()
    session = imaplib.IMAP4_SSL("127.0.0.1", PORTS["imaps"], ssl_context=stack.tls_context())
    session.login(address, password)

    stack.cli("render")
    placeholder = _served(stack, "imaps", HOSTNAME)
    up = stack.cli("up", "--timeout", "400")
    assert "new certificate (the stack serves its own self-signed placeholder)" in up.stdout, (
        up.stdout
    )
    first = _reloaded(
        stack, "imaps", HOSTNAME, lambda cert: "Pebble" in cert.issuer.rfc4514_string()
    )
    assert "Pebble" in first.issuer.rfc4514_string()
    # certbot was handed a request signed by the placeholder's key: DANE's TLSA stays true.
    assert _spki(first) == _spki(placeholder)
    # Every mail domain's web names (earlier tests may have added domains): all validated.
    assert NAMES <= _names(first) == set(_wanted(stack))
    for port in ("smtp", "submissions", "imaps"):
        served = _reloaded(stack, port, HOSTNAME, lambda c: c.serial_number == first.serial_number)
        assert served.serial_number == first.serial_number, port
    for name in NAMES:
        served = _reloaded(stack, "https", name, lambda c: c.serial_number == first.serial_number)
        assert served.serial_number == first.serial_number, name
        _verified(stack, pebble.trust, name)
    key = stack.root / "tls" / "key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    # Reloaded, not restarted: the session opened before still works.
    assert session.noop()[0] == "OK"

    # Not due (pebble's certificates last five years; renewal 30 days before): left alone.
    again = stack.cli("tls", "renew")
    assert "not due for renewal" in again.stdout
    assert _served(stack, "imaps", HOSTNAME).serial_number == first.serial_number

    # Due: a renewal window longer than the certificate's life makes it due now.
    acme_stack["renew_days"] = 3650
    _set_tls(stack, acme_stack)
    renewed = stack.cli("tls", "renew", "--json")
    result = json.loads(renewed.stdout)
    assert result["renewed"] is True and "expires in" in result["reason"]
    assert sorted(result["reloaded"]) == ["dovecot", "front", "postfix"]  # every TLS daemon
    second = _reloaded(stack, "imaps", HOSTNAME, lambda c: c.serial_number != first.serial_number)
    assert second.serial_number != first.serial_number
    assert _spki(second) == _spki(first)  # a renewal keeps the key
    assert second.not_valid_after_utc.isoformat() == result["not_after"]
    for port in ("smtp", "submissions", "https"):
        served = _reloaded(stack, port, HOSTNAME, lambda c: c.serial_number == second.serial_number)
        assert served.serial_number == second.serial_number, port
    # `check tls` reports the new certificate: the chain ends at the CA of tls.ca_file, a
    # private root (exit 3, like the stack's own CA), every name covered.
    checked = stack.cli("check", "tls", DOMAIN, "--json", check=False)
    report = json.loads(checked.stdout)
    assert checked.returncode == 3, checked.stdout
    assert report["ok"] is True
    expiries = {
        endpoint["leaf"]["not_after"] for endpoint in report["endpoints"] if endpoint.get("leaf")
    }
    assert expiries == {result["not_after"]}, expiries
    assert session.noop()[0] == "OK"
    session.logout()

    # A new mail domain: its web names come with the next renewal, at once (never tried yet).
    added = stack.cli("domain", "add", SECOND)
    assert "at the next renewal" in added.stdout, added.stdout
    widened = json.loads(stack.cli("tls", "renew", "--json").stdout)
    assert widened["renewed"] is True and f"mta-sts.{SECOND}" in widened["reason"]
    third = _reloaded(
        stack, "https", f"mta-sts.{SECOND}", lambda c: c.serial_number != second.serial_number
    )
    assert {f"mta-sts.{SECOND}", f"autoconfig.{SECOND}", HOSTNAME} <= _names(third), json.dumps(
        widened
    )
    _verified(stack, pebble.trust, f"autodiscover.{SECOND}")
    stack.cli("domain", "remove", SECOND)
    status = json.loads(stack.cli("status", "--json").stdout)
    assert status["certificate_renewal"]["ok"] is True

    # A failed renewal: the ACME server is gone. One line, exit 1, recorded for `status`.
    _docker("stop", pebble.container)
    failed = stack.cli("tls", "renew", check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Traceback" not in failed.stderr
    assert "did not issue a certificate" in failed.stderr
    state = json.loads(stack.cli("status", "--json", check=False).stdout)["certificate_renewal"]
    assert state["ok"] is False and state["error"]
    shown = stack.cli("status", check=False)
    assert "certificate renewal failed" in shown.stdout + shown.stderr
    # The certificate served is still the good one.
    assert _served(stack, "imaps", HOSTNAME).serial_number == third.serial_number
