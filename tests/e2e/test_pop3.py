"""POP3 on the running stack (features.pop3 and pop3_starttls are on in the session stack):
mail delivered on 25 is read over 995 with Python's poplib, whole and decrypted (mail_crypt),
under a UIDL that stays the same between sessions, and deleted there for IMAP too; 110 takes
no password before STARTTLS; sign-ins are recorded for the owner like IMAP's; autoconfig and
the DNS records offer POP3 after IMAP. The MFA rules are proven in test_mfa_doors.py, TLS
versions and ciphers by testssl in test_tls_and_hardening.py.
"""

from __future__ import annotations

import poplib
import re

import pytest

from tests.e2e.conftest import GATEWAY, PORTS, RunningStack
from tests.e2e.mail import fetch_by_subject, imaps, send_inbound, unique_subject
from tests.e2e.test_account_usage import sign_in_rows
from tests.e2e.test_webmail import https_request

pytestmark = pytest.mark.e2e


def pop3s(stack: RunningStack, address: str, password: str) -> poplib.POP3_SSL:
    pop = poplib.POP3_SSL("127.0.0.1", PORTS["pop3s"], context=stack.tls_context(), timeout=30)
    pop.user(address)
    pop.pass_(password)
    return pop


def test_mail_is_read_whole_over_pop3s_under_a_stable_uidl_and_deleted_for_imap_too(
    stack: RunningStack,
) -> None:
    address, password = stack.new_mailbox()
    subject = unique_subject("pop3")
    body = "A line POP3 must return exactly.\n" * 40
    send_inbound([address], subject, body)
    fetch_by_subject(stack, address, password, subject)  # delivered

    pop = pop3s(stack, address, password)
    try:
        count, _size = pop.stat()
        assert count == 1
        first_uidl = pop.uidl(1)
        _, lines, _ = pop.retr(1)
        text = b"\r\n".join(lines).decode()
        assert f"Subject: {subject}" in text
        assert text.count("A line POP3 must return exactly.") == 40  # stored encrypted
    finally:
        pop.quit()  # no DELE yet: the message stays

    pop = pop3s(stack, address, password)
    try:
        assert pop.uidl(1) == first_uidl  # a client never downloads it twice
        pop.dele(1)
    finally:
        pop.quit()  # QUIT commits the deletion

    with imaps(stack) as imap:
        imap.login(address, password)
        imap.select("INBOX", readonly=True)
        _, found = imap.search(None, "ALL")
        assert found == [b""]


def test_pop3_on_110_takes_no_password_before_starttls(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    pop = poplib.POP3("127.0.0.1", PORTS["pop3"], timeout=30)
    try:
        assert "STLS" in pop.capa()
        with pytest.raises(poplib.error_proto, match=r"(?i)plaintext"):
            pop.user(address)
    finally:
        pop.close()
    pop = poplib.POP3("127.0.0.1", PORTS["pop3"], timeout=30)
    try:
        pop.stls(context=stack.tls_context())
        pop.user(address)
        assert pop.pass_(password).startswith(b"+OK")
    finally:
        pop.quit()


def test_a_wrong_password_is_refused_over_pop3s(stack: RunningStack) -> None:
    address, _ = stack.new_mailbox()
    with pytest.raises(poplib.error_proto, match=r"(?i)auth"):
        pop3s(stack, address, "Not-the-password-1")


def test_pop3_sign_ins_are_recorded_for_the_owner(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    pop3s(stack, address, password).quit()
    assert ("pop3", GATEWAY) in sign_in_rows(stack, address)


def test_autoconfig_offers_pop3s_after_imaps(stack: RunningStack) -> None:
    address, _ = stack.new_mailbox()
    domain = address.split("@")[1]
    status, _, body = https_request(
        stack, f"autoconfig.{domain}", f"/mail/config-v1.1.xml?emailaddress={address}"
    )
    assert status == 200
    servers = re.findall(
        r'<incomingServer type="(\w+)">\s*<hostname>[^<]+</hostname>\s*<port>(\d+)</port>',
        body.decode(),
    )
    assert servers == [("imap", str(PORTS["imaps"])), ("pop3", str(PORTS["pop3s"]))]


def test_dns_records_name_pop3s(stack: RunningStack) -> None:
    records = stack.cli("dns", "records").stdout
    assert re.search(rf"_pop3s\._tcp\.\S+ \d+ IN SRV 0 1 {PORTS['pop3s']} ", records), records
