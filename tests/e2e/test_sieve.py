"""Sieve on the running stack: spam filed into Junk by the global rule, ManageSieve on 4190
(STARTTLS before AUTHENTICATE), `mailbox sieve show|set`, vacation replies, quota warnings,
and the default quota from mailstack.yaml."""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import email.utils
import json
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
import yaml

from tests.e2e.conftest import DOMAIN, HOSTNAME, PORTS, PROJECT, RunningStack
from tests.e2e.mail import imaps, message, unique_subject

pytestmark = pytest.mark.e2e

PASSWORD = "Correct-horse-42-battery"
OUTSIDE = "sender.example"  # resolves to nothing in the sandbox zone


# --- helpers ---------------------------------------------------------------------------------


def deliver_inbound(mail: EmailMessage | bytes, sender: str, recipient: str) -> None:
    """Send like another mail server: port 25, no authentication."""
    raw = mail if isinstance(mail, bytes) else mail.as_bytes()
    with smtplib.SMTP("127.0.0.1", PORTS["smtp"], timeout=60) as smtp:
        smtp.ehlo(f"mx.{OUTSIDE}")
        assert smtp.sendmail(sender, [recipient], raw) == {}


def submit(stack: RunningStack, login: str, mail: EmailMessage) -> None:
    """Send like a mail client: port 587, STARTTLS, AUTH."""
    with smtplib.SMTP("127.0.0.1", PORTS["submission"], timeout=60) as smtp:
        smtp.starttls(context=stack.tls_context())
        smtp.login(login, PASSWORD)
        smtp.send_message(mail)


def well_formed(sender: str, recipient: str, subject: str, body: str = "Hello.\n") -> EmailMessage:
    return message(sender, recipient, subject, body)  # Date and a sender-side Message-ID


def sloppy_spam(sender: str, recipient: str, subject: str) -> bytes:
    """Mail that scores between junk_score (6) and reject_score (15) with the default policy:
    no Date, no Message-ID, a sender domain and HELO name that do not resolve (~7.7)."""
    return (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: {subject}\r\n\r\nCheap offer.\r\n"
    ).encode()


def subjects_in(stack: RunningStack, address: str, folder: str) -> list[str]:
    """The subjects in one folder ([] when the folder does not exist)."""
    with imaps(stack) as imap:
        imap.login(address, PASSWORD)
        status, _ = imap.select(f'"{folder}"', readonly=True)
        if status != "OK":
            return []
        _, found = imap.search(None, "ALL")
        subjects = []
        for number in found[0].split():
            _, data = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            raw = data[0][1]
            assert isinstance(raw, bytes)
            subjects.append(
                str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"])
            )
        return subjects


def wait_in(
    stack: RunningStack, address: str, folder: str, subject: str, timeout: float = 60
) -> EmailMessage:
    """Wait until a message with this subject is in the folder; return it."""
    deadline = time.monotonic() + timeout
    while True:
        with imaps(stack) as imap:
            imap.login(address, PASSWORD)
            status, _ = imap.select(f'"{folder}"', readonly=True)
            if status == "OK":
                _, found = imap.search(None, "SUBJECT", f'"{subject}"')
                ids = found[0].split()
                if ids:
                    _, data = imap.fetch(ids[-1], "(BODY.PEEK[])")
                    raw = data[0][1]
                    assert isinstance(raw, bytes)
                    parsed = email.message_from_bytes(raw, policy=email.policy.default)
                    assert isinstance(parsed, EmailMessage)
                    return parsed
        if time.monotonic() > deadline:
            raise AssertionError(f"no message {subject!r} in {address}'s {folder} after {timeout}s")
        time.sleep(1)


def sink_messages(stack: RunningStack, text: str) -> list[bytes]:
    """Every message at the outbound sink that contains text."""
    found = stack.compose(
        "exec", "-T", "sink", "grep", "-rlF", text, "/var/mail/sink/new", check=False
    )
    return [
        stack.compose("exec", "-T", "sink", "cat", path).stdout for path in found.stdout.split()
    ]


