"""Named attacks on the running stack, each as an attacker would make it: the list of what
mailstack resists, readable in one place. Two live beside the fixtures they need: the flood
and slow-loris on the bans service (test_bans.py::test_a_body_flood_and_idle_sockets_on_the_
policy_port_leave_logins_policed) and IPv6 (refused in mailstack.yaml: tests/unit/test_config.py
::test_ipv6_is_refused_until_the_stack_sees_real_ipv6_client_addresses)."""

from __future__ import annotations

import email.utils
import json
import smtplib
import socket
import subprocess
import time
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import DOMAIN, HOSTNAME, PORTS, PROJECT, RunningStack
from tests.e2e.mail import OUTSIDE_SENDER, fetch_by_subject, inbox_subjects, message, submit
from tests.e2e.test_policy import deliver_inbound, from_sink, refusal, signature_tags
from tests.e2e.test_webmail import https_request

OUTSIDE = "friend@elsewhere.example"

# SMTP smuggling (CVE-2023-51764): end-of-data sequences other servers accept. A server that
# takes one of them as the end of the message would read what follows as a second
# transaction, here a message claiming a hosted sender.
SMUGGLING_ENDINGS = {
    "lf-dot-crlf": b"\n.\r\n",
    "lf-dot-lf": b"\n.\n",
    "crlf-dot-lf": b"\r\n.\n",
}


