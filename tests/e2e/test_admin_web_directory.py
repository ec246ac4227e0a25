"""The web admin's directory pages (/admin/domains, aliases, a mailbox's page, tokens, audit)
as administrators meet them in Debian's Chromium, signed in with password and TOTP: the
first administrator adds a domain in the page, the host's `mailstack jobs run` publishes its
key, a mailbox added in the page receives mail over SMTP and reads it over IMAP, its password
changed in the page; a domain administrator neither sees nor changes another domain; creating
a token asks for the password again; the audit log page names admin:NAME and exports; a form
without its CSRF token changes nothing."""

from __future__ import annotations

import csv
import http.client
import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import sync_playwright

from tests.e2e.adminweb import (
    ADMIN_URL,
    MAILBOX_PASSWORD,
    Admin,
    add_mailbox_in_form,
    chromium,
    db,
    launch,
    mailbox_listed,
    new_admin,
    sign_in,
)
from tests.e2e.conftest import DOMAIN, GATEWAY, HOSTNAME, PORTS, RunningStack
from tests.e2e.mail import fetch_by_subject, send_inbound, unique_subject
from tests.e2e.test_admin_api import api

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "Changed-in 42 the page"  # a test account


@pytest.fixture
def page(stack: RunningStack, tmp_path: Path) -> Iterator[Any]:
    with chromium(stack, tmp_path / "chromium-profile") as browser_page:
        yield browser_page


@pytest.fixture(scope="module")
def ours(stack: RunningStack) -> str:
    """The domain administrator's own domain, made on the host before any browser starts
    (a new domain renews the certificate the browser pins)."""
    domain = f"own-{uuid.uuid4().hex[:8]}.example.test"
    stack.cli("domain", "add", domain)
    return domain


def alert_or_status(page: Any) -> str:
    return str(page.locator("[role=alert], [role=status]").first.inner_text())


def submit(page: Any, button: str) -> int:
    """Click a form's button; the status of the page it answers with."""
    with page.expect_navigation(wait_until="domcontentloaded") as navigation:
        page.get_by_role("button", name=button, exact=True).click()
    return int(navigation.value.status)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    text: str


def request(
    stack: RunningStack, page: Any, method: str, path: str, form: dict[str, str] | None = None
) -> Answer:
    """A request with the browser's cookies but not through its forms (a forged post, or a
    download), to the front's published port."""
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies())
    headers = {"Host": HOSTNAME, "Cookie": cookies}
    body = None
    if form is not None:
        body = urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    connection = http.client.HTTPSConnection(
        "127.0.0.1", PORTS["https"], context=stack.tls_context(), timeout=60
    )
    try:
        connection.request(method, "/admin/" + path, body=body, headers=headers)
        response = connection.getresponse()
        answer = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, answer, response.read().decode())
    finally:
        connection.close()


def csrf_of(page: Any) -> str:
    return str(page.locator("form.signout input[name=csrf]").get_attribute("value"))


def domain_row(page: Any, domain: str) -> str:
    page.goto(ADMIN_URL + "domains", wait_until="domcontentloaded")
    return str(page.get_by_role("row").filter(has_text=domain).first.inner_text())


def test_the_first_administrator_creates_a_domain_and_a_mailbox_in_it_that_receives_mail_over_smtp_and_reads_it_over_imap(
    stack: RunningStack, tmp_path: Path
) -> None:
    with sync_playwright() as playwright:
        page = launch(playwright, stack, tmp_path / "before-the-key")
        try:
            admin, domain, address = _domain_and_mailbox(stack, playwright, page, tmp_path)
        finally:
            page.context.close()
    logged = json.loads(
        stack.cli("audit", "list", "--actor", f"admin:{admin.name}", "--json").stdout
    )
    actions = {(entry["action"], entry["target"], entry["source"]) for entry in logged}
    for action, target in [
        ("domain.add", domain),
        ("mailbox.add", address),
        ("mailbox.password", address),
        ("mailbox.remove", address),
        ("domain.remove", domain),
    ]:
        assert (action, target, GATEWAY) in actions, (action, actions)


