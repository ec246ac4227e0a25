"""Accounts on the running stack: aliases, catch-alls, removal, passwords, quotas."""

from __future__ import annotations

import imaplib
import json
import smtplib
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import DOMAIN, PORTS, RunningStack
from tests.e2e.mail import (
    can_log_in,
    fetch_by_subject,
    imaps,
    inbox_subjects,
    message,
    send_inbound,
    unique_subject,
    wait_for_sink,
)

pytestmark = pytest.mark.e2e

PASSWORD = "Correct-horse-42-battery"


def new_domain(stack: RunningStack, prefix: str) -> str:
    domain = f"{prefix}-{uuid.uuid4().hex[:8]}.example.test"
    stack.cli("domain", "add", domain)
    return domain


def add_mailbox(stack: RunningStack, address: str, *extra: str) -> str:
    stack.cli("mailbox", "add", address, "--password-stdin", *extra, stdin=PASSWORD + "\n")
    return address


def mailboxes(stack: RunningStack) -> dict[str, dict[str, Any]]:
    listed = json.loads(stack.cli("mailbox", "list", "--json").stdout)
    return {entry["address"]: entry for entry in listed}


def has_stored_mail(stack: RunningStack, path: str) -> bool:
    found = stack.compose(
        "exec", "-T", "--user", "vmail", "dovecot", "test", "-d", path, check=False
    )
    return found.returncode == 0


def refusal(recipient: str, subject: str, body: str = "refuse me\n") -> int:
    """Send to one recipient on port 25 and return the SMTP code it was refused with."""
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send_inbound([recipient], subject, body)
    return refused.value.recipients[recipient][0]


def test_alias_to_two_mailboxes_delivers_to_both(stack: RunningStack) -> None:
    first, first_password = stack.new_mailbox()
    second, second_password = stack.new_mailbox()
    alias = f"team-{uuid.uuid4().hex[:8]}@{DOMAIN}"
    stack.cli("alias", "add", alias, first, second)
    listed = json.loads(stack.cli("alias", "list", "--json").stdout)
    assert {"source": alias, "destinations": sorted([first, second])} in listed

    subject = unique_subject("alias")
    assert send_inbound([alias], subject) == {}
    assert fetch_by_subject(stack, first, first_password, subject)["To"] == alias
    assert fetch_by_subject(stack, second, second_password, subject)["To"] == alias


def test_alias_with_an_outside_destination_forwards_there(stack: RunningStack) -> None:
    alias = f"forward-{uuid.uuid4().hex[:8]}@{DOMAIN}"
    stack.cli("alias", "add", alias, f"friend-{uuid.uuid4().hex[:8]}@elsewhere.example")
    subject = unique_subject("forward")
    assert send_inbound([alias], subject) == {}
    wait_for_sink(stack, subject)


def test_catch_all_takes_unknown_addresses_but_never_a_mailbox_s_mail(stack: RunningStack) -> None:
    domain = new_domain(stack, "catchall")
    owner = add_mailbox(stack, f"owner@{domain}")
    collector, collector_password = stack.new_mailbox()
    stranger = f"anyone-{uuid.uuid4().hex[:8]}@{domain}"
    assert 500 <= refusal(stranger, unique_subject("before catch-all")) < 600

    stack.cli("alias", "add", f"@{domain}", collector)
    for_stranger = unique_subject("catch-all")
    for_owner = unique_subject("owner")
    assert send_inbound([stranger], for_stranger) == {}
    assert send_inbound([owner], for_owner) == {}
    assert fetch_by_subject(stack, collector, collector_password, for_stranger)["To"] == stranger
    fetch_by_subject(stack, owner, PASSWORD, for_owner)
    assert for_owner not in inbox_subjects(stack, collector, collector_password)


