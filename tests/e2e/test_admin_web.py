"""The admin service's web pages (/admin/) as an administrator meets them: Debian's Chromium
(driven by Playwright, no browser download) signs in over HTTPS through the front with a
password, enrols TOTP from the page (codes from pyotp, an independent implementation), gets
its recovery codes, adds a mailbox that then receives mail over SMTP and reads it over IMAP.
Then the defences: a second sign-in needs the code, a wrong or used code is refused, a form
without its CSRF token changes nothing, a session past its idle or absolute timeout is
gone, guessing passwords on the sign-in form is delayed then banned, and a domain
administrator neither sees nor creates another domain's mailboxes."""

from __future__ import annotations

import html
import http.client
import ipaddress
import json
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.e2e.adminweb import (
    ADMIN_URL,
    MAILBOX_PASSWORD,
    Admin,
    add_mailbox_in_form,
    chromium,
    db,
    mailbox_listed,
    new_admin,
    sign_in,
    submit_password,
)
from tests.e2e.conftest import DOMAIN, GATEWAY, HOSTNAME, PROJECT, SUBNETS, RunningStack
from tests.e2e.mail import fetch_by_subject, send_inbound, unique_subject
from tests.e2e.test_bans import bans_policy

pytestmark = pytest.mark.e2e

# A spare address on the frontend bridge for the brute-force test (test_bans.py uses
# .101-.106; the gateway, from which the browser arrives, is exempt from bans).
ATTACKER = str(ipaddress.ip_network(SUBNETS[0]).network_address + 110)
MAX_FAILURES = 3
MAX_DELAY = 2


# --- the browser -----------------------------------------------------------------------------


@pytest.fixture
def page(stack: RunningStack, tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium (no cookies) that trusts exactly the stack's key."""
    with chromium(stack, tmp_path / "chromium-profile") as browser_page:
        yield browser_page


@pytest.fixture(scope="module")
def first_admin(stack: RunningStack) -> Admin:
    return new_admin(stack)


# --- the first administrator ---------------------------------------------------------------


def test_first_admin_enrols_totp_and_adds_a_mailbox_that_receives_and_reads_mail(
    stack: RunningStack, page: Any, first_admin: Admin
) -> None:
    sign_in(page, first_admin)
    assert first_admin.name in page.locator("main").inner_text()
    # The session cookie: __Host-, Secure, HttpOnly, SameSite=Strict, Path=/, no Domain.
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "__Host-mailstack-admin"]
    assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        True, True, "Strict", "/",
    )  # fmt: skip
    assert cookie["domain"] == HOSTNAME  # host-only
    answer = page.goto(ADMIN_URL + "mailboxes", wait_until="domcontentloaded")
    headers = answer.all_headers()
    # Scripts from this site only (the passkey pages' one script); none on this page.
    assert headers["content-security-policy"].startswith(
        "default-src 'none'; script-src 'self'; style-src 'self'"
    )
    assert headers["cache-control"] == "no-store"
    assert page.locator("script").count() == 0
    assert "confirmed" in stack.cli("admin", "list").stdout  # the CLI sees the enrolment
    address = f"web-{uuid.uuid4().hex[:8]}@{DOMAIN}"
    assert add_mailbox_in_form(page, address.upper()) == f"Added mailbox {address}."
    assert page.get_by_role("cell", name=address, exact=True).is_visible()
    subject = unique_subject("web admin mailbox")
    send_inbound([address], subject)
    assert str(fetch_by_subject(stack, address, MAILBOX_PASSWORD, subject)["Subject"]) == subject
    # The audit log names the administrator and the browser's address (the gateway).
    logged = json.loads(
        stack.cli("audit", "list", "--actor", f"admin:{first_admin.name}", "--json").stdout
    )
    actions = {(entry["action"], entry["target"], entry["source"]) for entry in logged}
    assert ("mailbox.add", address, GATEWAY) in actions
    assert ("mfa.confirm", f"admin:{first_admin.name}", GATEWAY) in actions
    # The CLI's rules and lines, shown on the form: nothing is created.
    hostile = "victim@example.test\nBcc: all@example.test"
    line = add_mailbox_in_form(page, hostile)
    assert line.startswith("ADDRESS: ")
    assert add_mailbox_in_form(page, address) == f"mailbox {address} already exists"
    weak = f"weak-{uuid.uuid4().hex[:6]}@{DOMAIN}"
    assert add_mailbox_in_form(page, weak, "password").startswith("the password is too short")
    assert not mailbox_listed(stack, weak)
    # Signing out ends the session: the pages send the browser back to the sign-in.
    with page.expect_navigation(wait_until="domcontentloaded"):  # before the next goto
        page.get_by_role("button", name="Sign out").click()
    page.goto(ADMIN_URL + "mailboxes", wait_until="domcontentloaded")
    assert page.url.endswith("/admin/signin")