def _domain_and_mailbox(
    stack: RunningStack, playwright: Any, page: Any, tmp_path: Path
) -> tuple[Admin, str, str]:
    admin = new_admin(stack)
    sign_in(page, admin)
    domain = f"web-{uuid.uuid4().hex[:8]}.example.test"
    page.goto(ADMIN_URL + "domains", wait_until="domcontentloaded")
    page.get_by_label("Domain name").fill("evil.test\r\nX-Injected: yes")
    assert submit(page, "Add domain") == 400
    assert alert_or_status(page).startswith("DOMAIN: ")
    page.get_by_label("Domain name").fill(domain.upper())
    assert submit(page, "Add domain") == 201
    assert alert_or_status(page) == (f"Added domain {domain}; its DKIM key is queued for the host.")
    assert "queued" in domain_row(page, domain)
    cookies = page.context.cookies()
    # The host's job publishes the key (and renews the certificate: a new browser pins it).
    assert f"domain.publish_key {domain}: done" in stack.cli("jobs", "run").stdout
    later = launch(playwright, stack, tmp_path / "after-the-key")
    try:
        later.context.add_cookies(cookies)
        assert "published" in domain_row(later, domain)
        address = f"web-{uuid.uuid4().hex[:8]}@{domain}"
        assert add_mailbox_in_form(later, address) == f"Added mailbox {address}."
        subject = unique_subject("web admin domain")
        send_inbound([address], subject)
        fetched = fetch_by_subject(stack, address, MAILBOX_PASSWORD, subject)
        assert str(fetched["Subject"]) == subject
        # The mailbox's page: a new password and quota (the CLI's rules), then it reads mail
        # with the new password.
        later.get_by_role("link", name=f"Change or remove {address}").click()
        later.wait_for_load_state("domcontentloaded")
        later.get_by_label("New password").fill("short")
        assert submit(later, "Save changes") == 400
        assert alert_or_status(later).startswith("the password is too short")
        later.get_by_label("New password").fill(NEW_PASSWORD)
        later.get_by_label("New quota").fill("2G")
        assert submit(later, "Save changes") == 200
        assert alert_or_status(later) == f"Mailbox {address}: password changed, quota set."
        assert later.locator("#summary").inner_text().startswith("Quota 2")
        again = unique_subject("web admin new password")
        send_inbound([address], again)
        assert str(fetch_by_subject(stack, address, NEW_PASSWORD, again)["Subject"]) == again
        # In use: the CLI's refusal on the page; once its mailbox is gone, the domain goes.
        later.goto(ADMIN_URL + "domains", wait_until="domcontentloaded")
        later.get_by_role("button", name=f"Remove {domain}").click()
        later.wait_for_load_state("domcontentloaded")
        assert alert_or_status(later).startswith(f"domain {domain} still has 1 mailbox(es)")
        later.goto(ADMIN_URL + f"mailbox?address={address}", wait_until="domcontentloaded")
        assert submit(later, "Remove mailbox") == 200
        assert alert_or_status(later) == f"Removed mailbox {address}."
        assert not mailbox_listed(stack, address)
        later.goto(ADMIN_URL + "domains", wait_until="domcontentloaded")
        later.get_by_role("button", name=f"Remove {domain}").click()
        later.wait_for_load_state("domcontentloaded")
        assert alert_or_status(later).startswith(f"Removed domain {domain}")
        later.get_by_role("button", name=f"Remove {DOMAIN}").click()
        later.wait_for_load_state("domcontentloaded")
        assert "is the stack's own domain" in alert_or_status(later)
    finally:
        later.context.close()
    return admin, domain, address


