"""Users' self-service (/account/) as a mailbox's user meets it: Debian's Chromium (launched
as test_admin_web.py launches it) signs in over HTTPS through the front with the account
password, changes it (IMAP follows), enrols TOTP from the page (codes from pyotp, an
independent implementation) and makes an app password there; then the webmail asks for the
code and IMAP takes only the app password. The defences: without the code no page answers,
a form without its CSRF token changes nothing, another mailbox's app password cannot be
removed. Every second factor made here is turned off again."""

from __future__ import annotations

import contextlib
import http.client
import imaplib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest

from mailstack.adapters.compose import Compose
from mailstack.errors import UsageError
from mailstack.identity import mfa, totp
from mailstack.identity.mfa import Owner
from mailstack.stack.stackdir import Stack
from tests.e2e.conftest import GATEWAY, HOSTNAME, PORTS, RunningStack
from tests.e2e.test_admin_web import page
from tests.e2e.test_mfa_doors import MfaUser, _give_code, _sign_in, imap_login
from tests.e2e.test_webmail import Browser

pytestmark = pytest.mark.e2e
__all__ = ["page"]  # the Chromium fixture of test_admin_web

ACCOUNT_URL = f"https://{HOSTNAME}:{PORTS['https']}/account/"
NEW_PASSWORD = "Self-service 42 changed"  # a test account


@pytest.fixture(scope="module")
def db(stack: RunningStack) -> Compose:
    return Stack.load(stack.root).compose


@pytest.fixture
def cleanup(db: Compose) -> Iterator[list[str]]:
    """Addresses whose second factor is turned off at the end, whatever happened."""
    enrolled: list[str] = []
    yield enrolled
    for address in enrolled:
        with contextlib.suppress(UsageError):  # the test turned it off already
            mfa.disable(db, Owner.mailbox(address))


# A crafted form, posted from the page (the CSP allows no fetch, only forms to itself).
POST = """([url, fields]) => {
    const form = document.createElement("form");
    form.method = "post";
    form.action = url;
    for (const [name, value] of Object.entries(fields)) {
        const field = document.createElement("input");
        field.type = "hidden";
        field.name = name;
        field.value = value;
        form.appendChild(field);
    }
    document.body.appendChild(form);
    form.submit();
}"""


def submit_password(page: Any, address: str, password: str) -> None:
    page.goto(ACCOUNT_URL + "signin", wait_until="domcontentloaded")
    page.get_by_label("Mail address").fill(address)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state("domcontentloaded")


def sign_in(page: Any, address: str, password: str) -> None:
    """A user without a second factor: the password alone opens the account page."""
    submit_password(page, address, password)
    assert page.url == ACCOUNT_URL, page.url
    assert page.locator("#address").inner_text() == address


SESSION_COOKIE = "__Host-mailstack-account"


