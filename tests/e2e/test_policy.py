"""Mail policy on the running stack: DKIM and ARC signatures checked by an independent
verifier (dkimpy), GTUBE, DMARC p=reject, the attachment policy, spam thresholds and rate
limits from mailstack.yaml."""

from __future__ import annotations

import contextlib
import email
import email.policy
import imaplib
import io
import json
import re
import smtplib
import time
import uuid
import zipfile
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import dkim
import pytest
import yaml

from tests.e2e.conftest import DOMAIN, PORTS, RunningStack
from tests.e2e.mail import message, submit

pytestmark = pytest.mark.e2e

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
# Sandbox-only test domain (mailstack/stack/render.py): DMARC p=reject, SPF -all.
DMARC_REJECT_DOMAIN = "reject.example.test"
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def deliver_inbound(mail: EmailMessage, sender: str, recipient: str) -> None:
    """Send like another mail server: port 25, no authentication."""
    with smtplib.SMTP("127.0.0.1", PORTS["smtp"], timeout=60) as smtp:
        smtp.ehlo("mx.sender.example")
        refused = smtp.sendmail(sender, [recipient], mail.as_bytes())
        assert refused == {}


def refusal(send: Any) -> tuple[int, str] | None:
    """Run a send; return the SMTP (code, text) it was refused with, or None if accepted."""
    try:
        send()
    except smtplib.SMTPResponseException as e:
        return e.smtp_code, e.smtp_error.decode(errors="replace")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = next(iter(e.recipients.values()))
        return code, text.decode(errors="replace")
    return None


def from_sink(stack: RunningStack, subject: str, timeout: float = 60) -> bytes:
    """The raw message with this subject as the outbound sink received it."""
    deadline = time.monotonic() + timeout
    while True:
        found = stack.compose(
            "exec", "-T", "sink", "grep", "-rlF", subject, "/var/mail/sink/new", check=False
        )
        paths = found.stdout.decode().split()
        if found.returncode == 0 and paths:
            return stack.compose("exec", "-T", "sink", "cat", paths[0]).stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"no message {subject!r} at the sink after {timeout}s")
        time.sleep(1)


def from_mailbox(
    stack: RunningStack, address: str, password: str, subject: str, timeout: float = 60
) -> bytes:
    """The raw message with this subject from any folder of the mailbox (INBOX or Junk)."""
    deadline = time.monotonic() + timeout
    while True:
        with imaplib.IMAP4_SSL(
            "127.0.0.1", PORTS["imaps"], ssl_context=stack.tls_context()
        ) as imap:
            imap.login(address, password)
            _, folders = imap.list()
            for line in folders:
                assert isinstance(line, bytes)
                name = line.decode().rsplit(' "/" ', 1)[-1].strip('"')
                imap.select(f'"{name}"', readonly=True)
                _, found = imap.search(None, "SUBJECT", f'"{subject}"')
                ids = found[0].split()
                if ids:
                    _, data = imap.fetch(ids[-1], "(BODY.PEEK[])")
                    raw = data[0][1]
                    assert isinstance(raw, bytes)
                    return raw
        if time.monotonic() > deadline:
            raise AssertionError(f"no message {subject!r} for {address} after {timeout}s")
        time.sleep(1)


def resolver_txt(stack: RunningStack) -> Any:
    """A dkimpy dnsfunc that asks the stack's own resolver (the sandbox zone)."""

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        result = stack.compose(
            "exec",
            "-T",
            "resolver",
            "drill",
            "-Q",
            "@127.0.0.1",
            name.decode().rstrip("."),
            "TXT",
            check=False,
        )
        lines = result.stdout.decode().splitlines()
        if result.returncode != 0 or not lines:
            return None
        return "".join(_QUOTED.findall(lines[0])).encode()

    return lookup


def signature_tags(raw: bytes, header: str = "DKIM-Signature") -> dict[str, str]:
    parsed = email.message_from_bytes(raw)
    value = re.sub(r"\s+", "", str(parsed[header]))
    return dict(part.split("=", 1) for part in value.split(";") if "=" in part)


def mailbox_in(stack: RunningStack, domain: str) -> tuple[str, str]:
    address = f"user-{uuid.uuid4().hex[:10]}@{domain}"
    password = "Correct-horse-42-battery"
    stack.cli("mailbox", "add", address, "--password-stdin", stdin=password + "\n")
    return address, password


@contextlib.contextmanager
def policy(stack: RunningStack, **changes: dict[str, Any]) -> Iterator[None]:
    """Run with these policy.* sections changed in mailstack.yaml (render + restart rspamd),
    then put the file back the same way."""
    path = stack.root / "mailstack.yaml"
    original = path.read_text()
    config = yaml.safe_load(original)
    for section, values in changes.items():
        config.setdefault("policy", {}).setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        stack.cli("render")
        stack.cli("restart", "rspamd")
        yield
    finally:
        path.write_text(original)
        stack.cli("render")
        stack.cli("restart", "rspamd")