def test_a_domain_administrator_neither_sees_nor_changes_another_domain_on_the_domains_and_aliases_pages(
    stack: RunningStack, ours: str, page: Any
) -> None:
    theirs = f"theirs-{uuid.uuid4().hex[:8]}@{DOMAIN}"
    stack.cli("alias", "add", theirs, f"someone@{DOMAIN}")
    admin = new_admin(stack, "--role", "domain-admin", "--domain", ours)
    sign_in(page, admin)
    page.goto(ADMIN_URL + "domains", wait_until="domcontentloaded")
    listing = page.locator("main").inner_text()
    assert ours in listing and DOMAIN not in listing.replace(ours, "")
    assert page.get_by_label("Domain name").count() == 0  # no add form, no remove buttons
    assert page.get_by_role("button", name=re.compile("^Remove")).count() == 0
    token = csrf_of(page)
    # Posted anyway (a forged form with a valid token): refused, nothing changed.
    for path, form in [
        ("domains", {"name": f"new-{uuid.uuid4().hex[:6]}.example.test"}),
        ("domains/remove", {"name": ours}),
    ]:
        answer = request(stack, page, "POST", path, {"csrf": token, **form})
        assert answer.status == 403 and "only an administrator may do this" in answer.text
    assert ours in stack.cli("domain", "list").stdout
    page.goto(ADMIN_URL + "aliases", wait_until="domcontentloaded")
    assert theirs not in page.locator("main").inner_text()
    page.get_by_label(re.compile("^Source")).fill(f"intruder@{DOMAIN}")
    page.get_by_label(re.compile("^Destinations")).fill(f"x@{ours}")
    assert submit(page, "Add alias") == 403
    assert alert_or_status(page) == f"{DOMAIN} is not a domain you manage"
    answer = request(stack, page, "POST", "aliases/remove", {"csrf": token, "source": theirs})
    assert answer.status == 403
    aliases = stack.cli("alias", "list").stdout
    assert theirs in aliases and f"intruder@{DOMAIN}" not in aliases
    mine = f"sales-{uuid.uuid4().hex[:6]}@{ours}"
    page.get_by_label(re.compile("^Source")).fill(mine)
    page.get_by_label(re.compile("^Destinations")).fill(f"a@{ours}, b@elsewhere.example")
    assert submit(page, "Add alias") == 201
    assert page.get_by_role("cell", name=mine, exact=True).is_visible()
    assert submit(page, f"Remove alias {mine}") == 200
    assert alert_or_status(page) == f"Removed alias {mine}."
    # Nor another domain's mailbox page, nor the audit log (administrators only).
    other, _ = stack.new_mailbox()
    answer = page.goto(ADMIN_URL + f"mailbox?address={other}", wait_until="domcontentloaded")
    assert answer.status == 404
    answer = request(stack, page, "POST", "mailbox/remove", {"csrf": token, "address": other})
    assert answer.status == 403
    assert mailbox_listed(stack, other)
    answer = page.goto(ADMIN_URL + "audit", wait_until="domcontentloaded")
    assert answer.status == 403 and page.locator("table tbody tr").count() == 0


def create_token_in_page(page: Any, name: str) -> int:
    page.goto(ADMIN_URL + "tokens", wait_until="domcontentloaded")
    page.get_by_label("Token name").fill(name)
    page.get_by_label("read", exact=True).check()
    page.get_by_label(re.compile("^Expires after")).fill("1d")
    return submit(page, "Create token")


def test_creating_a_token_asks_for_the_password_again(stack: RunningStack, page: Any) -> None:
    admin = new_admin(stack)
    sign_in(page, admin)
    # The password was typed at the sign-in: six minutes later, it must be typed again.
    db(
        stack,
        "UPDATE web_sessions SET reauth_at = now() - interval '6 minutes' WHERE admin = :'name';",
        name=admin.name,
    )
    name = f"web-{uuid.uuid4().hex[:8]}"
    create_token_in_page(page, name)
    assert page.url.endswith("/admin/confirm?next=/admin/tokens")
    assert name not in stack.cli("api", "token", "list").stdout  # nothing was created
    page.get_by_label("Password").fill("not the password")
    assert submit(page, "Confirm") == 200
    assert alert_or_status(page) == "The name or the password is wrong."
    page.get_by_label("Password").fill(admin.password)
    submit(page, "Confirm")
    assert page.url.endswith("/admin/tokens?confirmed=1")
    assert alert_or_status(page).startswith("Password confirmed")
    assert create_token_in_page(page, name) == 201
    token = page.locator("#token").inner_text().strip()
    assert re.fullmatch(r"msk_[A-Za-z0-9_-]{40,}", token), token
    # It works, acts for its administrator, and is shown only this once.
    assert api(stack, "GET", "/api/v1/domains", token)[0] == 200
    page.goto(ADMIN_URL + "tokens", wait_until="domcontentloaded")
    assert token not in page.content()
    row = page.get_by_role("row").filter(has_text=name).first.inner_text()
    assert admin.name in row and "active" in row
    assert submit(page, f"Revoke {name}") == 200
    assert alert_or_status(page) == f"Revoked API token {name}."
    assert api(stack, "GET", "/api/v1/domains", token)[0] == 401
    logged = json.loads(
        stack.cli("audit", "list", "--actor", f"admin:{admin.name}", "--json").stdout
    )
    assert {("token.create", name), ("token.revoke", name)} <= {
        (entry["action"], entry["target"]) for entry in logged
    }, logged