def test_removed_mailbox_cannot_log_in_and_mail_to_it_is_refused(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    subject = unique_subject("before removal")
    send_inbound([address], subject)
    fetch_by_subject(stack, address, password, subject)
    home = f"/var/mail/{DOMAIN}/{address.partition('@')[0]}"

    with imaps(stack) as session:
        session.login(address, password)
        removed = stack.cli("mailbox", "remove", address)
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            session.noop()  # the open session was ended with the mailbox
    assert f"kept in {home}" in removed.stdout

    assert not can_log_in(stack, address, password)
    assert 500 <= refusal(address, unique_subject("after removal")) < 600
    assert address not in mailboxes(stack)
    assert has_stored_mail(stack, home)  # kept: nothing said --purge

    stack.cli("mailbox", "remove", address, "--purge", "--yes")
    assert not has_stored_mail(stack, home)


def test_passwd_replaces_the_password(stack: RunningStack) -> None:
    address, old_password = stack.new_mailbox()
    new_password = "Fresh-staple-93-horse"
    stack.cli("mailbox", "passwd", address, "--password-stdin", stdin=new_password + "\n")
    assert not can_log_in(stack, address, old_password)
    assert can_log_in(stack, address, new_password)

    weak = stack.cli("mailbox", "passwd", address, "--password-stdin", stdin="short\n", check=False)
    assert weak.returncode == 2 and "too short" in weak.stderr
    assert can_log_in(stack, address, new_password)


def test_a_generated_password_logs_in(stack: RunningStack) -> None:
    address = f"generated-{uuid.uuid4().hex[:8]}@{DOMAIN}"
    added = stack.cli("mailbox", "add", address, "--generate-password").stdout
    password = added.split("stored): ", 1)[1].split()[0]
    assert can_log_in(stack, address, password)
    changed = stack.cli("mailbox", "passwd", address, "--generate-password").stdout
    new_password = changed.split("stored): ", 1)[1].split()[0]
    assert not can_log_in(stack, address, password)
    assert can_log_in(stack, address, new_password)


def test_over_quota_mail_is_refused_at_rcpt_and_list_shows_usage(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    stack.cli("mailbox", "quota", address, "16K")
    fits = unique_subject("fits")
    assert send_inbound([address], fits, "a" * 2000 + "\n") == {}
    fetch_by_subject(stack, address, password, fits)

    # 20K more cannot fit; smtplib announces the size (SIZE=), so the policy check at RCPT
    # refuses it and the sending server still holds the message: nothing is lost.
    too_much = unique_subject("over quota")
    assert 400 <= refusal(address, too_much, "b" * 20000 + "\n") < 600
    assert too_much not in inbox_subjects(stack, address, password)

    usage = mailboxes(stack)[address]
    assert usage["quota_bytes"] == 16 * 1024
    assert usage["messages"] == 1
    assert 2000 <= usage["storage_bytes"] <= 16 * 1024
    listing = stack.cli("mailbox", "list").stdout.splitlines()
    line = next(line for line in listing if line.startswith(f"{address} "))
    assert "used of 16K" in line and "1 message(s)" in line


def test_over_quota_mail_from_a_local_sender_comes_back_as_a_bounce(stack: RunningStack) -> None:
    full, full_password = stack.new_mailbox()
    stack.cli("mailbox", "quota", full, "16K")
    filler = unique_subject("filler")
    send_inbound([full], filler, "b" * 2000 + "\n")
    fetch_by_subject(stack, full, full_password, filler)

    sender, sender_password = stack.new_mailbox()
    subject = unique_subject("to a full mailbox")
    with smtplib.SMTP("127.0.0.1", PORTS["submission"], timeout=30) as smtp:
        smtp.starttls(context=stack.tls_context())
        smtp.login(sender, sender_password)
        try:
            smtp.send_message(message(sender, full, subject, "c" * 20000 + "\n"))
        except smtplib.SMTPRecipientsRefused as refused:
            assert 400 <= refused.recipients[full][0] < 600  # told at once: not lost either
            return
    bounce = fetch_by_subject(stack, sender, sender_password, "Undelivered Mail")
    assert subject in bounce.as_string()
    assert subject not in inbox_subjects(stack, full, full_password)


def test_domain_remove_refuses_while_in_use_and_deletes_mail_only_on_purge(
    stack: RunningStack,
) -> None:
    domain = new_domain(stack, "leaving")
    owner = add_mailbox(stack, f"owner@{domain}")
    subject = unique_subject("leaving")
    send_inbound([owner], subject)
    fetch_by_subject(stack, owner, PASSWORD, subject)

    refused = stack.cli("domain", "remove", domain, check=False)
    assert refused.returncode == 2
    assert "still has 1 mailbox(es)" in refused.stderr
    assert can_log_in(stack, owner, PASSWORD)

    stack.cli("domain", "remove", domain, "--force")
    listed = json.loads(stack.cli("domain", "list", "--json").stdout)
    assert domain not in [entry["name"] for entry in listed]
    assert not can_log_in(stack, owner, PASSWORD)
    assert has_stored_mail(stack, f"/var/mail/{domain}")

    declined = stack.cli("domain", "remove", domain, "--purge", stdin="no\n", check=False)
    assert declined.returncode == 1 and "not confirmed" in declined.stderr
    assert has_stored_mail(stack, f"/var/mail/{domain}")
    stack.cli("domain", "remove", domain, "--purge", stdin=f"{domain}\n")
    assert not has_stored_mail(stack, f"/var/mail/{domain}")


def test_like_wildcards_in_addresses_match_only_themselves(stack: RunningStack) -> None:
    tag = uuid.uuid4().hex[:8]
    underscore = add_mailbox(stack, f"a_{tag}@{DOMAIN}")
    percent = add_mailbox(stack, f"a%{tag}@{DOMAIN}")
    plain = add_mailbox(stack, f"ab{tag}@{DOMAIN}")  # what a_ and a% would match in LIKE
    stack.cli("mailbox", "remove", underscore)
    stack.cli("mailbox", "remove", percent)
    remaining = mailboxes(stack)
    assert plain in remaining
    assert underscore not in remaining and percent not in remaining
    assert can_log_in(stack, plain, PASSWORD)