# --- DKIM and ARC ------------------------------------------------------------------------------


def test_outbound_mail_is_dkim_signed_and_verified_by_dkimpy(stack: RunningStack) -> None:
    sender, password = stack.new_mailbox()
    subject = f"e2e dkim {uuid.uuid4().hex}"
    submit(stack, sender, password, message(sender, "friend@elsewhere.example", subject))
    raw = from_sink(stack, subject)
    tags = signature_tags(raw)
    shown = json.loads(stack.cli("dkim", "show", DOMAIN, "--json").stdout)[0]
    assert tags["d"] == DOMAIN
    assert tags["s"] == shown["selector"]
    assert shown["key_type"] == "rsa" and shown["bits"] == 2048
    # The record the stack's resolver serves is the one `dkim show` prints.
    assert resolver_txt(stack)(shown["record_name"].encode()) == shown["txt"].encode()
    assert dkim.verify(raw, dnsfunc=resolver_txt(stack)), "dkimpy could not verify the signature"


def test_a_new_domain_gets_its_own_key_and_signs_with_it(stack: RunningStack) -> None:
    domain = f"d{uuid.uuid4().hex[:8]}.example.test"
    added = stack.cli("domain", "add", domain)
    assert "DKIM key" in added.stdout and "._domainkey." in added.stdout
    key_files = list((stack.root / "dkim").glob(f"{domain}.*.key"))
    assert len(key_files) == 1
    assert key_files[0].stat().st_mode & 0o777 == 0o600
    assert (stack.root / "dkim").stat().st_mode & 0o777 == 0o700
    sender, password = mailbox_in(stack, domain)
    subject = f"e2e dkim new domain {uuid.uuid4().hex}"
    submit(stack, sender, password, message(sender, "friend@elsewhere.example", subject))
    raw = from_sink(stack, subject)
    assert signature_tags(raw)["d"] == domain
    assert dkim.verify(raw, dnsfunc=resolver_txt(stack))


def test_ed25519_adds_a_second_signature_beside_rsa_and_both_verify(stack: RunningStack) -> None:
    path = stack.root / "mailstack.yaml"
    original = path.read_text()
    config = yaml.safe_load(original)
    config.setdefault("policy", {}).setdefault("dkim", {})["ed25519"] = True
    try:
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        stack.cli("render")
        stack.cli("check", "config", "rspamd")  # rspamadm configtest on the two-key config
        for service in ("rspamd", "resolver"):  # the signer, and the sandbox zone
            stack.cli("restart", service)
        (key_file,) = (stack.root / "dkim" / "ed25519").glob(f"{DOMAIN}.*.key")
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert "k=ed25519" in stack.cli("dns", "records", DOMAIN).stdout
        sender, password = stack.new_mailbox()
        subject = f"e2e dkim ed25519 {uuid.uuid4().hex}"
        submit(stack, sender, password, message(sender, "friend@elsewhere.example", subject))
        raw = from_sink(stack, subject)
        headers = email.message_from_bytes(raw).get_all("DKIM-Signature") or []
        tags = [
            dict(
                part.split("=", 1) for part in re.sub(r"\s+", "", str(h)).split(";") if "=" in part
            )
            for h in headers
        ]
        assert sorted(t["a"] for t in tags) == ["ed25519-sha256", "rsa-sha256"], tags
        assert {t["d"] for t in tags} == {DOMAIN}
        verifier = dkim.DKIM(raw)
        for index in range(len(headers)):  # each signature on its own, against DNS
            assert verifier.verify(idx=index, dnsfunc=resolver_txt(stack)), tags[index]
    finally:
        path.write_text(original)
        stack.cli("render")
        for service in ("rspamd", "resolver"):
            stack.cli("restart", service)


def test_inbound_mail_is_arc_sealed_and_the_seal_verifies(stack: RunningStack) -> None:
    recipient, password = stack.new_mailbox()
    subject = f"e2e arc {uuid.uuid4().hex}"
    sender = "someone@sender.example"
    deliver_inbound(message(sender, recipient, subject), sender, recipient)
    raw = from_mailbox(stack, recipient, password, subject)
    seal = signature_tags(raw, "ARC-Seal")
    assert seal["d"] == DOMAIN and seal["i"] == "1"
    verdict, _, reason = dkim.arc_verify(raw, dnsfunc=resolver_txt(stack))
    assert verdict == dkim.CV_Pass, reason


# --- inbound checks ----------------------------------------------------------------------------


def test_gtube_is_rejected_at_smtp_time(stack: RunningStack) -> None:
    recipient, _ = stack.new_mailbox()
    sender = "someone@sender.example"
    mail = message(sender, recipient, f"e2e gtube {uuid.uuid4().hex}", f"{GTUBE}\n")
    refused = refusal(lambda: deliver_inbound(mail, sender, recipient))
    assert refused is not None and 500 <= refused[0] < 600, refused