def test_the_audit_log_page_shows_each_change_with_admin_name(
    stack: RunningStack, page: Any
) -> None:
    admin = new_admin(stack)
    sign_in(page, admin)
    source = f"audit-{uuid.uuid4().hex[:8]}@{DOMAIN}"
    page.goto(ADMIN_URL + "aliases", wait_until="domcontentloaded")
    page.get_by_label(re.compile("^Source")).fill(source)
    page.get_by_label(re.compile("^Destinations")).fill("keeper@elsewhere.example")
    assert submit(page, "Add alias") == 201
    assert submit(page, f"Remove alias {source}") == 200
    assert alert_or_status(page) == f"Removed alias {source}."
    # "load": the stylesheet applies, as on a phone, before the cells are read.
    page.goto(ADMIN_URL + f"audit?actor=admin:{admin.name}&limit=50", wait_until="load")
    rows = [text.split("\t") for text in page.locator("table tbody tr").all_inner_texts()]
    shown = [(row[1], row[2], row[3]) for row in rows]
    # Newest first: the removal above the addition, each by admin:NAME from the browser.
    removal = (f"admin:{admin.name}", GATEWAY, "alias.remove")
    addition = (f"admin:{admin.name}", GATEWAY, "alias.add")
    assert removal in shown and addition in shown, rows
    assert shown.index(removal) < shown.index(addition), rows
    assert all(row[1] == f"admin:{admin.name}" for row in rows)
    assert (f"admin:{admin.name}", GATEWAY, "mfa.confirm") in shown  # its own enrolment
    # A bad filter: the CLI's line, no entries.
    answer = page.goto(ADMIN_URL + "audit?actor=x'%20OR%201=1", wait_until="domcontentloaded")
    assert answer.status == 400 and alert_or_status(page).startswith("actor: ")
    # The exports: the same entries, CSV and JSON, as downloads.
    query = f"?actor=admin:{admin.name}&limit=50"
    exported = request(stack, page, "GET", "audit.csv" + query)
    assert exported.status == 200
    assert exported.headers["content-disposition"].startswith("attachment; filename=")
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(e["actor"], e["action"]) for e in table] == [(row[1], row[3]) for row in rows]
    entries = json.loads(request(stack, page, "GET", "audit.json" + query).text)
    assert [e["id"] for e in entries] == [int(e["id"]) for e in table]


def test_a_form_post_without_the_csrf_token_changes_nothing(stack: RunningStack, page: Any) -> None:
    admin = new_admin(stack)
    sign_in(page, admin)
    for token in (None, "0" * 64):
        source = f"csrf-{uuid.uuid4().hex[:8]}@{DOMAIN}"
        page.goto(ADMIN_URL + "aliases", wait_until="domcontentloaded")
        field = page.locator("form.add input[name=csrf]")
        if token is None:
            field.evaluate("element => element.remove()")
        else:
            field.evaluate(f"element => element.value = '{token}'")
        page.get_by_label(re.compile("^Source")).fill(source)
        page.get_by_label(re.compile("^Destinations")).fill(f"someone@{DOMAIN}")
        assert submit(page, "Add alias") == 403
        assert "nothing was changed" in alert_or_status(page)
        assert source not in stack.cli("alias", "list").stdout
    # The same for a removal, posted without the token: the domain stays.
    answer = request(stack, page, "POST", "domains/remove", {"name": DOMAIN})
    assert answer.status == 403 and DOMAIN in stack.cli("domain", "list").stdout