def wait_for_sink(stack: RunningStack, text: str, timeout: float = 60) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while not (found := sink_messages(stack, text)):
        if time.monotonic() > deadline:
            raise AssertionError(f"no message with {text!r} at the sink after {timeout}s")
        time.sleep(1)
    return found


class ManageSieve:
    """A ManageSieve client (RFC 5804) over a plain socket, upgraded with STARTTLS."""

    def __init__(self, port: int) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = self.sock.makefile("rb")
        self.capabilities = self.response()[1]

    def response(self) -> tuple[str, list[str]]:
        """(the OK/NO/BYE line, the lines before it)."""
        lines: list[str] = []
        while True:
            raw = self.reader.readline()
            if not raw:
                raise AssertionError(f"ManageSieve closed the connection after {lines}")
            line = raw.decode().rstrip("\r\n")
            if line.split(" ", 1)[0] in ("OK", "NO", "BYE"):
                return line, lines
            lines.append(line)

    def command(self, line: str, literal: bytes | None = None) -> str:
        data = line.encode()
        if literal is not None:
            data += b" {%d+}\r\n" % len(literal) + literal
        self.sock.sendall(data + b"\r\n")
        return self.response()[0]

    def starttls(self, context: ssl.SSLContext) -> list[str]:
        assert self.command("STARTTLS").startswith("OK")
        self.sock = context.wrap_socket(self.sock, server_hostname=HOSTNAME)
        self.reader = self.sock.makefile("rb")
        status, self.capabilities = self.response()  # sent again after the handshake
        assert status.startswith("OK"), status
        return self.capabilities

    def authenticate(self, user: str, password: str) -> str:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return self.command(f'AUTHENTICATE "PLAIN" "{token}"')

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.command("LOGOUT")
        self.sock.close()


@pytest.fixture
def managesieve() -> Iterator[ManageSieve]:
    client = ManageSieve(PORTS["managesieve"])
    yield client
    client.close()


def sasl_mechanisms(capabilities: list[str]) -> str:
    line = next(line for line in capabilities if line.startswith('"SASL"'))
    return line.removeprefix('"SASL"').strip().strip('"')


# --- spam into Junk ----------------------------------------------------------------------------


def test_spam_is_filed_into_junk_and_clean_mail_stays_in_the_inbox(stack: RunningStack) -> None:
    recipient, _ = stack.new_mailbox(PASSWORD)
    spam_subject = unique_subject("CHEAP OFFER")
    clean_subject = unique_subject("minutes")
    deliver_inbound(
        sloppy_spam(f"promo@{OUTSIDE}", recipient, spam_subject), f"promo@{OUTSIDE}", recipient
    )
    deliver_inbound(
        well_formed(f"friend@{OUTSIDE}", recipient, clean_subject), f"friend@{OUTSIDE}", recipient
    )

    junk = wait_in(stack, recipient, "Junk", spam_subject)
    assert junk["X-Spam"] == "Yes"
    score = float(str(junk["X-Spam-Status"]).split("score=")[1])
    assert 6.0 <= score < 15.0, "the spam should score between junk_score and reject_score"
    clean = wait_in(stack, recipient, "INBOX", clean_subject)
    assert clean["X-Spam"] is None
    assert spam_subject not in subjects_in(stack, recipient, "INBOX")
    assert clean_subject not in subjects_in(stack, recipient, "Junk")


def test_a_broken_global_rule_fails_check_config_with_its_file_and_line(
    stack: RunningStack,
) -> None:
    rule = stack.root / "config/dovecot/sieve/before.d/10-spam-to-junk.sieve"
    original = rule.read_text()
    lines = original.splitlines()
    broken_line = len(lines) + 1
    rule.write_text(original + 'fileinot "Junk";\n')
    try:
        checked = stack.cli("check", "config", "dovecot", check=False)
    finally:
        rule.write_text(original)
    assert checked.returncode != 0
    location = f"config/dovecot/sieve/before.d/10-spam-to-junk.sieve:{broken_line}"
    assert location in checked.stdout + checked.stderr
    assert stack.cli("check", "config", "dovecot").returncode == 0


