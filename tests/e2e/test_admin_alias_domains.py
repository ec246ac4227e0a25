"""Alias domains and sender grants through the admin service, on the running stack: an
administrator adds an alias domain in the page and mail to user@alias is delivered to
user@real-domain (SMTP in, IMAP out), its DKIM key published by the host's `jobs run`; a
sender grant added through the API lets a mailbox send as another address on 587 (refused
before, and again once removed); a domain administrator can touch neither an alias domain
nor a grant of another domain, through the API (403) or the pages (the same line); every
change is in the audit log under its actor."""

from __future__ import annotations

import json
import smtplib
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from tests.e2e.adminweb import ADMIN_URL, chromium, db, launch, new_admin, sign_in
from tests.e2e.conftest import DOMAIN, GATEWAY, RunningStack
from tests.e2e.mail import fetch_by_subject, send_inbound, unique_subject
from tests.e2e.test_admin_api import api, new_token
from tests.e2e.test_admin_web_directory import csrf_of, request
from tests.e2e.test_policy import from_sink, message, refusal, submit

pytestmark = pytest.mark.e2e

OUTSIDE = "friend@elsewhere.example"
ADD_ALIAS_DOMAIN = "INSERT INTO alias_domains (name, target) VALUES (:'name', :'target');"


@dataclass(frozen=True)
class Dana:
    """A domain administrator of its own domain, with a token acting for it."""

    own: str
    box: str  # a mailbox of its domain
    token_name: str
    token: str


@pytest.fixture(scope="module")
def dana(stack: RunningStack) -> Dana:
    """Made on the host before any browser starts (a new domain renews the certificate the
    browser pins)."""
    own = f"dana-{uuid.uuid4().hex[:8]}.example.test"
    stack.cli("domain", "add", own)
    box = f"box@{own}"
    stack.cli("mailbox", "add", box, "--password-stdin", stdin="Dana-box 42 password\n")
    admin = f"dana-{uuid.uuid4().hex[:6]}"
    stack.cli("admin", "add", admin, "--role", "domain-admin", "--domain", own)
    token_name = f"e2e-dana-{uuid.uuid4().hex[:6]}"
    created = stack.cli(
        "api", "token", "create", token_name, "--scope", "admin", "--by", admin, "--json"
    )
    return Dana(own, box, token_name, json.loads(created.stdout)["token"])


@pytest.fixture
def page(stack: RunningStack, tmp_path: Path) -> Iterator[Any]:
    with chromium(stack, tmp_path / "chromium-profile") as browser_page:
        yield browser_page


def submit_form(page: Any, button: str) -> tuple[int, str]:
    """Click a form's button: the status of the page it answers with, and its alert or
    status line."""
    with page.expect_navigation(wait_until="domcontentloaded") as navigation:
        page.get_by_role("button", name=button, exact=True).click()
    line = str(page.locator("[role=alert], [role=status]").first.inner_text())
    return int(navigation.value.status), line


def audited(stack: RunningStack, actor: str) -> list[tuple[str, str, str, str]]:
    logged = json.loads(stack.cli("audit", "list", "--actor", actor, "--json").stdout)
    return [(e["action"], e["target"], e["detail"], e["source"]) for e in logged]


def forbidden(domain: str) -> tuple[int, dict[str, str]]:
    return 403, {"error": f"{domain} is not a domain you manage"}


# --- a domain administrator: only its own domains --------------------------------------------