def _reply(sock: socket.socket) -> bytes:
    """One SMTP reply (all its lines)."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        complete = [line for line in lines[:-1] if line]
        if complete and complete[-1][3:4] == b" ":
            return data


def _command(sock: socket.socket, line: str) -> bytes:
    sock.sendall(line.encode() + b"\r\n")
    return _reply(sock)


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "flushed-later"])
@pytest.mark.parametrize("ending", sorted(SMUGGLING_ENDINGS))
def test_smtp_smuggling_yields_one_message_never_a_second(
    stack: RunningStack, ending: str, pipelined: bool
) -> None:
    address, password = stack.new_mailbox()
    token = uuid.uuid4().hex[:10]
    carrier = f"carrier {token}"
    smuggled = f"smuggled {token}"
    first = (
        f"From: {OUTSIDE_SENDER}\r\nTo: {address}\r\nSubject: {carrier}\r\n"
        f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{token}@sender.example>\r\n"
        "\r\nthe carrier's body"
    ).encode() + SMUGGLING_ENDINGS[ending]
    second = (
        f"MAIL FROM:<ceo@{DOMAIN}>\r\nRCPT TO:<{address}>\r\nDATA\r\n"
        f"From: ceo@{DOMAIN}\r\nTo: {address}\r\nSubject: {smuggled}\r\n\r\nsmuggled body\r\n"
        ".\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", PORTS["smtp"]), timeout=30) as sock:
        assert _reply(sock).startswith(b"220")
        assert _command(sock, "EHLO mx.sender.example").startswith(b"250")
        assert _command(sock, f"MAIL FROM:<{OUTSIDE_SENDER}>").startswith(b"250")
        assert _command(sock, f"RCPT TO:<{address}>").startswith(b"250")
        assert _command(sock, "DATA").startswith(b"354")
        if pipelined:
            sock.sendall(first + second)
        else:  # as from a relay that flushes the rest of its buffer a moment later
            sock.sendall(first)
            time.sleep(1.5)
            sock.sendall(second)
        replies = _reply(sock)
        sock.sendall(b"QUIT\r\n")
    # One end of data was recognised: the real one, at the very end.
    assert replies.startswith(b"250"), replies
    message = fetch_by_subject(stack, address, password, carrier)
    body = message.get_body()
    assert body is not None
    text = body.get_content()
    assert "the carrier's body" in text and "smuggled body" in text, text
    time.sleep(2)  # a second message, had there been one, is delivered by now
    subjects = inbox_subjects(stack, address, password)
    assert subjects.count(carrier) == 1, subjects
    assert smuggled not in subjects, subjects


# --- spoofing a hosted address on submission -------------------------------------------------


def _submit_raw(
    stack: RunningStack, login: str, password: str, envelope: str, header_from: str, subject: str
) -> tuple[int, str] | None:
    """Submit on 587 as `login` with this envelope sender and From: header; the refusal's
    (code, text), or None when the message was accepted."""
    raw = (
        f"From: {header_from}\r\nTo: {OUTSIDE}\r\nSubject: {subject}\r\n"
        f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{uuid.uuid4().hex}@{DOMAIN}>\r\n"
        "\r\nwho sent this?\r\n"
    ).encode()
    try:
        with smtplib.SMTP("127.0.0.1", PORTS["submission"], timeout=60) as smtp:
            smtp.ehlo("client.example.test")
            smtp.starttls(context=stack.tls_context())
            smtp.ehlo("client.example.test")
            smtp.login(login, password)
            smtp.sendmail(envelope, [OUTSIDE], raw)
    except smtplib.SMTPRecipientsRefused as e:
        code, text = next(iter(e.recipients.values()))
        return code, text.decode(errors="replace")
    except smtplib.SMTPResponseException as e:
        return e.smtp_code, e.smtp_error.decode(errors="replace")
    return None


@pytest.fixture(scope="module")
def second_domain(stack: RunningStack) -> str:
    """Another tenant of the same stack, with its own DKIM key."""
    other = f"tenant-{uuid.uuid4().hex[:8]}.example.test"
    stack.cli("domain", "add", other)
    return other


def test_submission_with_an_empty_envelope_sender_is_refused(
    stack: RunningStack, second_domain: str
) -> None:
    address, password = stack.new_mailbox()
    refused = _submit_raw(stack, address, password, "", f"ceo@{second_domain}", "null sender")
    assert refused is not None and refused[0] >= 500, refused
    assert "empty envelope sender" in refused[1], refused


@pytest.mark.parametrize("victim", ["same-domain", "other-domain"])
def test_submission_with_a_from_header_of_another_hosted_address_is_refused(
    stack: RunningStack, second_domain: str, victim: str
) -> None:
    address, password = stack.new_mailbox()
    forged = f"ceo@{DOMAIN if victim == 'same-domain' else second_domain}"
    subject = f"forged from {uuid.uuid4().hex}"
    refused = _submit_raw(stack, address, password, address, forged, subject)
    assert refused is not None and refused[0] >= 500, refused
    assert "From: must be the address you send as" in refused[1], refused
    time.sleep(2)
    assert not _in_sink(stack, subject)


def test_own_and_granted_senders_are_still_signed_and_delivered(
    stack: RunningStack, second_domain: str
) -> None:
    address, password = stack.new_mailbox()
    granted = f"sales-{uuid.uuid4().hex[:6]}@{second_domain}"
    stack.cli("alias", "add", granted, address)
    stack.cli("alias", "sender", "add", granted, address)
    for sender, domain in ((address, DOMAIN), (granted, second_domain)):
        subject = f"legit {uuid.uuid4().hex}"
        assert _submit_raw(stack, address, password, sender, sender, subject) is None
        raw = from_sink(stack, subject)
        assert signature_tags(raw)["d"] == domain, raw[:600]


def _in_sink(stack: RunningStack, subject: str) -> bool:
    found = stack.compose(
        "exec", "-T", "sink", "grep", "-rlF", subject, "/var/mail/sink/new", check=False
    )
    return found.returncode == 0 and bool(found.stdout.strip())


# --- spoofing a hosted address from outside, and from inside the stack -----------------------


@pytest.mark.parametrize("claim", ["envelope-and-from", "from-only"])
def test_port_25_refuses_mail_claiming_a_hosted_sender_without_dmarc(
    stack: RunningStack, claim: str
) -> None:
    address, _ = stack.new_mailbox()
    forged = f"ceo@{DOMAIN}"
    envelope = forged if claim == "envelope-and-from" else OUTSIDE_SENDER
    mail = message(forged, address, f"forged hosted sender {uuid.uuid4().hex}")
    refused = refusal(lambda: deliver_inbound(mail, envelope, address))
    assert refused is not None and refused[0] >= 500, refused
    assert "must pass DMARC" in refused[1], refused


def test_another_back_end_address_is_an_outside_client_to_rspamd(stack: RunningStack) -> None:
    """A foothold in a back-end container (here a throwaway one on the back-end network) gets
    no trust: claiming a hosted sender there is refused like on port 25, where before the
    whole back-end subnet was local (no SPF, no DMARC, signed)."""
    address, _ = stack.new_mailbox()
    image = stack.image("bans")  # any image of the stack's with python3
    script = (
        "import smtplib\n"
        "smtp = smtplib.SMTP('postfix', 25, timeout=30)\n"
        "smtp.ehlo('intruder.example')\n"
        "try:\n"
        f"    smtp.sendmail('ceo@{DOMAIN}', ['{address}'],\n"
        f"                  b'From: ceo@{DOMAIN}\\r\\nSubject: from inside\\r\\n\\r\\nhi\\r\\n')\n"
        "    print('accepted')\n"
        "except smtplib.SMTPResponseException as e:\n"
        "    print(e.smtp_code, e.smtp_error.decode())\n"
    )
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", f"{PROJECT}_backend", "--entrypoint", "python3",
         image, "-c", script],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert result.stdout.startswith("5") and "must pass DMARC" in result.stdout, result.stdout


def test_a_vacation_reply_cannot_borrow_another_hosted_address(stack: RunningStack) -> None:
    asker, asker_password = stack.new_mailbox()
    tag = uuid.uuid4().hex[:8]
    replies = {}
    for kind in ("spoofed", "own"):
        away, away_password = stack.new_mailbox()
        sender = f"ceo@{DOMAIN}" if kind == "spoofed" else away
        script = (
            f'require ["vacation"];\nvacation :from "{sender}" :subject "{kind} {tag}" '
            '"Back on Monday.";\n'
        )
        stack.cli("mailbox", "sieve", "set", away, "-", stdin=script)
        question = f"question {kind} {tag}"
        submit(stack, asker, asker_password, message(asker, away, question))
        fetch_by_subject(stack, away, away_password, question)  # delivered: the script ran
        replies[kind] = f"{kind} {tag}"
    # The owner's own address still gets its reply out, signed as before (test_sieve.py) ...
    reply = fetch_by_subject(stack, asker, asker_password, replies["own"])
    assert reply["DKIM-Signature"] is not None
    # ... and by then the borrowed one would have arrived too, had it been sent.
    time.sleep(3)
    assert replies["spoofed"] not in inbox_subjects(stack, asker, asker_password)


@pytest.mark.parametrize(
    "forged_host",
    [
        "evil.example",
        "mta-sts.evil.example",
        "autoconfig.evil.example",
        "127.0.0.1",
        "example.test",
    ],
)
def test_a_forged_host_header_gets_421_never_the_webmail(
    stack: RunningStack, forged_host: str
) -> None:
    """Roundcube trusts any Host (no trusted host patterns); the front must not hand it one.
    The TLS name is the real hostname, as a browser that followed a link would send it."""
    status, _, body = https_request(stack, forged_host, "/")
    assert status == 421
    assert b"roundcube" not in body.lower() and forged_host.encode() not in body
    with (
        socket.create_connection(("127.0.0.1", PORTS["https"]), timeout=10) as raw,
        stack.tls_context().wrap_socket(raw, server_hostname=HOSTNAME) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {forged_host}\r\nConnection: close\r\n\r\n".encode())
        head = tls.recv(4096).split(b"\r\n", 1)[0]
    assert head == b"HTTP/1.1 421 Misdirected Request"
    # The stack's own names are served as before.
    status, _, body = https_request(stack, HOSTNAME, "/")
    assert status == 200 and b"roundcube" in body.lower()
    status, _, policy = https_request(stack, f"mta-sts.{DOMAIN}", "/.well-known/mta-sts.txt")
    assert status == 200 and policy.startswith(b"version: STSv1")


def test_a_domain_added_later_is_answered_by_name_and_others_still_get_421(
    stack: RunningStack,
) -> None:
    added = f"later-{uuid.uuid4().hex[:6]}.example.test"
    output = stack.cli("domain", "add", added).stdout
    assert "reloaded" in output
    status, _, policy = https_request(stack, f"mta-sts.{added}", "/.well-known/mta-sts.txt")
    assert status == 200 and policy.startswith(b"version: STSv1")
    status, _, _ = https_request(
        stack, f"autoconfig.{added}", f"/mail/config-v1.1.xml?emailaddress=someone%40{added}"
    )
    assert status == 200
    status, _, _ = https_request(stack, f"mta-sts.not-{added}", "/.well-known/mta-sts.txt")
    assert status == 421


# --- Dovecot's back-end doors: LMTP, SASL and the quota policy are Postfix's alone ------------

# Dovecot's only ports: IMAP (143, 993), POP3 (110, 995: features.pop3 and pop3_starttls are
# on in the session stack) and ManageSieve (4190), published for every client. LMTP, SASL and
# the quota policy are Unix sockets on a volume only Postfix shares.
DOVECOT_PORTS = [110, 143, 993, 995, 4190]
# With monitoring.metrics (on in the session stack) its stats listener too, on its back-end
# address alone: read-only OpenMetrics counters for the metrics service (docs/metrics.md).
DOVECOT_STATS_PORT = 9900
# The ports these doors had before (LMTP, quota policy, SASL), tried by name below.
OLD_DOORS = {"lmtp": 24, "quota-status": 12340, "sasl": 12345}

# Connects to every TCP port of each address; prints {address: [open ports]} as JSON, or
# {address: "unreachable"} when not even IMAP answers there (a network this position is not
# on drops the packets: scanning it would only wait out every port's timeout).
_SCAN = """
import json, socket, sys
def connects(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port)) == 0
found = {}
for host in json.loads(sys.argv[1]):
    reachable = connects(host, 143)
    found[host] = [p for p in range(1, 65536) if connects(host, p)] if reachable else "unreachable"