# --- ManageSieve ---------------------------------------------------------------------------------


def test_managesieve_refuses_authentication_before_starttls(
    stack: RunningStack, managesieve: ManageSieve
) -> None:
    address, _ = stack.new_mailbox(PASSWORD)
    assert '"STARTTLS"' in managesieve.capabilities
    assert sasl_mechanisms(managesieve.capabilities) == "", "no mechanism offered before TLS"
    refused = managesieve.authenticate(address, PASSWORD)
    assert refused.startswith("NO"), refused

    managesieve.starttls(stack.tls_context())
    assert isinstance(managesieve.sock, ssl.SSLSocket)
    assert managesieve.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert "PLAIN" in sasl_mechanisms(managesieve.capabilities).split()
    assert managesieve.authenticate(address, "Wrong-horse-42-battery").startswith("NO")
    assert managesieve.authenticate(address, PASSWORD).startswith("OK")


def test_managesieve_speaks_tls_1_2_and_newer_only(stack: RunningStack) -> None:
    def handshake(version: ssl.TLSVersion) -> bool:
        context = stack.tls_context()
        context.minimum_version = context.maximum_version = version
        context.set_ciphers("DEFAULT@SECLEVEL=0")  # let this client offer TLS 1.1 at all
        client = ManageSieve(PORTS["managesieve"])
        try:
            client.starttls(context)
        except (ssl.SSLError, OSError):
            return False
        finally:
            client.sock.close()
        return True

    assert handshake(ssl.TLSVersion.TLSv1_2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1 itself
        assert not handshake(ssl.TLSVersion.TLSv1_1)


def test_a_rule_uploaded_over_managesieve_files_mail_into_a_folder(
    stack: RunningStack, managesieve: ManageSieve
) -> None:
    address, _ = stack.new_mailbox(PASSWORD)
    managesieve.starttls(stack.tls_context())
    assert managesieve.authenticate(address, PASSWORD).startswith("OK")
    script = b'require ["fileinto"];\nif header :contains "List-Id" "announce" {\n  fileinto "Lists";\n}\n'
    assert managesieve.command('PUTSCRIPT "lists"', script).startswith("OK")
    assert managesieve.command('SETACTIVE "lists"').startswith("OK")

    listed = well_formed(f"news@{OUTSIDE}", address, unique_subject("announcement"))
    listed["List-Id"] = f"<announce.{OUTSIDE}>"
    deliver_inbound(listed, f"news@{OUTSIDE}", address)
    other = well_formed(f"friend@{OUTSIDE}", address, unique_subject("personal"))
    deliver_inbound(other, f"friend@{OUTSIDE}", address)

    wait_in(stack, address, "Lists", str(listed["Subject"]))
    wait_in(stack, address, "INBOX", str(other["Subject"]))
    # The operator sees the user's script.
    shown = stack.cli("mailbox", "sieve", "show", address)
    assert shown.stdout == script.decode()
    assert "'lists'" in shown.stderr


# --- mailbox sieve show|set -----------------------------------------------------------------------


def test_sieve_set_checks_the_script_and_a_broken_one_changes_nothing(stack: RunningStack) -> None:
    address, _ = stack.new_mailbox(PASSWORD)
    good = 'require ["fileinto"];\nif header :contains "Subject" "receipt" {\n  fileinto "Receipts";\n}\n'
    stored = stack.cli("mailbox", "sieve", "set", address, "-", stdin=good)
    assert "activated Sieve script 'mailstack'" in stored.stdout

    broken = 'require ["fileinto"];\nif header :contains "Subject" "receipt" {\n  fileinot "Receipts";\n}\n'
    script_file = stack.root / f"broken-{uuid.uuid4().hex[:6]}.sieve"
    script_file.write_text(broken)
    refused = stack.cli("mailbox", "sieve", "set", address, str(script_file), check=False)
    script_file.unlink()
    assert refused.returncode == 2
    error_lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert error_lines[0] == (
        f"error: FILE: {script_file}:3: unknown command 'fileinot'; nothing was changed"
    ), refused.stderr
    assert "Traceback" not in refused.stderr

    shown = json.loads(stack.cli("mailbox", "sieve", "show", address, "--json").stdout)
    assert shown["active"] == "mailstack" and shown["text"] == good

    subject = unique_subject("your receipt")
    deliver_inbound(well_formed(f"shop@{OUTSIDE}", address, subject), f"shop@{OUTSIDE}", address)
    wait_in(stack, address, "Receipts", subject)
    assert subject not in subjects_in(stack, address, "INBOX")


def test_sieve_commands_name_an_unknown_mailbox(stack: RunningStack) -> None:
    missing = f"nobody-{uuid.uuid4().hex[:8]}@{DOMAIN}"
    shown = stack.cli("mailbox", "sieve", "show", missing, check=False)
    assert shown.returncode == 2
    assert shown.stderr.strip() == f"error: ADDRESS: {missing} is not a mailbox of this stack"
    stored = stack.cli("mailbox", "sieve", "set", missing, "-", stdin="keep;\n", check=False)
    assert stored.returncode == 2 and "is not a mailbox of this stack" in stored.stderr


# --- vacation ----------------------------------------------------------------------------------


def test_vacation_replies_once_per_sender_and_never_to_spam(stack: RunningStack) -> None:
    away, _ = stack.new_mailbox(PASSWORD)
    first, _ = stack.new_mailbox(PASSWORD)
    second, _ = stack.new_mailbox(PASSWORD)
    tag = uuid.uuid4().hex[:8]
    vacation = f'require ["vacation"];\nvacation :days 7 :subject "Away {tag}" "Back on Monday.";\n'
    stack.cli("mailbox", "sieve", "set", away, "-", stdin=vacation)

    sent = [unique_subject("question"), unique_subject("reminder")]
    for subject in sent:
        submit(stack, first, well_formed(first, away, subject))
    other = unique_subject("hello")
    submit(stack, second, well_formed(second, away, other))
    reply = wait_in(stack, first, "INBOX", f"Away {tag}")
    assert reply["From"] == f"<{away}>" or away in str(reply["From"])
    assert str(reply["Auto-Submitted"]).startswith("auto-replied")
    assert reply["DKIM-Signature"] is not None  # it left through Postfix and rspamd
    wait_in(stack, second, "INBOX", f"Away {tag}")
    wait_in(stack, away, "INBOX", sent[1])
    time.sleep(3)  # a reply to the first sender's second message would have arrived by now
    assert subjects_in(stack, first, "INBOX").count(f"Away {tag}") == 1
    assert subjects_in(stack, second, "INBOX").count(f"Away {tag}") == 1

    # From outside: the reply leaves the stack (the sandbox sink), signed; spam gets none.
    # (The reply may be addressed to the sender's SRS form; Postfix maps it back.)
    spammer, friend = f"promo-{tag}@{OUTSIDE}", f"friend-{tag}@{OUTSIDE}"
    deliver_inbound(sloppy_spam(spammer, away, unique_subject("CHEAP OFFER")), spammer, away)
    deliver_inbound(well_formed(friend, away, unique_subject("lunch")), friend, away)
    (outbound,) = wait_for_sink(stack, f"Subject: Away {tag}")
    assert f"friend-{tag}".encode() in outbound
    assert b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=" + DOMAIN.encode() in outbound
    assert sink_messages(stack, f"promo-{tag}") == []


def test_the_internal_submission_port_relays_for_dovecot_alone(stack: RunningStack) -> None:
    """Port 10587 relays for Dovecot's fixed back-end address only: not for the host (which
    reaches the back-end network from its gateway), nor for another container on it."""
    inspected = subprocess.run(
        ["docker", "inspect", f"{PROJECT}-postfix-1"], capture_output=True, text=True, check=True
    )
    networks = json.loads(inspected.stdout)[0]["NetworkSettings"]["Networks"]
    address = networks[f"{PROJECT}_backend"]["IPAddress"]
    with smtplib.SMTP(address, 10587, timeout=30) as smtp:
        smtp.ehlo("host.example")
        smtp.mail(f"someone@{DOMAIN}")
        code, text = smtp.rcpt("victim@elsewhere.example")
    assert 500 <= code < 600, (code, text)

    # The sink (the postfix image, on the back-end network only) tries the same with bash.
    dialogue = (
        "exec 3<>/dev/tcp/postfix-backend/10587; "
        "printf 'EHLO sink\\r\\nMAIL FROM:<someone@" + DOMAIN + ">\\r\\n"
        "RCPT TO:<victim@elsewhere.example>\\r\\nQUIT\\r\\n' >&3; "
        "timeout 10 cat <&3"
    )
    answer = stack.compose("exec", "-T", "sink", "bash", "-c", dialogue, check=False)
    replies = answer.stdout.decode(errors="replace").splitlines()
    assert any(line.startswith("250 ") for line in replies), replies  # it did talk to Postfix
    assert any(line.startswith("554 ") and "Access denied" in line for line in replies), replies


# --- quotas ------------------------------------------------------------------------------------


def test_a_mailbox_near_its_quota_gets_warnings_at_85_and_95_percent(stack: RunningStack) -> None:
    address, _ = stack.new_mailbox(PASSWORD)
    stack.cli("mailbox", "quota", address, "100K")
    line = "y" * 76 + "\n"
    filler = unique_subject("large")
    deliver_inbound(
        well_formed(f"friend@{OUTSIDE}", address, filler, line * 1150), f"friend@{OUTSIDE}", address
    )
    warning = wait_in(stack, address, "INBOX", "Your mailbox is 85% full")
    assert warning["From"].addresses[0].addr_spec == f"postmaster@{DOMAIN}"
    assert warning["Auto-Submitted"] == "auto-generated"
    assert "Your mailbox is 95% full" not in subjects_in(stack, address, "INBOX")

    # This one crosses 95% and fills the mailbox (quota_grace lets the last one in): the
    # warning still arrives.
    deliver_inbound(
        well_formed(f"friend@{OUTSIDE}", address, unique_subject("more"), line * 120),
        f"friend@{OUTSIDE}",
        address,
    )
    wait_in(stack, address, "INBOX", "Your mailbox is 95% full")
    assert subjects_in(stack, address, "INBOX").count("Your mailbox is 85% full") == 1


def test_mailbox_add_takes_its_quota_from_mailstack_yaml(stack: RunningStack) -> None:
    path = stack.root / "mailstack.yaml"
    original = path.read_text()
    config = yaml.safe_load(original)
    config["mailboxes"] = {**config.get("mailboxes", {}), "default_quota": "300M"}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        address, _ = stack.new_mailbox(PASSWORD)
        explicit = f"user-{uuid.uuid4().hex[:10]}@{DOMAIN}"
        stack.cli(
            "mailbox", "add", explicit, "--password-stdin", "--quota", "1G", stdin=PASSWORD + "\n"
        )
        config["mailboxes"]["default_quota"] = "lots"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        refused = stack.cli(
            "mailbox",
            "add",
            f"user-{uuid.uuid4().hex[:10]}@{DOMAIN}",
            "--password-stdin",
            stdin=PASSWORD + "\n",
            check=False,
        )
    finally:
        path.write_text(original)
    listed = {
        entry["address"]: entry
        for entry in json.loads(stack.cli("mailbox", "list", "--json").stdout)
    }
    assert listed[address]["quota_bytes"] == 300 * 1024**2
    assert listed[explicit]["quota_bytes"] == 1024**3
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        "error: mailstack.yaml: mailboxes.default_quota: 'lots' is not a size"
    )
