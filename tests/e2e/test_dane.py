"""DANE for inbound mail (RFC 7672, docs/dane.md): a real Postfix that requires DANE where the
zone is signed (tests/e2e/danezone.py) delivers to the stack's port 25 when the TLSA records
`mailstack dns records` prints are published, and keeps the mail queued, never delivered,
when they name another key. The resolver between them validates: a forged signature is
SERVFAIL, not an answer. `check dns` judges those records, and `tls rollover` puts the next
key in service only once it is published, so the DANE sender's mail keeps flowing."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import dns.flags
import dns.rcode
import pytest

from tests.e2e.conftest import DOMAIN, HOSTNAME, RunningStack
from tests.e2e.danezone import TLSA_NAME, DaneWorld, dane_world, published_tlsa
from tests.e2e.mail import delivered, fetch_by_subject, unique_subject

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def world(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaneWorld]:
    with dane_world(stack, tmp_path_factory.mktemp("dane")) as started:
        yield started


@pytest.fixture(scope="module")
def mailbox(stack: RunningStack) -> tuple[str, str]:
    return stack.new_mailbox()


def validated(world: DaneWorld, name: str, rdtype: str) -> bool:
    answer = world.query(name, rdtype)
    return answer.rcode() == dns.rcode.NOERROR and bool(answer.flags & dns.flags.AD)


def test_the_resolver_validates_the_signed_zone(stack: RunningStack, world: DaneWorld) -> None:
    world.publish(published_tlsa(stack))
    for name, rdtype in ((DOMAIN, "MX"), (HOSTNAME, "A"), (TLSA_NAME, "TLSA")):
        assert validated(world, name, rdtype), (name, rdtype)
    # Nothing else is resolvable: an answer at once, never a query leaving the machine.
    assert world.query("example.com", "A").rcode() == dns.rcode.NXDOMAIN
    # A record whose signature does not verify is SERVFAIL; the rest of the zone still
    # validates.
    world.publish(published_tlsa(stack), forged=True)
    assert world.query(HOSTNAME, "A").rcode() == dns.rcode.SERVFAIL
    assert validated(world, TLSA_NAME, "TLSA")


def test_a_matching_tlsa_record_lets_mail_in_over_verified_tls(
    stack: RunningStack, world: DaneWorld, mailbox: tuple[str, str]
) -> None:
    current, upcoming = published_tlsa(stack)  # the served key's and the next key's
    assert current != upcoming
    world.publish([current, upcoming])
    subject = unique_subject("dane match")
    queue_id = world.send(mailbox[0], subject)
    [attempt] = world.wait_for_attempts(queue_id)
    peer = f"{HOSTNAME}[{world.mx_address}]:25"
    # "Verified": Postfix matched the certificate to the TLSA record (it trusts no CA here).
    assert any(line.startswith(f"Verified TLS connection established to {peer}: ")
               for line in attempt), attempt  # fmt: skip
    assert "status=sent (250 2.0.0 Ok: queued as " in attempt[-1], attempt
    fetch_by_subject(stack, *mailbox, subject)


def test_a_mismatching_tlsa_record_keeps_the_mail_queued(
    stack: RunningStack, world: DaneWorld, mailbox: tuple[str, str]
) -> None:
    world.publish([f"3 1 1 {secrets.token_hex(32)}"])
    subject = unique_subject("dane mismatch")
    queue_id = world.send(mailbox[0], subject)
    world.wait_for_attempts(queue_id)
    world.flush()  # and a second attempt: still refused, not given up or sent in clear
    attempts = world.wait_for_attempts(queue_id, count=2)
    peer = f"{HOSTNAME}[{world.mx_address}]:25"
    for attempt in attempts:
        assert (f"server certificate verification failed for {peer}: "
                "num=65:no matching DANE TLSA records") in attempt, attempt  # fmt: skip
        assert "dsn=4.7.5, status=deferred (Server certificate not verified)" in attempt[-1]
    [queued] = [entry for entry in world.queued() if entry["queue_id"] == queue_id]
    assert queued["queue_name"] == "deferred", queued
    assert queued["recipients"][0]["delay_reason"] == "Server certificate not verified"
    assert not delivered(stack, *mailbox, subject)


def tlsa_row(stack: RunningStack, world: DaneWorld) -> dict[str, Any]:
    """`check dns`'s TLSA row, asked of the resolver that validates the signed zone."""
    result = stack.cli(
        "check", "dns", DOMAIN, "--resolver", world.resolver_address, "--json", check=False
    )
    rows: list[dict[str, Any]] = json.loads(result.stdout)["rows"]
    [row] = [row for row in rows if row["kind"] == "TLSA"]
    return row


def test_check_dns_judges_the_published_tlsa_records(stack: RunningStack, world: DaneWorld) -> None:
    current, upcoming = published_tlsa(stack)
    world.publish([current, upcoming])
    assert tlsa_row(stack, world)["verdict"] == "pass"
    world.publish([current])
    missing = tlsa_row(stack, world)
    assert missing["verdict"] == "warn" and upcoming in missing["fix"]
    other = f"3 1 1 {secrets.token_hex(32)}"
    world.publish([other])
    wrong = tlsa_row(stack, world)
    assert wrong["verdict"] == "FAIL" and "none matches the served key" in wrong["found"]
    assert current in wrong["fix"]


def test_a_rollover_waits_for_the_next_key_and_mail_keeps_flowing(
    stack: RunningStack, world: DaneWorld, mailbox: tuple[str, str]
) -> None:
    current, upcoming = published_tlsa(stack)
    key = (stack.root / "tls" / "key.pem").read_bytes()
    world.publish([current])  # the next key's record not there yet
    refused = stack.cli("tls", "rollover", "--resolver", world.resolver_address, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "the next key's record is not published" in refused.stderr, refused.stderr
    assert (stack.root / "tls" / "key.pem").read_bytes() == key  # nothing changed

    world.publish([current, upcoming])
    done = json.loads(
        stack.cli("tls", "rollover", "--resolver", world.resolver_address, "--json").stdout
    )
    assert (done["retired"], done["serving"]) == (current, upcoming)
    assert "postfix" in done["reloaded"]
    # What dns records prints now: the new key first, a new next key after it.
    assert published_tlsa(stack) == [upcoming, done["next"]]
    # DNS unchanged since before the rollover: the DANE sender delivers, verified, at once.
    subject = unique_subject("dane after rollover")
    queue_id = world.send(mailbox[0], subject)
    [attempt] = world.wait_for_attempts(queue_id)
    assert any(line.startswith("Verified TLS connection established to ") for line in attempt)
    fetch_by_subject(stack, *mailbox, subject)