print(json.dumps(found))
"""


def _assert_only_the_client_ports(stack: RunningStack, scanned: dict[str, Any]) -> None:
    """Every reachable Dovecot address has exactly IMAP, POP3 and ManageSieve open (the back-end
    one the stats listener too), and at least one was reachable (else the scan proved
    nothing)."""
    reached = {host: ports for host, ports in scanned.items() if ports != "unreachable"}
    assert reached, scanned
    expected = dict.fromkeys(reached, DOVECOT_PORTS)
    backend = stack.addresses("dovecot")["backend"]
    if backend in expected:
        expected[backend] = sorted([*DOVECOT_PORTS, DOVECOT_STATS_PORT])
    assert reached == expected, scanned


# What a foothold would send through each old door. Prints {port: outcome} as JSON: "refused"
# or "unreachable: …" when there is no door, else what the door answered.
_KNOCK = """
import json, socket, sys
host, mailbox, subject = sys.argv[1:4]
DIALOGUES = {
    # Mail straight into a mailbox, past postscreen, rspamd and every restriction.
    24: [b"LHLO intruder.example", b"MAIL FROM:<ceo@example.test>", f"RCPT TO:<{mailbox}>".encode(),
         b"DATA", f"From: ceo@example.test\\r\\nSubject: {subject}\\r\\n\\r\\ninjected\\r\\n.".encode()],
    # A policy request as Postfix makes it, to tie the service up or probe mailboxes.
    12340: [f"request=smtpd_access_policy\\nprotocol_state=RCPT\\nrecipient={mailbox}\\n".encode()],
    # SASL with a remote address of the attacker's choosing (rip=), loopback among them.
    12345: [b"VERSION\\t1\\t2\\nCPID\\t1",
            f"AUTH\\t1\\tPLAIN\\tservice=smtp\\trip=127.0.0.1\\tresp=AGEAYg==".encode()],
}
result = {}
for port, lines in DIALOGUES.items():
    try:
        sock = socket.create_connection((host, port), timeout=5)
    except ConnectionRefusedError:
        result[port] = "refused"
        continue
    except OSError as e:
        result[port] = f"unreachable: {e}"
        continue
    with sock:
        sock.settimeout(5)
        answers = []
        for line in lines:
            sock.sendall(line + b"\\r\\n")
            try:
                answers.append(sock.recv(4096).decode(errors="replace"))
            except OSError as e:
                answers.append(str(e))
        result[port] = "answered: " + " | ".join(answers)
