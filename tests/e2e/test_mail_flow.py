"""Real mail through the real stack: SMTP in, IMAP out, relay refused, state survives."""

from __future__ import annotations

import imaplib
import json
import smtplib
import time
import uuid

import pytest

from tests.e2e.conftest import DOMAIN, PORTS, PROJECT, RunningStack
from tests.e2e.mail import fetch_by_subject, message, send_inbound

pytestmark = pytest.mark.e2e


def test_status_json_shows_every_service_healthy(stack: RunningStack) -> None:
    status = json.loads(stack.cli("status", "--json").stdout)
    services = {s["service"]: s for s in status["services"]}
    assert {"db", "redis", "resolver", "rspamd", "dovecot", "postfix", "front", "sink"} <= set(
        services
    )
    for name, service in services.items():
        assert service["state"] == "running", name
        assert service["health"] == "healthy", name
    assert status["healthy"] is True
    assert status["conflicts"] == []


def test_first_domain_exists_after_up_and_more_can_be_added(stack: RunningStack) -> None:
    listed = json.loads(stack.cli("domain", "list", "--json").stdout)
    assert DOMAIN in [domain["name"] for domain in listed]
    again = stack.cli("domain", "add", DOMAIN, check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
    stack.cli("domain", "add", "bücher.example.test")
    listed = json.loads(stack.cli("domain", "list", "--json").stdout)
    assert "xn--bcher-kva.example.test" in [domain["name"] for domain in listed]


def test_submission_with_auth_is_read_back_over_imaps(stack: RunningStack) -> None:
    sender, password = stack.new_mailbox()
    recipient, recipient_password = stack.new_mailbox()
    subject = f"e2e submission {uuid.uuid4().hex}"
    body = "Hello over 587.\nSecond line with ümlauts.\n"
    with smtplib.SMTP("127.0.0.1", PORTS["submission"], timeout=30) as smtp:
        smtp.ehlo("client.example.test")
        smtp.starttls(context=stack.tls_context())
        smtp.ehlo("client.example.test")
        smtp.login(sender, password)
        smtp.send_message(message(sender, recipient, subject, body))
    received = fetch_by_subject(stack, recipient, recipient_password, subject)
    assert received["From"] == sender
    assert received["To"] == recipient
    assert received["Subject"] == subject
    content = received.get_content()
    assert isinstance(content, str)
    assert content.replace("\r\n", "\n") == body


def test_submissions_on_465_with_implicit_tls(stack: RunningStack) -> None:
    sender, password = stack.new_mailbox()
    subject = f"e2e 465 {uuid.uuid4().hex}"
    with smtplib.SMTP_SSL(
        "127.0.0.1", PORTS["submissions"], context=stack.tls_context(), timeout=30
    ) as smtp:
        smtp.login(sender, password)
        smtp.send_message(message(sender, sender, subject, "to myself\n"))
    assert fetch_by_subject(stack, sender, password, subject)["Subject"] == subject


def test_inbound_mail_on_25_is_delivered_to_a_local_mailbox(stack: RunningStack) -> None:
    recipient, password = stack.new_mailbox()
    subject = f"e2e inbound {uuid.uuid4().hex}"
    with smtplib.SMTP("127.0.0.1", PORTS["smtp"], timeout=30) as smtp:
        smtp.ehlo("mx.sender.example")
        refused = smtp.sendmail(
            "someone@sender.example",
            [recipient],
            message("someone@sender.example", recipient, subject, "inbound body\n").as_bytes(),
        )
        assert refused == {}
    assert fetch_by_subject(stack, recipient, password, subject)["Subject"] == subject


def test_open_relay_is_refused_through_the_published_port(stack: RunningStack) -> None:
    for port in (PORTS["smtp"], PORTS["submission"]):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.ehlo("relay-tester.example")
            if port == PORTS["submission"]:
                smtp.starttls(context=stack.tls_context())
                smtp.ehlo("relay-tester.example")
            smtp.mail("spammer@elsewhere.example")
            code, reply = smtp.rcpt("victim@foreign.example")
            assert 500 <= code < 600, (port, code, reply)
    with smtplib.SMTP_SSL(
        "127.0.0.1", PORTS["submissions"], context=stack.tls_context(), timeout=30
    ) as smtp:
        smtp.ehlo("relay-tester.example")
        smtp.mail("spammer@elsewhere.example")
        code, reply = smtp.rcpt("victim@foreign.example")
        assert 500 <= code < 600, (code, reply)


def test_logs_finds_a_rejection_by_since_and_grep_and_says_when_nothing_matches(
    stack: RunningStack,
) -> None:
    victim = f"victim-{uuid.uuid4().hex[:10]}@foreign.example"
    with smtplib.SMTP("127.0.0.1", PORTS["smtp"], timeout=30) as smtp:
        smtp.ehlo("relay-tester.example")
        smtp.mail("spammer@elsewhere.example")
        assert smtp.rcpt(victim)[0] == 554  # relay access denied, logged by Postfix
    deadline = time.monotonic() + 30
    while True:
        found = stack.cli("logs", "postfix", "--since", "5m", "--grep", victim, check=False)
        if found.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert found.returncode == 0, found.stderr
    (line,) = found.stdout.splitlines()
    assert "NOQUEUE: reject: RCPT from" in line and f"to=<{victim}>" in line, line
    # Case ignored with -i; every service when none is named.
    assert victim in stack.cli("logs", "--grep", victim.upper(), "-i").stdout
    # A string no line holds: exit 1 with one line, as grep does.
    nothing = stack.cli("logs", "postfix", "--since", "2020-01-01T00:00Z", "--grep", "no-such-"
                        + uuid.uuid4().hex, check=False)  # fmt: skip
    assert nothing.returncode == 1 and nothing.stdout == ""
    assert nothing.stderr.startswith("error: no log line matches 'no-such-"), nothing.stderr
    bad = stack.cli("logs", "--since", "last tuesday", check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_no_auth_offered_on_587_before_starttls(stack: RunningStack) -> None:
    with smtplib.SMTP("127.0.0.1", PORTS["submission"], timeout=30) as smtp:
        smtp.ehlo("client.example.test")
        assert not smtp.has_extn("auth")
        assert smtp.has_extn("starttls")
        code, _ = smtp.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")
        assert code >= 500
        smtp.starttls(context=stack.tls_context())
        smtp.ehlo("client.example.test")
        assert smtp.has_extn("auth")


def test_imap_refuses_login_before_starttls(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    with imaplib.IMAP4("127.0.0.1", PORTS["imap"]) as imap:
        assert "LOGINDISABLED" in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(address, password)
    with imaplib.IMAP4("127.0.0.1", PORTS["imap"]) as imap:
        imap.starttls(ssl_context=stack.tls_context())
        imap.login(address, password)


def test_wrong_password_is_refused(stack: RunningStack) -> None:
    address, _ = stack.new_mailbox()
    with smtplib.SMTP("127.0.0.1", PORTS["submission"], timeout=30) as smtp:
        smtp.starttls(context=stack.tls_context())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(address, "Not-the-right-password-1")
    with (
        imaplib.IMAP4_SSL("127.0.0.1", PORTS["imaps"], ssl_context=stack.tls_context()) as imap,
        pytest.raises(imaplib.IMAP4.error),
    ):
        imap.login(address, "Not-the-right-password-1")


def test_outbound_mail_goes_to_the_sink_not_the_internet(stack: RunningStack) -> None:
    sender, password = stack.new_mailbox()
    subject = f"e2e outbound {uuid.uuid4().hex}"
    with smtplib.SMTP("127.0.0.1", PORTS["submission"], timeout=30) as smtp:
        smtp.starttls(context=stack.tls_context())
        smtp.login(sender, password)
        smtp.send_message(message(sender, "friend@elsewhere.example", subject, "out\n"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = stack.compose(
            "exec", "-T", "sink", "grep", "-rl", subject, "/var/mail/sink", check=False
        )
        if found.returncode == 0:
            return
        time.sleep(1)
    raise AssertionError("the outbound message never reached the sink")


def test_hostile_address_is_refused_and_sql_stays_data(stack: RunningStack) -> None:
    result = stack.cli(
        "mailbox",
        "add",
        "x'; DROP TABLE mailboxes; --@example.test",
        "--password-stdin",
        stdin="Correct-horse-42-battery\n",
        check=False,
    )
    assert result.returncode == 2
    assert "ADDRESS" in result.stderr + result.stdout
    tricky = f"o'brien+{uuid.uuid4().hex[:6]}@{DOMAIN}"
    stack.cli("mailbox", "add", tricky, "--password-stdin", stdin="Correct-horse-42-battery\n")
    listed = json.loads(stack.cli("mailbox", "list", "--json").stdout)
    assert tricky in json.dumps(listed)


def test_check_config_passes_then_names_file_and_line_of_a_broken_file(
    stack: RunningStack,
) -> None:
    stack.cli("check", "config")
    main_cf = stack.root / "config" / "postfix" / "main.cf"
    original = main_cf.read_text()
    try:
        main_cf.write_text(original + "this line is not a postfix setting\n")
        broken_line = len((original + "this line").splitlines())
        result = stack.cli("check", "config", "postfix", check=False)
        assert result.returncode == 1
        assert f"config/postfix/main.cf:{broken_line}" in result.stderr + result.stdout
    finally:
        main_cf.write_text(original)


def test_a_container_cannot_reach_an_outside_address(stack: RunningStack) -> None:
    # TEST-NET-1 (RFC 5737) is never routed; the guard's counter proves the drop was ours.
    import subprocess

    def dropped() -> int:
        rules = subprocess.run(
            ["iptables", "-L", "DOCKER-USER", "-v", "-x", "-n"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in rules.splitlines():
            if "mailstack-e2e-egress-guard" in line:
                return int(line.split()[0])
        raise AssertionError("egress guard rule missing")

    before = dropped()
    attempt = stack.compose(
        "exec",
        "-T",
        "postfix",
        "timeout",
        "5",
        "bash",
        "-c",
        "exec 3<>/dev/tcp/192.0.2.1/80",
        check=False,
    )
    assert attempt.returncode != 0
    assert dropped() > before


def test_mail_survives_down_and_up(stack: RunningStack) -> None:
    recipient, password = stack.new_mailbox()
    subject = f"e2e persistent {uuid.uuid4().hex}"
    # As an outside MTA would, with a name in EHLO: a bare IP there scores as spam (Junk).
    assert send_inbound([recipient], subject, "keep me\n") == {}
    fetch_by_subject(stack, recipient, password, subject)
    stack.cli("down")
    assert stack.compose("ps", "--quiet").stdout.strip() == b""
    stack.cli("up", "--timeout", "300")
    assert fetch_by_subject(stack, recipient, password, subject)["Subject"] == subject
    assert PROJECT in stack.cli("status").stdout
