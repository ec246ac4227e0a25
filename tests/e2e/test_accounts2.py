"""Accounts, part two, on the running stack: DKIM rotation, app passwords, alias domains,
sender permissions and SRS for forwarded mail."""

from __future__ import annotations

import email
import json
import re
import smtplib
import uuid

import dkim
import pytest

from tests.e2e.conftest import DOMAIN, PORTS, RunningStack
from tests.e2e.mail import OUTSIDE_SENDER, can_log_in, fetch_by_subject, send_inbound
from tests.e2e.test_policy import (
    from_sink,
    message,
    refusal,
    resolver_txt,
    signature_tags,
    submit,
)

pytestmark = pytest.mark.e2e

OUTSIDE = "friend@elsewhere.example"


def subject_for(what: str) -> str:
    return f"e2e {what} {uuid.uuid4().hex}"


def selectors(stack: RunningStack, domain: str) -> dict[str, bool]:
    """{selector: active} as `dkim show --json` reports them."""
    shown = json.loads(stack.cli("dkim", "show", domain, "--json").stdout)
    return {key["selector"]: key["active"] for key in shown}


def smtp_login_works(stack: RunningStack, login: str, password: str) -> bool:
    """Whether SMTP AUTH on 587 accepts this login."""
    with smtplib.SMTP("127.0.0.1", PORTS["submission"], timeout=60) as smtp:
        smtp.starttls(context=stack.tls_context())
        try:
            smtp.login(login, password)
        except smtplib.SMTPAuthenticationError:
            return False
        return True


# --- DKIM rotation ---------------------------------------------------------------------------


def test_dkim_rotate_switches_signing_and_both_keys_stay_verifiable_until_retired(
    stack: RunningStack,
) -> None:
    sender, password = stack.new_mailbox()
    before = selectors(stack, DOMAIN)
    (old,) = [selector for selector, active in before.items() if active]
    first = subject_for("dkim before rotation")
    submit(stack, sender, password, message(sender, OUTSIDE, first))
    signed_with_old = from_sink(stack, first)
    assert signature_tags(signed_with_old)["s"] == old

    # The sandbox zone publishes the new key at once, so the switch waits for nothing.
    rotated = stack.cli("dkim", "rotate", DOMAIN)
    assert "is visible in DNS" in rotated.stdout, rotated.stdout
    after = selectors(stack, DOMAIN)
    (new,) = [selector for selector, active in after.items() if active]
    assert new != old and after[old] is False  # the old key is still published

    second = subject_for("dkim after rotation")
    submit(stack, sender, password, message(sender, OUTSIDE, second))
    signed_with_new = from_sink(stack, second)
    assert signature_tags(signed_with_new)["s"] == new
    lookup = resolver_txt(stack)
    assert dkim.verify(signed_with_new, dnsfunc=lookup), "new signature does not verify"
    # Mail signed before the switch still verifies during the overlap.
    assert dkim.verify(signed_with_old, dnsfunc=lookup), "old signature no longer verifies"

    refused = stack.cli("dkim", "retire", DOMAIN, new, check=False)
    assert refused.returncode == 2 and "cannot be retired" in refused.stderr
    stack.cli("dkim", "retire", DOMAIN)
    assert selectors(stack, DOMAIN) == {new: True}
    assert lookup(f"{old}._domainkey.{DOMAIN}".encode()) is None
    assert dkim.verify(signed_with_new, dnsfunc=lookup)


# --- app passwords ---------------------------------------------------------------------------