def test_a_domain_administrators_token_cannot_add_an_alias_domain_or_a_grant_touching_another_domain(
    stack: RunningStack, dana: Dana
) -> None:
    tag = uuid.uuid4().hex[:6]
    # An alias domain of the stack's own domain, made in the database: `domain alias add`
    # would also publish its key (a render and a restart this test does not need).
    theirs = f"theirs-{tag}.example.test"
    db(stack, ADD_ALIAS_DOMAIN, name=theirs, target=DOMAIN)
    nowhere = f"nowhere-{tag}.example.test"
    try:
        alias_domains = "/api/v1/alias-domains"
        # Another's target, another's name (a mail domain, an alias domain, or a name of the
        # world): 403, the same line whether it exists or not; nothing added.
        for body, refused in [
            ({"name": f"shop-{tag}.{dana.own}", "target": DOMAIN}, DOMAIN),
            ({"name": DOMAIN, "target": dana.own}, DOMAIN),
            ({"name": theirs, "target": dana.own}, theirs),
            ({"name": nowhere, "target": dana.own}, nowhere),
        ]:
            assert api(stack, "POST", alias_domains, dana.token, body) == forbidden(refused)
        for name in (theirs, nowhere):
            answer = api(stack, "DELETE", f"{alias_domains}/{name}", dana.token)
            assert answer == forbidden(name)
        senders = "/api/v1/senders"
        for body, refused in [
            ({"sender": f"boss@{DOMAIN}", "mailbox": dana.box}, DOMAIN),
            ({"sender": f"boss@{theirs}", "mailbox": dana.box}, theirs),  # never its target
            ({"sender": f"boss@{nowhere}", "mailbox": dana.box}, nowhere),
            ({"sender": f"sales@{dana.own}", "mailbox": f"postmaster@{DOMAIN}"}, DOMAIN),
        ]:
            assert api(stack, "POST", senders, dana.token, body) == forbidden(refused)
        quoted = urllib.parse.quote(f"postmaster@{DOMAIN}")
        answer = api(stack, "DELETE", f"{senders}/@{DOMAIN}?mailbox={quoted}", dana.token)
        assert answer == forbidden(DOMAIN)
        listed = api(stack, "GET", alias_domains, dana.token)[1]["alias_domains"]
        assert theirs not in [alias["name"] for alias in listed]

        # Its own: a name under its domain, and a grant with both sides in it.
        shop = f"shop-{tag}.{dana.own}"
        status, added = api(
            stack, "POST", alias_domains, dana.token, {"name": shop, "target": dana.own}
        )
        assert (status, added["name"], added["dkim_key"]) == (201, shop, "queued")
        grant = {"sender": f"sales@{shop}", "mailbox": dana.box}
        assert api(stack, "POST", senders, dana.token, grant) == (201, {**grant, "added": True})
        assert api(stack, "GET", senders, dana.token)[1] == {"senders": [grant]}
        assert api(stack, "DELETE", f"{alias_domains}/{shop}", dana.token) == (
            200,
            {"name": shop, "target": dana.own},
        )
        # The grants to send as it went with it (the core's rule).
        assert api(stack, "GET", senders, dana.token)[1] == {"senders": []}
        # The order of the last two is the database's: a set.
        assert set(audited(stack, f"token:{dana.token_name}")[-4:]) == {
            ("alias_domain.add", shop, f"of {dana.own}", GATEWAY),
            ("sender.add", dana.box, f"may send as sales@{shop}", GATEWAY),
            ("alias_domain.remove", shop, f"of {dana.own}", GATEWAY),
            ("sender.remove", dana.box, f"may send as sales@{shop}", GATEWAY),
        }
    finally:
        db(stack, "DELETE FROM alias_domains WHERE name = :'name';", name=theirs)


def test_a_domain_administrator_cannot_add_an_alias_domain_or_a_grant_of_another_domain_in_the_pages(
    stack: RunningStack, dana: Dana, page: Any
) -> None:
    """The same refusals as the API's, as the one line on the form; nothing changed."""
    nowhere = f"nowhere-{uuid.uuid4().hex[:6]}.example.test"
    admin = new_admin(stack, "--role", "domain-admin", "--domain", dana.own)
    sign_in(page, admin)
    page.goto(ADMIN_URL + "alias-domains", wait_until="domcontentloaded")
    page.get_by_role("textbox", name="Alias domain").fill(nowhere)
    # Its only domain is the only target offered (a forged post is refused as the API's).
    assert page.get_by_role("combobox", name="Target domain").input_value() == dana.own
    assert submit_form(page, "Add alias domain") == (403, forbidden(nowhere)[1]["error"])
    assert page.get_by_role("textbox", name="Alias domain").input_value() == nowhere  # kept
    page.goto(ADMIN_URL + "senders", wait_until="domcontentloaded")
    page.get_by_role("textbox", name="Send as").fill(f"boss@{DOMAIN}")
    page.get_by_role("textbox", name="Mailbox").fill(dana.box)
    assert submit_form(page, "Allow") == (403, forbidden(DOMAIN)[1]["error"])
    # A forged post with the session's token: the select is no guard, the principal is.
    token = csrf_of(page)
    forged = {"csrf": token, "name": f"shop.{dana.own}", "target": DOMAIN}
    answer = request(stack, page, "POST", "alias-domains", forged)
    assert answer.status == 403 and forbidden(DOMAIN)[1]["error"] in answer.text
    # Without the token: refused before anything is read or changed.
    answer = request(
        stack, page, "POST", "alias-domains", {"name": f"shop.{dana.own}", "target": dana.own}
    )
    assert answer.status == 403 and "did not come from this site" in answer.text
    listed = stack.cli("domain", "alias", "list").stdout
    assert nowhere not in listed and f"shop.{dana.own}" not in listed
    assert f"boss@{DOMAIN}" not in stack.cli("alias", "sender", "list").stdout


# --- sender grants through the API ---------------------------------------------------------------