def account_page_status(stack: RunningStack, session_id: str) -> int:
    """GET /account/ with only this session cookie (another browser holding it)."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1", PORTS["https"], context=stack.tls_context(), timeout=30
    )
    try:
        headers = {"Host": HOSTNAME, "Cookie": f"{SESSION_COOKIE}={session_id}"}
        connection.request("GET", "/account/", headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def session_cookie(page: Any) -> str:
    (value,) = [c["value"] for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    return str(value)


def app_passwords(stack: RunningStack, address: str) -> list[str]:
    listed = stack.cli("mailbox", "app-password", "list", address, "--json").stdout
    return [entry["name"] for entry in json.loads(listed)]


def post_without_token(page: Any, form: str, token: str | None) -> int:
    """Submit the form (a CSS selector) with its CSRF token removed or replaced; the status."""
    field = page.locator(f"{form} input[name=csrf]")
    if token is None:
        field.evaluate("element => element.remove()")
    else:
        field.evaluate(f"element => element.value = '{token}'")
    with page.expect_navigation() as navigation:
        page.locator(f"{form} button[type=submit]").click()
    return int(navigation.value.status)


def test_a_user_changes_their_password_imap_accepts_the_new_one_and_refuses_the_old(
    stack: RunningStack, page: Any
) -> None:
    address, old = stack.new_mailbox()
    # Someone else signed in with the (stolen) old password: on the web and over IMAP.
    sign_in(page, address, old)
    stolen = session_cookie(page)
    page.context.clear_cookies()
    held = imaplib.IMAP4_SSL("127.0.0.1", PORTS["imaps"], ssl_context=stack.tls_context())
    held.login(address, old)
    sign_in(page, address, old)
    assert account_page_status(stack, stolen) == 200
    # A wrong current password changes nothing.
    page.get_by_label("Current password").fill("Not 42 the password")
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change the password").click()
    page.wait_for_load_state("domcontentloaded")
    assert "current password is wrong" in page.locator("[role=alert]").inner_text()
    assert imap_login(stack, address, old)
    # The CLI's strength rule and line.
    page.get_by_label("Current password").fill(old)
    page.get_by_label("New password", exact=True).fill("short")
    page.get_by_label("New password again").fill("short")
    page.locator("#new").evaluate("element => element.removeAttribute('minlength')")
    page.get_by_role("button", name="Change the password").click()
    page.wait_for_load_state("domcontentloaded")
    assert "too short" in page.locator("[role=alert]").inner_text()

    page.get_by_label("Current password").fill(old)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change the password").click()
    page.wait_for_load_state("domcontentloaded")
    assert "was changed" in page.locator("[role=status]").inner_text()
    assert imap_login(stack, address, NEW_PASSWORD)
    assert not imap_login(stack, address, old)
    # The other sessions begun with the old password are over; this one goes on.
    assert account_page_status(stack, stolen) != 200
    page.goto(ACCOUNT_URL, wait_until="domcontentloaded")
    assert page.url == ACCOUNT_URL and page.locator("#address").inner_text() == address
    assert f"sessions.kick {address}: done" in stack.cli("jobs", "run").stdout
    with pytest.raises((imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError)):
        held.noop()
    with contextlib.suppress(Exception):
        held.shutdown()
    # The audit log names the user and the browser's address.
    audit = stack.cli("audit", "list", "--actor", f"mailbox:{address}", "--json").stdout
    changes = [(entry["action"], entry["target"], entry["source"]) for entry in json.loads(audit)]
    assert changes == [("mailbox.password", address, GATEWAY)], changes


def test_a_user_enables_totp_in_self_service_the_webmail_refuses_the_password_alone_and_accepts_password_and_code_imap_refuses_the_account_password_and_accepts_an_app_password_made_on_the_page(
    stack: RunningStack, page: Any, cleanup: list[str], db: Compose
) -> None:
    address, password = stack.new_mailbox()
    cleanup.append(address)
    sign_in(page, address, password)
    assert "Off" in page.locator("#mfa-state").inner_text()
    page.get_by_role("link", name="Set up a second factor").click()
    page.wait_for_load_state("domcontentloaded")
    secret = page.locator("#secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret), secret
    assert page.locator("figure.qr svg").count() == 1  # the QR code, inline SVG
    confirmed_at = time.time()
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).at(confirmed_at))
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_load_state("domcontentloaded")
    recovery = [text.strip() for text in page.locator("#recovery-codes code").all_inner_texts()]
    assert len(recovery) == 10
    page.get_by_role("link", name="Continue to your account").click()
    page.wait_for_load_state("domcontentloaded")
    assert "On" in page.locator("#mfa-state").inner_text()

    page.get_by_label(re.compile("Name of the new app password")).fill("phone")
    page.get_by_role("button", name="Make an app password").click()
    page.wait_for_load_state("domcontentloaded")
    app_password = page.locator("#new-app-password").inner_text().strip()
    assert app_passwords(stack, address) == ["phone"]

    # IMAP: the account password no longer opens it (policy.mfa_protocols
    # app_passwords_only); the app password from the page does.
    assert not imap_login(stack, address, password)
    assert imap_login(stack, address, app_password)

    # The webmail: the password alone stops at the code form; the next step's code opens
    # it (the confirmation spent this step's).
    # (The same Chromium: Playwright's sync API drives one at a time.)
    user = MfaUser(address, password, secret, app_password, tuple(recovery), Owner.mailbox(address))
    webmail = Browser(page.context, page, [])
    _sign_in(webmail, user)
    assert page.locator("#messagelist").count() == 0
    _give_code(webmail, pyotp.TOTP(secret).at(confirmed_at + totp.STEP_SECONDS))
    page.locator("#messagelist").wait_for(state="attached")

    # Turned off on the page with a recovery code (both current steps are spent now).
    page.goto(ACCOUNT_URL, wait_until="domcontentloaded")
    page.get_by_label(re.compile("A current code")).fill(recovery[0])
    page.get_by_role("button", name="Turn the second factor off").click()
    page.wait_for_load_state("domcontentloaded")
    assert "turned off" in page.locator("[role=status]").inner_text()
    assert not mfa.status(db, Owner.mailbox(address)).enrolled
    assert imap_login(stack, address, password)


def test_a_user_without_the_code_cannot_reach_the_pages(
    stack: RunningStack, page: Any, cleanup: list[str]
) -> None:
    address, password = stack.new_mailbox()
    cleanup.append(address)
    enrolment = json.loads(stack.cli("mailbox", "mfa", "enrol", address, "--json").stdout)
    stack.cli("mailbox", "mfa", "confirm", address, pyotp.TOTP(enrolment["secret"]).now())
    submit_password(page, address, password)
    assert page.url.endswith("/account/code"), page.url
    # A wrong code is refused and leaves the session where it was.
    page.get_by_label(re.compile("Code from your authenticator app")).fill("000000")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_load_state("domcontentloaded")
    assert "wrong" in page.locator("[role=alert]").inner_text()
    token = page.locator("input[name=csrf]").get_attribute("value")
    for path in ("", "enrol"):
        page.goto(ACCOUNT_URL + path, wait_until="domcontentloaded")
        assert page.url.endswith("/account/code"), (path, page.url)
    # A form posted straight to a page, with this session's own token: redirected, nothing
    # made, nothing turned off.
    for path, form in (
        ("app-passwords", {"name": "sneaky"}),
        ("password", {"current": password, "new": NEW_PASSWORD, "again": NEW_PASSWORD}),
        ("mfa/disable", {"code": "000000"}),
    ):
        # Posted by the page itself (its cookies, its origin); the 303 is followed.
        with page.expect_navigation():
            page.evaluate(POST, [ACCOUNT_URL + path, {**form, "csrf": token or ""}])
        assert page.url == ACCOUNT_URL + "code", path
    assert app_passwords(stack, address) == []
    assert not imap_login(stack, address, NEW_PASSWORD)
    assert "TOTP on" in stack.cli("mailbox", "mfa", "status", address).stdout


def test_a_form_post_without_the_csrf_token_changes_nothing(stack: RunningStack, page: Any) -> None:
    address, password = stack.new_mailbox()
    # The sign-in form too (login CSRF): no session is made.
    page.goto(ACCOUNT_URL + "signin", wait_until="domcontentloaded")
    page.get_by_label("Mail address").fill(address)
    page.get_by_label("Password").fill(password)
    assert post_without_token(page, "form", None) == 403
    page.goto(ACCOUNT_URL, wait_until="domcontentloaded")
    assert page.url.endswith("/account/signin")

    sign_in(page, address, password)
    for token in (None, "0" * 64):
        page.goto(ACCOUNT_URL, wait_until="domcontentloaded")
        page.get_by_label("Current password").fill(password)
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_label("New password again").fill(NEW_PASSWORD)
        assert post_without_token(page, "form[action='/account/password']", token) == 403
        assert "nothing was changed" in page.locator("[role=alert]").inner_text()
        page.goto(ACCOUNT_URL, wait_until="domcontentloaded")
        page.get_by_label(re.compile("Name of the new app password")).fill("phone")
        assert post_without_token(page, "form[action='/account/app-passwords']", token) == 403
    assert imap_login(stack, address, password)
    assert not imap_login(stack, address, NEW_PASSWORD)
    assert app_passwords(stack, address) == []


def test_another_users_app_password_cannot_be_removed(stack: RunningStack, page: Any) -> None:
    victim, _ = stack.new_mailbox()
    made = stack.cli("mailbox", "app-password", "add", victim, "victim-phone", "--json").stdout
    victims_password = json.loads(made)["password"]
    attacker, password = stack.new_mailbox()
    sign_in(page, attacker, password)
    page.get_by_label(re.compile("Name of the new app password")).fill("mine")
    page.get_by_role("button", name="Make an app password").click()
    page.wait_for_load_state("domcontentloaded")
    # The attack: the remove form of the attacker's own app password, its name replaced by
    # the victim's, and the victim's address added as a field of its own.
    form = page.locator("form[action='/account/app-passwords/remove']")
    form.locator("input[name=name]").evaluate("element => element.value = 'victim-phone'")
    form.evaluate(
        f"form => {{ const f = document.createElement('input'); f.type = 'hidden'; "
        f"f.name = 'address'; f.value = '{victim}'; form.appendChild(f); }}"
    )
    with page.expect_navigation() as navigation:
        form.locator("button[type=submit]").click()
    assert navigation.value.status == 400
    assert "no app password named victim-phone" in page.locator("[role=alert]").inner_text()
    assert app_passwords(stack, victim) == ["victim-phone"]
    assert imap_login(stack, victim, victims_password)
    assert app_passwords(stack, attacker) == ["mine"]