print(json.dumps(result))
"""


def _run_probe(stack: RunningStack, network: str, script: str, *args: str) -> str:
    """Run a Python script in a throwaway container (one of the stack's images, no capability)
    whose network is `network`: a Compose network, or `container:ID` for another container's
    exact network position."""
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", network, "--cap-drop", "ALL",
         "--entrypoint", "python3", stack.image("bans"), "-c", script, *args],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    return result.stdout


def _positions(stack: RunningStack) -> dict[str, str]:
    """Where a foothold inside the stack sits: the webmail's own network namespace (both
    networks, its fixed addresses), and any other container on the back-end network."""
    return {
        "webmail": f"container:{stack.container('webmail')}",
        "back-end container": f"{PROJECT}_backend",
    }


def _dovecot_hosts(stack: RunningStack) -> list[str]:
    return sorted(stack.addresses("dovecot").values())


def _knock(stack: RunningStack, network: str, door: str, mailbox: str, subject: str) -> None:
    """Knock on an old door of Dovecot's, by name and at each of its addresses: no door
    answers anywhere, and at least one address refused (was reached, so the knock counts)."""
    outcomes = {
        host: json.loads(_run_probe(stack, network, _KNOCK, host, mailbox, subject))[
            str(OLD_DOORS[door])
        ]
        for host in ["dovecot", *_dovecot_hosts(stack)]
    }
    assert not any(outcome.startswith("answered") for outcome in outcomes.values()), outcomes
    assert "refused" in outcomes.values(), outcomes


@pytest.mark.parametrize("position", ["webmail", "back-end container"])
def test_lmtp_from_webmail_position_refused(stack: RunningStack, position: str) -> None:
    """LMTP would deliver into any mailbox past every filter: from inside the stack it is not
    there at all, on any of Dovecot's addresses, and nothing gets delivered."""
    address, password = stack.new_mailbox()
    subject = f"injected over lmtp {uuid.uuid4().hex}"
    network = _positions(stack)[position]
    _knock(stack, network, "lmtp", address, subject)
    # The mailbox works (delivery through Postfix and the socket), and holds no injected mail.
    deliver_inbound(message(OUTSIDE_SENDER, address, "a real one"), OUTSIDE_SENDER, address)
    fetch_by_subject(stack, address, password, "a real one")
    assert subject not in inbox_subjects(stack, address, password)