def test_forged_mail_from_a_dmarc_reject_domain_is_rejected(stack: RunningStack) -> None:
    recipient, _ = stack.new_mailbox()
    forged = f"ceo@{DMARC_REJECT_DOMAIN}"
    mail = message(forged, recipient, f"e2e dmarc {uuid.uuid4().hex}")
    refused = refusal(lambda: deliver_inbound(mail, forged, recipient))
    assert refused is not None and 500 <= refused[0] < 600, refused


def _zip(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"just some text\n")
    return buffer.getvalue()


def _with_attachment(
    recipient: str, filename: str, data: bytes, maintype: str, subtype: str
) -> EmailMessage:
    mail = message("someone@sender.example", recipient, f"e2e attachment {uuid.uuid4().hex}")
    mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return mail


@pytest.mark.parametrize(
    ("filename", "data", "maintype", "subtype"),
    [
        ("setup.exe", b"MZ\x90\x00" + bytes(200), "application", "octet-stream"),
        ("INVOICE.JS", b"var x = 1;\n", "application", "javascript"),
        ("documents.zip", _zip("readme.txt", "tool.exe"), "application", "zip"),
        ("documents.zip", _zip("invoice.js"), "application", "zip"),
        ("notes.txt", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + bytes(300), "text", "plain"),
    ],
    ids=["exe", "js-upper-case", "exe-in-zip", "js-in-zip", "exe-named-txt"],
)
def test_dangerous_attachments_are_rejected(
    stack: RunningStack, filename: str, data: bytes, maintype: str, subtype: str
) -> None:
    recipient, _ = stack.new_mailbox()
    mail = _with_attachment(recipient, filename, data, maintype, subtype)
    refused = refusal(lambda: deliver_inbound(mail, "someone@sender.example", recipient))
    assert refused is not None and 500 <= refused[0] < 600, refused
    assert "attachment" in refused[1]


def test_a_clean_attachment_passes(stack: RunningStack) -> None:
    recipient, password = stack.new_mailbox()
    pdf = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"
    for filename, data, subtype in (("report.pdf", pdf, "pdf"), ("a.zip", _zip("a.txt"), "zip")):
        mail = _with_attachment(recipient, filename, data, "application", subtype)
        deliver_inbound(mail, "someone@sender.example", recipient)
        assert from_mailbox(stack, recipient, password, str(mail["Subject"]))


# --- thresholds and rate limits from mailstack.yaml ----------------------------------------------


def _sloppy(recipient: str, subject: str) -> EmailMessage:
    """Inbound mail with the faults that add spam score: no Date, a sender domain and HELO
    name that do not resolve."""
    mail = EmailMessage()
    mail["From"] = "someone@sender.example"
    mail["To"] = recipient
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@{DOMAIN}>"
    mail.set_content("Cheap offer.\n")
    return mail


def test_spam_thresholds_and_rate_limits_come_from_mailstack_yaml(stack: RunningStack) -> None:
    recipient, password = stack.new_mailbox()
    sender, sender_password = stack.new_mailbox()
    spam_subject = f"e2e junk {uuid.uuid4().hex}"
    with policy(
        stack,
        spam={"junk_score": 1.0, "reject_score": 50.0},
        rate_limits={"sender_burst": 3, "client_ip_burst": 3},
    ):
        # Over junk_score: delivered, marked for the Junk folder.
        deliver_inbound(_sloppy(recipient, spam_subject), "someone@sender.example", recipient)
        delivered = email.message_from_bytes(
            from_mailbox(stack, recipient, password, spam_subject), policy=email.policy.default
        )
        assert delivered["X-Spam"] == "Yes"
        assert str(delivered["X-Spam-Status"]).startswith("Yes")

        # Per authenticated sender: three recipients, then a 4xx.
        outcomes = [
            refusal(
                lambda i=i: submit(
                    stack, sender, sender_password, message(sender, f"r{i}@elsewhere.example", "x")
                )
            )
            for i in range(5)
        ]
        assert outcomes[:3] == [None, None, None], outcomes
        for outcome in outcomes[3:]:
            assert outcome is not None and 400 <= outcome[0] < 500, outcomes

        # Per client address (unauthenticated): the bucket of 3 (one used above) runs out.
        outcomes = [
            refusal(
                lambda: deliver_inbound(
                    message("someone@sender.example", recipient, "flood"),
                    "someone@sender.example",
                    recipient,
                )
            )
            for _ in range(4)
        ]
        assert outcomes[0] is None, outcomes
        assert outcomes[-1] is not None and 400 <= outcomes[-1][0] < 500, outcomes

    with policy(stack, spam={"junk_score": 1.0, "reject_score": 2.0}):
        mail = _sloppy(recipient, f"e2e reject {uuid.uuid4().hex}")
        refused = refusal(lambda: deliver_inbound(mail, "someone@sender.example", recipient))
        assert refused is not None and 500 <= refused[0] < 600, refused

    # Back to the defaults: the sender is limited no longer.
    submit(stack, sender, sender_password, message(sender, "friend@elsewhere.example", "again"))