def test_a_sender_grant_added_through_the_api_lets_a_mailbox_send_as_another_address_on_587(
    stack: RunningStack,
) -> None:
    address, password = stack.new_mailbox()
    team = f"team-{uuid.uuid4().hex[:8]}@{DOMAIN}"
    token_name, token = new_token(stack, "accounts")

    def refused_as(sender: str) -> int | None:
        """The SMTP code that refused sending as sender on 587 (None: accepted)."""
        mail = message(sender, OUTSIDE, unique_subject("send as"))
        refused = refusal(lambda: submit(stack, address, password, mail))
        return None if refused is None else refused[0]

    assert refused_as(team) == 553
    grant = {"sender": team, "mailbox": address}
    assert api(stack, "POST", "/api/v1/senders", token, grant) == (201, {**grant, "added": True})
    assert api(stack, "POST", "/api/v1/senders", token, grant) == (201, {**grant, "added": False})
    listed = api(stack, "GET", f"/api/v1/senders?domain={DOMAIN}", token)[1]["senders"]
    assert grant in listed
    subject = unique_subject("sent as a granted address")
    submit(stack, address, password, message(team, OUTSIDE, subject))
    assert f"From: {team}" in from_sink(stack, subject).decode()

    quoted = urllib.parse.quote(address)
    path = f"/api/v1/senders/{team}?mailbox={quoted}"
    assert api(stack, "DELETE", path, token) == (200, grant)
    assert refused_as(team) == 553
    assert api(stack, "DELETE", path, token) == (
        404,
        {"error": f"{address} has no permission to send as {team}"},
    )
    # A hostile value gets the CLI's line.
    hostile = {"sender": f"{team}\r\nBcc: all@{DOMAIN}", "mailbox": address}
    status, answer = api(stack, "POST", "/api/v1/senders", token, hostile)
    assert status == 400 and answer["error"].startswith("SENDER: ")
    assert audited(stack, f"token:{token_name}") == [
        ("sender.add", address, f"may send as {team}", GATEWAY),
        ("sender.remove", address, f"may send as {team}", GATEWAY),
    ]


# --- an alias domain added in the page -----------------------------------------------------------


def test_an_alias_domain_added_in_the_page_delivers_mail_for_user_at_alias_to_user_at_the_domain(
    stack: RunningStack, tmp_path: Path
) -> None:
    address, password = stack.new_mailbox()
    local_part = address.partition("@")[0]
    alias = f"alias-{uuid.uuid4().hex[:8]}.example.test"
    admin = new_admin(stack)
    with sync_playwright() as playwright:
        page = launch(playwright, stack, tmp_path / "before-the-key")
        try:
            sign_in(page, admin)
            page.goto(ADMIN_URL + "alias-domains", wait_until="domcontentloaded")
            page.get_by_role("textbox", name="Alias domain").fill("evil.test\r\nX-Injected: yes")
            status, line = submit_form(page, "Add alias domain")
            assert status == 400 and line.startswith("ALIAS_DOMAIN: ")
            page.get_by_role("textbox", name="Alias domain").fill(alias.upper())
            page.get_by_role("combobox", name="Target domain").select_option(DOMAIN)
            assert submit_form(page, "Add alias domain") == (
                201,
                f"Added alias domain {alias} of {DOMAIN}; its DKIM key is queued for the host.",
            )
            assert "queued" in page.get_by_role("row").filter(has_text=alias).inner_text()
            cookies = page.context.cookies()
        finally:
            page.context.close()

        # Mail to user@alias is mail to user@domain: SMTP in, IMAP out; an unknown user of
        # the alias domain is refused at RCPT as one of the domain is.
        subject = unique_subject("alias domain added in the page")
        assert send_inbound([f"{local_part}@{alias}"], subject) == {}
        assert fetch_by_subject(stack, address, password, subject)["Subject"] == subject
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            send_inbound([f"nobody-{uuid.uuid4().hex[:6]}@{alias}"], unique_subject("unknown"))

        # The host publishes its key (and renews the certificate: a new browser pins it). An
        # alias domain removed before its job ran (another test's) fails its job: no key.
        ran = stack.cli("jobs", "run", check=False).stdout
        assert f"domain.publish_key {alias}: done: DKIM key" in ran, ran
        assert list((stack.root / "dkim").glob(f"{alias}.*.key"))
        later = launch(playwright, stack, tmp_path / "after-the-key")
        try:
            later.context.add_cookies(cookies)
            later.goto(ADMIN_URL + "alias-domains", wait_until="domcontentloaded")
            row = later.get_by_role("row").filter(has_text=alias)
            assert "published" in row.inner_text()
            with later.expect_navigation(wait_until="domcontentloaded"):
                row.get_by_role("button", name=f"Remove alias domain {alias}").click()
            line = later.locator("[role=status]").inner_text()
            assert line == f"Removed alias domain {alias} (of {DOMAIN})."
        finally:
            later.context.close()

    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send_inbound([f"{local_part}@{alias}"], unique_subject("after removal"))
    logged = audited(stack, f"admin:{admin.name}")
    assert ("alias_domain.add", alias, f"of {DOMAIN}", GATEWAY) in logged, logged
    assert ("alias_domain.remove", alias, f"of {DOMAIN}", GATEWAY) in logged, logged
