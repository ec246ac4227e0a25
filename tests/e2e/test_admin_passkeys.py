"""Passkeys in the admin service, in Debian's Chromium with its virtual authenticator (a
WebAuthn authenticator in the browser, driven over the DevTools protocol): a signed-in
administrator registers a passkey on the Passkeys page, and at the next sign-in the passkey
passes the second-factor step instead of a code. The server's checks are python3-fido2's
(Debian's) in the admin image, against the stack's hostname as the relying party."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.adminweb import ADMIN_URL, chromium, db, new_admin, sign_in, submit_password
from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.e2e


@pytest.fixture
def page(stack: RunningStack, tmp_path: Path) -> Iterator[Any]:
    with chromium(stack, tmp_path / "chromium-profile") as browser_page:
        yield browser_page


def virtual_authenticator(page: Any) -> tuple[Any, str]:
    """A platform authenticator that verifies its user and answers without a touch."""
    devtools = page.context.new_cdp_session(page)
    devtools.send("WebAuthn.enable", {"enableUI": False})
    added = devtools.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return devtools, added["authenticatorId"]


def ceremony(page: Any, button: str, landing: str) -> None:
    """Press the page's passkey button and wait for the form it sends; on failure, say what
    the page's script reported."""
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.get_by_role("button", name=button).click()
    try:
        page.wait_for_url(landing)
    except PlaywrightTimeout:
        said = page.locator("#passkey-status").all_inner_texts()
        raise AssertionError(f"the ceremony did not finish: {said} {console}") from None


def status_line(page: Any) -> str:
    return str(page.locator("[role=alert], [role=status]").first.inner_text())


def test_a_passkey_registered_with_chromiums_virtual_authenticator_signs_an_administrator_in(
    stack: RunningStack, page: Any
) -> None:
    admin = new_admin(stack)
    devtools, authenticator = virtual_authenticator(page)
    sign_in(page, admin)  # password and TOTP enrolment: a passkey comes on top of the app

    page.goto(ADMIN_URL + "passkeys", wait_until="domcontentloaded")
    page.get_by_label(re.compile("^Name")).fill("laptop")
    page.get_by_role("button", name="Continue").click()  # the password was typed just now
    page.wait_for_load_state("domcontentloaded")
    ceremony(page, "Make the passkey", ADMIN_URL + "passkeys/finish")
    assert status_line(page) == "Added the passkey laptop."
    assert page.get_by_role("cell", name="laptop", exact=True).is_visible()
    made = devtools.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
    assert len(made["credentials"]) == 1

    with page.expect_navigation(wait_until="domcontentloaded"):  # before the next goto
        page.get_by_role("button", name="Sign out").click()
    submit_password(page, admin)
    assert page.url.endswith("/admin/code"), page.url
    page.get_by_role("link", name="Use a passkey instead").click()
    page.wait_for_load_state("domcontentloaded")
    ceremony(page, "Use my passkey", ADMIN_URL)
    assert page.get_by_role("heading", name="Dashboard").is_visible()

    used = db(
        stack,
        "SELECT name, last_used IS NOT NULL FROM passkeys WHERE admin = :'admin';",
        admin=admin.name,
    )
    assert used.split() == ["laptop", "|", "t"], used
    audit = json.loads(
        stack.cli("audit", "list", "--actor", f"admin:{admin.name}", "--json").stdout
    )
    assert any(entry["action"] == "passkey.add" for entry in audit), audit


def test_adding_a_passkey_after_five_minutes_asks_for_the_password_again(
    stack: RunningStack, page: Any
) -> None:
    admin = new_admin(stack)
    virtual_authenticator(page)
    sign_in(page, admin)
    db(
        stack,
        "UPDATE web_sessions SET reauth_at = now() - interval '6 minutes' WHERE admin = :'admin';",
        admin=admin.name,
    )
    page.goto(ADMIN_URL + "passkeys", wait_until="domcontentloaded")
    page.get_by_label(re.compile("^Name")).fill("key")
    password = page.get_by_label(re.compile("Your password"))
    assert password.is_visible()
    password.fill("not the password")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_load_state("domcontentloaded")
    assert status_line(page) == "The name or the password is wrong."
    assert (
        db(stack, "SELECT count(*) FROM passkeys WHERE admin = :'admin';", admin=admin.name).strip()
        == "0"
    )
    page.get_by_label(re.compile("Your password")).fill(admin.password)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_load_state("domcontentloaded")
    assert page.get_by_role("button", name="Make the passkey").is_visible()