def test_a_later_sign_in_needs_the_code_and_refuses_a_wrong_or_used_one(
    stack: RunningStack, page: Any, first_admin: Admin
) -> None:
    if first_admin.secret is None:
        pytest.skip("needs the enrolment of the first test")
    submit_password(page, first_admin)
    assert page.url.endswith("/admin/code")
    # Only the password so far: no page is reachable.
    page.goto(ADMIN_URL + "mailboxes", wait_until="domcontentloaded")
    assert page.url.endswith("/admin/code")
    code_field = page.get_by_label(re.compile("Code from your authenticator app"))
    right = first_admin.code()
    wrong = str((int(right) + 1) % 1_000_000).zfill(6)
    code_field.fill(wrong)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_load_state("domcontentloaded")
    assert "The code is wrong" in page.locator("[role=alert]").inner_text()
    assert page.url.endswith("/admin/code")
    page.get_by_label(re.compile("Code from your authenticator app")).fill(right)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_load_state("domcontentloaded")
    assert page.url.endswith("/admin/")
    # The same code again, in a new sign-in: refused (never twice).
    with page.expect_navigation(wait_until="domcontentloaded"):  # before the next goto
        page.get_by_role("button", name="Sign out").click()
    submit_password(page, first_admin)
    page.get_by_label(re.compile("Code from your authenticator app")).fill(right)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_load_state("domcontentloaded")
    assert "The code is wrong, or it was used already" in page.locator("[role=alert]").inner_text()
    # A recovery code works once.
    recovery = first_admin.recovery_codes[0]
    page.get_by_label(re.compile("Code from your authenticator app")).fill(recovery)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_load_state("domcontentloaded")
    assert page.url.endswith("/admin/")


def test_a_form_post_without_its_csrf_token_is_refused_and_changes_nothing(
    stack: RunningStack, page: Any
) -> None:
    admin = new_admin(stack)
    # The sign-in form is protected the same way (login CSRF): no session is made.
    page.goto(ADMIN_URL + "signin", wait_until="domcontentloaded")
    page.locator("input[name=csrf]").evaluate("element => element.remove()")
    page.get_by_label("Name").fill(admin.name)
    page.get_by_label("Password").fill(admin.password)
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Sign in").click()
    assert navigation.value.status == 403
    page.goto(ADMIN_URL, wait_until="domcontentloaded")
    assert page.url.endswith("/admin/signin")
    sign_in(page, admin)
    for token in (None, "0" * 64):
        address = f"csrf-{uuid.uuid4().hex[:8]}@{DOMAIN}"
        page.goto(ADMIN_URL + "mailboxes", wait_until="domcontentloaded")
        field_ = page.locator("form.add input[name=csrf]")
        if token is None:
            field_.evaluate("element => element.remove()")
        else:
            field_.evaluate(f"element => element.value = '{token}'")
        page.get_by_label("Address").fill(address)
        page.get_by_label("Password").fill(MAILBOX_PASSWORD)
        with page.expect_navigation() as navigation:
            page.get_by_role("button", name="Add mailbox").click()
        assert navigation.value.status == 403
        assert "nothing was changed" in page.locator("[role=alert]").inner_text()
        assert not mailbox_listed(stack, address)


@pytest.mark.parametrize(
    "aged",
    [
        "last_seen = now() - interval '16 minutes'",  # idle for longer than 15 minutes
        "created = now() - interval '8 hours 1 minute'",  # signed in more than 8 hours ago
    ],
    ids=["idle", "absolute"],
)
def test_a_session_past_its_timeout_is_gone(stack: RunningStack, page: Any, aged: str) -> None:
    admin = new_admin(stack)
    sign_in(page, admin)
    page.goto(ADMIN_URL + "mailboxes", wait_until="domcontentloaded")
    assert page.url.endswith("/admin/mailboxes")
    # Constant SQL per case (the parameter is this test's own text); the name a variable.
    db(stack, f"UPDATE web_sessions SET {aged} WHERE admin = :'name';", name=admin.name)  # noqa: S608
    page.goto(ADMIN_URL + "mailboxes", wait_until="domcontentloaded")
    assert page.url.endswith("/admin/signin")


# --- brute force ------------------------------------------------------------------------------


class SourcedHTTPS(http.client.HTTPSConnection):
    """HTTPS to the front's container from a chosen source address, with the right SNI."""

    def __init__(self, front: str, source: str, stack: RunningStack) -> None:
        super().__init__(front, 443, context=stack.tls_context(), timeout=120)
        self._source = source

    def connect(self) -> None:
        sock = socket.create_connection(
            (self.host, self.port), self.timeout, source_address=(self._source, 0)
        )
        self.sock = self._context.wrap_socket(sock, server_hostname=HOSTNAME)  # type: ignore[attr-defined]