def test_app_password_logs_in_over_imap_and_smtp_and_revoke_ends_it(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    added = json.loads(
        stack.cli("mailbox", "app-password", "add", address, "phone", "--json").stdout
    )
    phone = added["password"]
    laptop = json.loads(
        stack.cli("mailbox", "app-password", "add", address, "laptop", "--json").stdout
    )["password"]
    assert phone != password and re.fullmatch(r"[a-z2-9]{5}(-[a-z2-9]{5}){3}", phone)
    listed = stack.cli("mailbox", "app-password", "list", address, "--json").stdout
    assert [entry["name"] for entry in json.loads(listed)] == ["laptop", "phone"]
    assert phone not in listed  # the password is shown once, never listed

    assert can_log_in(stack, address, phone)
    assert smtp_login_works(stack, address, phone)
    someone_else, _ = stack.new_mailbox()
    assert not can_log_in(stack, someone_else, phone)  # it opens its own mailbox only
    subject = subject_for("sent with an app password")
    submit(stack, address, phone, message(address, address, subject))
    assert fetch_by_subject(stack, address, laptop, subject)["Subject"] == subject

    stack.cli("mailbox", "app-password", "revoke", address, "phone")
    assert not can_log_in(stack, address, phone)
    assert not smtp_login_works(stack, address, phone)
    # The main password and the other app password are untouched.
    assert can_log_in(stack, address, password)
    assert smtp_login_works(stack, address, password)
    assert can_log_in(stack, address, laptop)
    again = stack.cli("mailbox", "app-password", "revoke", address, "phone", check=False)
    assert again.returncode == 2 and "no app password named phone" in again.stderr


# --- alias domains ---------------------------------------------------------------------------


def test_alias_domain_delivers_to_the_target_and_signs_with_its_own_key(
    stack: RunningStack,
) -> None:
    alias_domain = f"alias-{uuid.uuid4().hex[:8]}.example.test"
    address, password = stack.new_mailbox()
    local_part = address.partition("@")[0]
    stack.cli("alias", "add", f"team-{local_part}@{DOMAIN}", address)
    stack.cli("domain", "alias", "add", alias_domain, DOMAIN)
    listed = json.loads(stack.cli("domain", "alias", "list", "--json").stdout)
    assert {"name": alias_domain, "target": DOMAIN} in [
        {"name": entry["name"], "target": entry["target"]} for entry in listed
    ]

    direct = subject_for("alias domain mailbox")
    assert send_inbound([f"{local_part}@{alias_domain}"], direct) == {}
    via_alias = subject_for("alias domain alias")
    assert send_inbound([f"team-{local_part}@{alias_domain}"], via_alias) == {}
    assert fetch_by_subject(stack, address, password, direct)["Subject"] == direct
    assert fetch_by_subject(stack, address, password, via_alias)["Subject"] == via_alias

    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send_inbound([f"nobody-{uuid.uuid4().hex[:6]}@{alias_domain}"], subject_for("unknown"))
    (code, _), *_ = refused.value.recipients.values()
    assert code == 550

    # A mailbox may send as its own local part of the alias domain, signed with the alias
    # domain's own key.
    (selector,) = selectors(stack, alias_domain)
    own = f"{local_part}@{alias_domain}"
    subject = subject_for("sent as alias domain")
    assert refusal(lambda: submit(stack, address, password, message(own, OUTSIDE, subject))) is None
    raw = from_sink(stack, subject)
    tags = signature_tags(raw)
    assert tags["d"] == alias_domain and tags["s"] == selector
    assert dkim.verify(raw, dnsfunc=resolver_txt(stack))
    # An alias domain's senders are the stack's own: no SRS rewriting.
    assert email.message_from_bytes(raw)["Return-Path"] == f"<{own}>"

    stack.cli("domain", "alias", "remove", alias_domain)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send_inbound([own], subject_for("after removal"))


def test_an_alias_domain_is_neither_added_as_a_domain_nor_dropped_silently(
    stack: RunningStack,
) -> None:
    tag = uuid.uuid4().hex[:8]
    target, alias_domain = f"target-{tag}.example.test", f"alias-{tag}.example.test"
    stack.cli("domain", "add", target)
    stack.cli("domain", "alias", "add", alias_domain, target)
    clash = stack.cli("domain", "add", alias_domain, check=False)
    assert clash.returncode == 2, clash.stderr
    assert clash.stderr.startswith(f"error: DOMAIN: {alias_domain} is an alias domain of {target}")
    assert "Traceback" not in clash.stderr and "ERROR:" not in clash.stderr
    kept = stack.cli("domain", "remove", target, check=False)
    assert kept.returncode == 2 and f"alias domain(s) {alias_domain}" in kept.stderr
    removed = stack.cli("domain", "remove", target, "--force").stdout
    assert f"removed alias domain {alias_domain}" in removed
    listed = json.loads(stack.cli("domain", "alias", "list", "--json").stdout)
    assert alias_domain not in [entry["name"] for entry in listed]


# --- sender permissions ----------------------------------------------------------------------


def test_a_mailbox_sends_only_as_itself_and_what_it_was_granted(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    other, other_password = stack.new_mailbox()
    team = f"team-{uuid.uuid4().hex[:8]}@{DOMAIN}"
    stack.cli("alias", "add", team, address)

    def refused_as(sender: str, login: str = address, secret: str = password) -> int | None:
        """The SMTP code that refused sending as sender (None: accepted)."""
        mail = message(sender, OUTSIDE, subject_for("send as"))
        refused = refusal(lambda: submit(stack, login, secret, mail))
        return None if refused is None else refused[0]

    assert refused_as(address) is None
    # Receiving an alias does not by itself allow sending as it.
    assert refused_as(team) == 553
    stack.cli("alias", "sender", "add", team, address)
    assert refused_as(team) is None
    # Another person's mailbox stays off limits.
    assert refused_as(other) == 553
    listed = json.loads(stack.cli("alias", "sender", "list", "--json").stdout)
    assert {"sender": team, "login": address} in listed
    stack.cli("alias", "sender", "remove", team, address)
    assert refused_as(team) == 553

    # @domain: every address of the domain (Postfix's @domain lookup), never outside it.
    stack.cli("alias", "sender", "add", f"@{DOMAIN}", address)
    try:
        assert refused_as(other) is None
        assert refused_as("ceo@elsewhere.example") == 553
        # The grant adds a sender; the owner keeps its address, +extensions included.
        local, _, domain = other.partition("@")
        assert refused_as(f"{local}+news@{domain}", other, other_password) is None
    finally:
        stack.cli("alias", "sender", "remove", f"@{DOMAIN}", address)


# --- SRS -------------------------------------------------------------------------------------


def test_forwarded_mail_leaves_with_an_srs_sender_and_its_bounce_finds_the_way_back(
    stack: RunningStack,
) -> None:
    forward = f"fwd-{uuid.uuid4().hex[:8]}@{DOMAIN}"
    stack.cli("alias", "add", forward, OUTSIDE)
    subject = subject_for("srs forward")
    assert send_inbound([forward], subject) == {}
    raw = from_sink(stack, subject)
    return_path = email.message_from_bytes(raw)["Return-Path"].strip("<>")
    sender_domain = OUTSIDE_SENDER.partition("@")[2]
    # SRS0=<hash>=<time>=<original domain>=<original local part>@<this stack's domain>
    assert re.fullmatch(
        rf"srs0=[^=]+=[^=]+={re.escape(sender_domain)}=someone@{re.escape(DOMAIN)}",
        return_path.lower(),
    ), return_path

    # A bounce to the SRS address goes back to the original sender; a forged one is refused.
    bounce = subject_for("srs bounce")
    with smtplib.SMTP("127.0.0.1", PORTS["smtp"], timeout=60) as smtp:
        smtp.ehlo("mx.elsewhere.example")
        bounced = smtp.sendmail(
            "",
            [return_path],
            f"From: MAILER-DAEMON@elsewhere.example\r\nSubject: {bounce}\r\n\r\nbounce\r\n",
        )
    assert bounced == {}
    returned = email.message_from_bytes(from_sink(stack, bounce))
    assert returned["X-Original-To"] == OUTSIDE_SENDER
    forged = re.sub(r"^(srs0=)[^=]+", r"\1zzzz", return_path, flags=re.IGNORECASE)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send_inbound([forged], subject_for("forged srs"))

    # The stack's own senders are never rewritten.
    sender, password = stack.new_mailbox()
    own = subject_for("srs own sender")
    submit(stack, sender, password, message(sender, OUTSIDE, own))
    assert email.message_from_bytes(from_sink(stack, own))["Return-Path"] == f"<{sender}>"