@pytest.mark.parametrize("position", ["webmail", "back-end container"])
def test_dovecot_answers_other_containers_on_imap_pop3_and_managesieve_only(
    stack: RunningStack, position: str
) -> None:
    """Every port, not only the old ones: no back-end door moved to another number."""
    hosts = json.dumps(_dovecot_hosts(stack))
    _assert_only_the_client_ports(
        stack, json.loads(_run_probe(stack, _positions(stack)[position], _SCAN, hosts))
    )


def test_host_cannot_reach_dovecot_back_end_doors(stack: RunningStack) -> None:
    """The host is on every bridge, the internal back-end one too: an unprivileged user there
    reaches Dovecot's container addresses, and finds only IMAP and ManageSieve."""
    scanned = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         "/usr/bin/python3", "-c", _SCAN, json.dumps(_dovecot_hosts(stack))],
        capture_output=True, text=True, timeout=600, check=True, cwd="/",
    ).stdout  # fmt: skip
    found = json.loads(scanned)
    _assert_only_the_client_ports(stack, found)
    assert "unreachable" not in found.values(), found  # the host is on both networks


@pytest.mark.parametrize("position", ["webmail", "back-end container"])
def test_quota_status_unreachable_from_other_containers(stack: RunningStack, position: str) -> None:
    """The quota policy runs one request per process (client_limit 1): a container holding
    connections open could make Postfix tempfail all inbound mail. It cannot connect."""
    address, _ = stack.new_mailbox()
    network = _positions(stack)[position]
    _knock(stack, network, "quota-status", address, "quota")


