"""A relay host (smarthost, relay.* in mailstack.yaml) on the session stack: every outbound
message goes through it over verified TLS with SASL, never to the sink; a wrong password
leaves mail queued with a 4xx, `check health` and `status` name it, and mail flows once the
right one is stored; the password is in no rendered file and no log. A second hosted domain
has a relay of its own (relay.by_sender_domain) with its own user: its mail goes there,
everyone else's to the default relay, and a wrong password for it holds back its mail alone.

Each relay is a real SMTP server (aiosmtpd) in this test process on the stack's frontend
gateway, the address the sandbox zone names sandbox-client.<domain>, on a port of its own:
STARTTLS required before AUTH, a certificate for that name from a CA of this test's own
(relay.ca_file, which verifies both).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.e2e.conftest import DOMAIN, GATEWAY, SLOT, RunningStack
from tests.e2e.mail import message, submit, unique_subject
from tests.e2e.testca import server_certificate

pytestmark = pytest.mark.e2e

RELAY_NAME = f"sandbox-client.{DOMAIN}"  # the sandbox zone's name for the frontend gateway
RELAY_PORT = 10587 + SLOT
RELAY_USER = "mailstack-relay@provider.test"
RELAY_PASSWORD = "Relay secret 42 with spaces"  # the test relay's own
OUTSIDE = "someone@elsewhere.test"  # no MX anywhere: only the relay can take it
# The second domain's own relay (relay.by_sender_domain), on the same name, another port.
OWN_PORT = 10650 + SLOT
OWN_USER = "mailstack-own@own-provider.test"
OWN_PASSWORD = "Own relay's secret 7"  # the test relay's own
OWN_DOMAIN = f"own-{uuid.uuid4().hex[:8]}.example.test"


@dataclass
class Relayed:
    """What the relay accepted: each message with the session's TLS and SASL user."""

    messages: list[tuple[str, bool, str, bytes]] = field(default_factory=list)
    refused_logins: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def subjects(self) -> set[str]:
        with self.lock:
            return {str(message_from_bytes(m[3])["Subject"]) for m in self.messages}

    def wait_for(self, subject: str, timeout: float = 60) -> tuple[str, bool, str, bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for found in self.messages:
                    if str(message_from_bytes(found[3])["Subject"]) == subject:
                        return found
            time.sleep(0.5)
        raise AssertionError(f"the relay did not receive {subject!r} within {timeout:.0f} s")


class RelayHandler:
    def __init__(self, relayed: Relayed) -> None:
        self.relayed = relayed

    async def handle_DATA(  # noqa: N802  # the name aiosmtpd calls
        self, server: Any, session: Session, envelope: Envelope
    ) -> str:
        assert isinstance(envelope.content, bytes)
        with self.relayed.lock:
            self.relayed.messages.append(
                (
                    str(session.auth_data.login.decode() if session.auth_data else ""),
                    session.ssl is not None,
                    envelope.mail_from or "",
                    envelope.content,
                )
            )
        return "250 OK queued at the relay"


def _authenticator(relayed: Relayed, user: str, password: str) -> Any:
    def authenticate(
        server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        good = (
            isinstance(data, LoginPassword)
            and data.login == user.encode()
            and data.password == password.encode()
        )
        if not good:
            relayed.refused_logins += 1
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=data)

    return authenticate


@dataclass
class RelayStack:
    stack: RunningStack
    relayed: Relayed  # the default relay's (relay.host)
    sender: str
    password: str
    own_relayed: Relayed  # OWN_DOMAIN's relay's (relay.by_sender_domain)
    own_sender: str

    def send(self, subject: str, sender: str | None = None) -> None:
        sender = sender or self.sender
        submit(self.stack, sender, self.password, message(sender, OUTSIDE, subject))

    def store_password(self, password: str, *domain: str) -> subprocess.CompletedProcess[str]:
        option = ["--domain", *domain] if domain else []
        return self.stack.cli(
            "relay", "password", *option, "--password-stdin", stdin=password + "\n"
        )


def _relay_server(
    context: ssl.SSLContext, port: int, user: str, password: str
) -> tuple[Controller, Relayed]:
    relayed = Relayed()
    controller = Controller(
        RelayHandler(relayed),
        hostname=GATEWAY,
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_require_tls=True,
        authenticator=_authenticator(relayed, user, password),
        server_hostname=RELAY_NAME,
    )
    controller.start()
    return controller, relayed


def _queued_reasons(stack: RunningStack) -> dict[str, str]:
    """{sender: the delay reasons of its queued messages}."""
    listed = json.loads(stack.cli("queue", "list", "--json").stdout)["messages"]
    reasons: dict[str, str] = {}
    for queued in listed:
        said = " ".join(r["delay_reason"] for r in queued["recipients"])
        reasons[queued["sender"]] = reasons.get(queued["sender"], "") + " " + said
    return reasons


def _relay_item(stack: RunningStack) -> dict[str, Any]:
    report = json.loads(stack.cli("check", "health", "--json", check=False).stdout)
    [item] = [i for i in report["items"] if i["name"] == "relay host"]
    return item  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def relay(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayStack]:
    directory = tmp_path_factory.mktemp("relay")
    ca, cert, key = server_certificate(directory, RELAY_NAME)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    controller, relayed = _relay_server(context, RELAY_PORT, RELAY_USER, RELAY_PASSWORD)
    own_controller, own_relayed = _relay_server(context, OWN_PORT, OWN_USER, OWN_PASSWORD)
    path = stack.root / "mailstack.yaml"
    before = path.read_text()
    config = yaml.safe_load(before)
    config["relay"] = {
        "host": RELAY_NAME,
        "port": RELAY_PORT,
        "username": RELAY_USER,
        "ca_file": str(ca),
        "by_sender_domain": [
            {"domain": OWN_DOMAIN, "host": RELAY_NAME, "port": OWN_PORT, "username": OWN_USER}
        ],
    }
    sender, password = stack.new_mailbox()
    stack.cli("domain", "add", OWN_DOMAIN)
    own_sender = f"user-{uuid.uuid4().hex[:10]}@{OWN_DOMAIN}"
    stack.cli("mailbox", "add", own_sender, "--password-stdin", stdin=password + "\n")
    try:
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        yield RelayStack(stack, relayed, sender, password, own_relayed, own_sender)
    finally:
        path.write_text(before)
        for name in ("relay_password", f"relay_password.{OWN_DOMAIN}"):
            (stack.root / "secrets" / name).unlink(missing_ok=True)
        listed = json.loads(stack.cli("queue", "list", "--json").stdout)["messages"]
        for queued in listed:
            stack.cli("queue", "delete", queued["queue_id"], check=False)
        stack.cli("render")
        stack.cli("up", timeout=900)
        controller.stop()
        own_controller.stop()


def test_a_up_without_a_password_names_the_missing_secret(relay: RelayStack) -> None:
    result = relay.stack.cli("up", check=False)
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "relay.username" in said and "secrets/relay_password " in said, said
    assert "mailstack relay password" in said and "Traceback" not in said, said
    stored = relay.store_password(RELAY_PASSWORD)
    assert "stored secrets/relay_password" in stored.stdout, stored.stdout
    # The default relay's password is there now; the sender domain's is not.
    result = relay.stack.cli("up", check=False)
    said = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in said, said
    assert f"secrets/relay_password.{OWN_DOMAIN} is missing" in said, said
    assert f"mailstack relay password --domain {OWN_DOMAIN}" in said, said


def test_b_mail_goes_through_its_senders_relay_over_tls_with_sasl_not_to_the_sink(
    relay: RelayStack,
) -> None:
    stored = relay.store_password(OWN_PASSWORD, OWN_DOMAIN)
    assert f"stored secrets/relay_password.{OWN_DOMAIN}" in stored.stdout, stored.stdout
    for name in ("relay_password", f"relay_password.{OWN_DOMAIN}"):
        assert (relay.stack.root / "secrets" / name).stat().st_mode & 0o777 == 0o600
    relay.stack.cli("render")
    relay.stack.cli("up", timeout=900)
    subject, own_subject = unique_subject("relayed"), unique_subject("own relay")
    relay.send(subject)
    relay.send(own_subject, relay.own_sender)
    user, tls, sender, content = relay.relayed.wait_for(subject)
    assert (user, tls, sender) == (RELAY_USER, True, relay.sender)
    assert b"DKIM-Signature:" in content  # signed before it left, as direct mail is
    user, tls, sender, _ = relay.own_relayed.wait_for(own_subject)
    assert (user, tls, sender) == (OWN_USER, True, relay.own_sender)
    # Each relay saw its own sender's mail only.
    assert own_subject not in relay.relayed.subjects()
    assert subject not in relay.own_relayed.subjects()
    for each in (subject, own_subject):
        sink = relay.stack.compose(
            "exec", "-T", "sink", "grep", "-rl", each, "/var/mail/sink", check=False
        )
        assert sink.returncode != 0, "the message reached the sink too"


def _wait_for_refusals(stack: RunningStack, senders: set[str]) -> dict[str, str]:
    """The queue's delay reasons once each sender's mail waits on a refusal (60 s at most)."""
    deadline = time.monotonic() + 60
    reasons: dict[str, str] = {}
    while time.monotonic() < deadline:
        reasons = _queued_reasons(stack)
        if all("SASL authentication failed" in reasons.get(s, "") for s in senders):
            break
        time.sleep(1)
    return reasons


def test_c_wrong_passwords_queue_mail_with_a_4xx_and_health_and_status_name_each_relay(
    relay: RelayStack,
) -> None:
    relay.store_password("not the relay's password")
    relay.store_password("not the own relay's password", OWN_DOMAIN)
    refused_before = relay.relayed.refused_logins, relay.own_relayed.refused_logins
    subject, own_subject = unique_subject("refused"), unique_subject("own refused")
    relay.send(subject)
    relay.send(own_subject, relay.own_sender)
    reasons = _wait_for_refusals(relay.stack, {relay.sender, relay.own_sender})
    for sender in (relay.sender, relay.own_sender):
        assert "SASL authentication failed" in reasons.get(sender, ""), reasons
    assert relay.relayed.refused_logins > refused_before[0]
    assert relay.own_relayed.refused_logins > refused_before[1]
    assert subject not in relay.relayed.subjects()
    assert own_subject not in relay.own_relayed.subjects()

    item = _relay_item(relay.stack)
    assert item["verdict"] == "FAIL", item
    assert f"{RELAY_NAME} refuses the credentials" in item["detail"], item
    assert f"{RELAY_NAME} (mail from {OWN_DOMAIN}) refuses the credentials" in item["detail"]
    assert "`mailstack relay password`" in item["fix"], item
    assert f"`mailstack relay password --domain {OWN_DOMAIN}`" in item["fix"], item
    status = relay.stack.cli("status", check=False)
    said = status.stdout + status.stderr
    assert f"relay: {RELAY_NAME} refuses the credentials" in said, said
    assert f"relay: {RELAY_NAME} (mail from {OWN_DOMAIN}) refuses" in said, said

    # The default relay's right password: its mail leaves; the domain's alone still waits.
    relay.store_password(RELAY_PASSWORD)
    relay.stack.cli("queue", "retry", "--all")
    relay.relayed.wait_for(subject)
    reasons = _wait_for_refusals(relay.stack, {relay.own_sender})
    assert relay.sender not in reasons, reasons
    assert "SASL authentication failed" in reasons.get(relay.own_sender, ""), reasons
    item = _relay_item(relay.stack)
    assert item["verdict"] == "FAIL", item
    assert f"{RELAY_NAME} refuses" not in item["detail"], item
    assert f"{RELAY_NAME} (mail from {OWN_DOMAIN}) refuses" in item["detail"], item
    assert "`mailstack relay password`" not in item["fix"], item
    # (Its right password would send it as the default's did: test_b stores one with
    # --domain and its mail flows; this module's end deletes what still waits.)


def test_d_the_password_is_in_no_rendered_file_and_no_log(relay: RelayStack) -> None:
    wrong = "not the relay's password"
    for secret in (RELAY_PASSWORD, wrong, OWN_PASSWORD, "not the own relay's password"):
        found = subprocess.run(
            ["grep", "-rlF", "--exclude-dir=secrets", secret, str(relay.stack.root)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert found.returncode == 1, found.stdout  # 1: no file holds it
    logs = relay.stack.compose("logs", "--no-color", "postfix", check=False).stdout.decode()
    assert RELAY_PASSWORD not in logs and wrong not in logs and OWN_PASSWORD not in logs
    # Inside the container the table Postfix reads is root's alone.
    mode = relay.stack.compose(
        "exec", "-T", "postfix", "stat", "-c", "%a %U", "/run/mailstack/relay-sasl"
    )
    assert mode.stdout.decode().split() == ["600", "root"]


def test_e_a_bad_relay_setting_is_one_line_naming_the_key(
    relay: RelayStack, tmp_path: Path
) -> None:
    path = relay.stack.root / "mailstack.yaml"
    good = path.read_text()
    config = yaml.safe_load(good)
    cases: list[tuple[dict[str, object], str]] = [
        ({"username": "bob"}, "host"),  # a user name without the relay's name
        ({"host": RELAY_NAME, "port": 70000}, "relay.port"),
        ({"host": RELAY_NAME, "username": "bad user:name"}, "relay.username"),
        ({"host": RELAY_NAME, "ca_file": str(tmp_path / "missing.pem")}, "relay.ca_file"),
        (
            {"host": RELAY_NAME, "by_sender_domain": [{"domain": OWN_DOMAIN, "host": "a b"}]},
            "relay.by_sender_domain.0.host",
        ),
        (
            {"by_sender_domain": [{"domain": OWN_DOMAIN, "host": RELAY_NAME, "port": 465}]},
            "by_sender_domain[0].port: 465",
        ),
    ]
    try:
        for relay_section, key in cases:
            config["relay"] = relay_section
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            result = relay.stack.cli("up", check=False)
            said = result.stdout + result.stderr
            assert result.returncode != 0 and key in said and "Traceback" not in said, said
    finally:
        path.write_text(good)
    empty = relay.stack.cli("relay", "password", "--password-stdin", stdin="\n", check=False)
    assert empty.returncode != 0 and "empty" in empty.stdout + empty.stderr