@dataclass
class FormClient:
    """A client that posts the sign-in form as a browser does (cookie and token)."""

    stack: RunningStack
    front: str
    source: str
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, str]:
        connection = SourcedHTTPS(self.front, self.source, self.stack)
        headers = {"Host": HOSTNAME}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            for header in answer.headers.get_all("Set-Cookie") or []:
                for name, morsel in SimpleCookie(header).items():
                    self.cookies[name] = morsel.value
            return answer.status, answer.read().decode()
        finally:
            connection.close()

    def sign_in(self, name: str, password: str) -> tuple[int, str, float]:
        _, page = self.request("GET", "/admin/signin")
        match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert match, page
        started = time.monotonic()
        status, body = self.request(
            "POST", "/admin/signin", {"csrf": match.group(1), "name": name, "password": password}
        )
        return status, html.unescape(body), time.monotonic() - started


@pytest.fixture
def attacker(stack: RunningStack) -> Iterator[FormClient]:
    network_id = subprocess.run(
        ["docker", "network", "inspect", "--format", "{{.Id}}", f"{PROJECT}_frontend"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    bridge = f"br-{network_id[:12]}"
    subprocess.run(["ip", "addr", "add", f"{ATTACKER}/32", "dev", bridge], check=True)
    try:
        with bans_policy(
            stack, max_failures=MAX_FAILURES, ban_time="60s", max_delay=f"{MAX_DELAY}s"
        ):
            yield FormClient(stack, stack.addresses("front")["frontend"], ATTACKER)
    finally:
        stack.cli("security", "bans", "--clear", ATTACKER, check=False)
        subprocess.run(
            ["ip", "addr", "del", f"{ATTACKER}/32", "dev", bridge],
            capture_output=True, check=False,
        )  # fmt: skip


def test_guessing_passwords_on_the_sign_in_form_is_delayed_then_banned(
    stack: RunningStack, attacker: FormClient
) -> None:
    admin = new_admin(stack)
    durations = []
    for _ in range(MAX_FAILURES):
        status, body, took = attacker.sign_in(admin.name, f"wrong-{uuid.uuid4().hex}")
        assert status == 200 and "The name or the password is wrong." in body
        durations.append(took)
    # bansd holds attempt n for 2**(n-2) s (0, 1, 2): the steps are at least 1 and 2 s.
    assert durations[1] - durations[0] >= 0.8, durations
    assert durations[2] - durations[0] >= 1.8, durations
    # Banned: even the right password is refused, before it is checked.
    status, body, took = attacker.sign_in(admin.name, admin.password)
    assert status == 429 and "Too many failed logins" in body, (status, body)
    shown = json.loads(stack.cli("security", "bans", "--json").stdout)
    (ban,) = [entry for entry in shown["bans"] if entry["address"] == ATTACKER]
    assert ban["protocols"] == ["admin"] and ban["logins"] == [admin.name]
    # The operator lifts it: the right password passes again.
    stack.cli("security", "bans", "--clear", ATTACKER)
    status, body, _ = attacker.sign_in(admin.name, admin.password)
    assert status == 303, (status, body)


# --- a domain administrator ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ours(stack: RunningStack) -> str:
    """A domain of its own for the domain administrator. Module-scoped, so it is made before
    the browser starts: a new domain renews the certificate the browser pins."""
    domain = f"dom-{uuid.uuid4().hex[:8]}.example.test"
    stack.cli("domain", "add", domain)
    return domain


def test_domain_admin_neither_sees_nor_creates_another_domains_mailboxes(
    stack: RunningStack, ours: str, page: Any
) -> None:
    theirs, _ = stack.new_mailbox()  # in DOMAIN, which it does not manage
    admin = new_admin(stack, "--role", "domain-admin", "--domain", ours)
    sign_in(page, admin)
    page.goto(ADMIN_URL + "mailboxes", wait_until="domcontentloaded")
    listing = page.locator("main").inner_text()
    assert theirs not in listing and f"@{DOMAIN}" not in listing
    elsewhere = f"intruder-{uuid.uuid4().hex[:8]}@{DOMAIN}"
    assert add_mailbox_in_form(page, elsewhere) == f"{DOMAIN} is not a domain you manage"
    assert not mailbox_listed(stack, elsewhere)
    mine = f"own-{uuid.uuid4().hex[:8]}@{ours}"
    assert add_mailbox_in_form(page, mine) == f"Added mailbox {mine}."
    assert page.get_by_role("cell", name=mine, exact=True).is_visible()