# IMAP from a throwaway container: ID with an x-originating-ip of the attacker's choosing,
# then a login with a wrong password. Prints each tagged reply.
_IMAP_FORGED_ORIGIN = """
import socket, ssl, sys
host, login, origin, ca = sys.argv[1:5]
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False  # the name is the container's; the chain is still verified
with context.wrap_socket(socket.create_connection((host, 993), timeout=30)) as imap:
    reader = imap.makefile("rb")
    reader.readline()
    for tag, command in (("a", f'ID ("x-originating-ip" "{origin}")'),
                         ("b", f'LOGIN "{login}" "wrong-password-guess"')):
        imap.sendall(f"{tag} {command}\\r\\n".encode())
        while not (line := reader.readline().decode()).startswith(tag + " "):
            pass
        print(line.strip())
"""


def _delayed(stack: RunningStack) -> dict[str, int]:
    shown = json.loads(stack.cli("security", "bans", "--json").stdout)
    return {item["address"]: item["failures"] for item in shown["delayed"]}


def test_auth_with_forged_rip_from_another_container_refused(stack: RunningStack) -> None:
    """Dovecot's SASL believes the client address its client names (rip); only Postfix may
    name one. From the webmail or any other container, that door is gone; what is left, an
    IMAP login with a forged x-originating-ip, is counted: against the container's own
    address when Dovecot does not trust it, against the claimed one (loopback included, no
    longer exempt) from the webmail, which Dovecot trusts to name the browser's address."""
    address, _ = stack.new_mailbox()
    for network in _positions(stack).values():
        _knock(stack, network, "sasl", address, "sasl")

    mount = ["-v", f"{stack.ca_file}:/ca.pem:ro"]
    forged = "127.0.0.1"
    outcomes = {}
    for position, network in _positions(stack).items():
        outcomes[position] = subprocess.run(
            ["docker", "run", "--rm", "--network", network, "--cap-drop", "ALL", *mount,
             "--entrypoint", "python3", stack.image("bans"), "-c",
             _IMAP_FORGED_ORIGIN + "print(socket.gethostbyname(socket.gethostname()))",
             "dovecot", address, forged, "/ca.pem"],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout.splitlines()  # fmt: skip
    try:
        delayed = _delayed(stack)
        for position, lines in outcomes.items():
            assert lines[1].startswith("b NO"), (position, lines)
        # Not trusted: the forged address is ignored, the container's own is counted.
        own = outcomes["back-end container"][2]
        assert delayed.get(own, 0) >= 1, (own, delayed)
        # Trusted to forward the browser's address: the claim is counted, never exempt.
        assert delayed.get(forged, 0) >= 1, delayed
        assert stack.addresses("webmail")["backend"] not in delayed, delayed
    finally:
        stack.cli("security", "bans", "--clear", forged, check=False)
        stack.cli("security", "bans", "--clear", outcomes["back-end container"][2], check=False)


def test_dovecot_sockets_admit_the_postfix_group_only(stack: RunningStack) -> None:
    """The sockets' own gate, for processes that do share the volume (Postfix's other
    processes, Dovecot's): group postfix (gid 200) connects, anybody else is refused."""
    volume = f"{PROJECT}_dovecot-postfix-sockets"
    script = (
        "import json, socket\n"
        "result = {}\n"
        "for name in ('lmtp', 'auth', 'quota-status'):\n"
        "    with socket.socket(socket.AF_UNIX) as sock:\n"
        "        sock.settimeout(5)\n"
        "        try:\n"
        "            sock.connect('/sockets/' + name)\n"
        "            result[name] = 'connected'\n"
        "        except OSError as e:\n"
        "            result[name] = type(e).__name__\n"
        "print(json.dumps(result))\n"
    )
    outcomes = {}
    for user in ("65534:65534", "65534:200"):
        outcomes[user] = json.loads(
            subprocess.run(
                ["docker", "run", "--rm", "--network", "none", "--cap-drop", "ALL",
                 "--user", user, "-v", f"{volume}:/sockets:ro",
                 "--entrypoint", "python3", stack.image("bans"), "-c", script],
                capture_output=True, text=True, timeout=120, check=True,
            ).stdout
        )  # fmt: skip
    names = ("lmtp", "auth", "quota-status")
    assert outcomes["65534:65534"] == dict.fromkeys(names, "PermissionError"), outcomes
    assert outcomes["65534:200"] == dict.fromkeys(names, "connected"), outcomes
