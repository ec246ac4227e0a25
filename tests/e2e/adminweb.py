"""What the web admin's end-to-end modules share (test_admin_web.py,
test_admin_web_directory.py): Debian's Chromium driven by Playwright (no browser download),
trusting exactly the stack's key; administrators made with `mailstack admin add` and signed
in with password and TOTP (codes from pyotp, an independent implementation); the Mailboxes
page's add form; SQL as the database's superuser."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import sync_playwright

from tests.e2e.conftest import HOSTNAME, PORTS, RunningStack
from tests.e2e.test_webmail import BROWSER, CHROMIUM, spki_pin

ADMIN_URL = f"https://{HOSTNAME}:{PORTS['https']}/admin/"
PASSWORD = "Web-admin 42 sign-in"  # test accounts
MAILBOX_PASSWORD = "Web-created 42 mailbox"


@contextmanager
def chromium(stack: RunningStack, profile: Path) -> Iterator[Any]:
    """A fresh Chromium page (no cookies) that trusts exactly the stack's current key."""
    with sync_playwright() as playwright:
        page = launch(playwright, stack, profile)
        try:
            yield page
        finally:
            page.context.close()


def launch(playwright: Any, stack: RunningStack, profile: Path) -> Any:
    """A page of a new Chromium trusting exactly the stack's current key (a new domain's key
    job renews the certificate: launch another after it); the caller closes its context."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: run scripts/setup-host.sh --dev")
    args = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--host-resolver-rules=MAP {HOSTNAME} 127.0.0.1",
        f"--ignore-certificate-errors-spki-list={spki_pin(stack.root / 'tls' / 'cert.pem')}",
    ]  # fmt: skip
    context = playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(BROWSER),
        env={**os.environ, "MAILSTACK_BROWSER_PORT": str(PORTS["https"])},
        headless=True,
        args=args,
        viewport={"width": 390, "height": 844},  # a phone
    )
    page = context.new_page()
    page.set_default_timeout(60_000)
    return page


@dataclass
class Admin:
    """An administrator made with `mailstack admin add`, and what the test learnt of it."""

    name: str
    password: str
    secret: str | None = None  # the TOTP secret, once enrolled (read from the page)
    last_step: int = 0  # the last TOTP step used: the server never takes it again
    recovery_codes: list[str] = field(default_factory=list)

    def code(self) -> str:
        """A code of a step not used yet (waits for the next step if needed)."""
        assert self.secret is not None
        while int(time.time() // 30) <= self.last_step:
            time.sleep(0.5)
        self.last_step = int(time.time() // 30)
        return pyotp.TOTP(self.secret).now()


def new_admin(stack: RunningStack, *options: str) -> Admin:
    name = f"web-{uuid.uuid4().hex[:8]}"
    stack.cli("admin", "add", name, *options, "--password-stdin", stdin=PASSWORD + "\n")
    return Admin(name, PASSWORD)


def submit_password(page: Any, admin: Admin) -> None:
    page.goto(ADMIN_URL + "signin", wait_until="domcontentloaded")
    page.get_by_label("Name").fill(admin.name)
    page.get_by_label("Password").fill(admin.password)
    with page.expect_navigation(wait_until="domcontentloaded"):
        page.get_by_role("button", name="Sign in").click()


def sign_in(page: Any, admin: Admin) -> None:
    """The whole sign-in: password, then enrolment (first time) or the code."""
    submit_password(page, admin)
    if page.url.endswith("/admin/enrol"):
        secret = page.locator("#secret").inner_text().strip()
        assert re.fullmatch(r"[A-Z2-7]{32}", secret), secret
        assert page.locator("figure.qr svg").count() == 1  # the QR code, inline SVG
        admin.secret = secret
        page.get_by_label("Code from the app").fill(admin.code())
        page.get_by_role("button", name="Confirm").click()
        page.wait_for_load_state("domcontentloaded")
        admin.recovery_codes = [
            text.strip() for text in page.locator("#recovery-codes code").all_inner_texts()
        ]
        assert len(admin.recovery_codes) == 10
        page.get_by_role("link", name="Continue to the admin").click()
    else:
        assert page.url.endswith("/admin/code"), page.url
        page.get_by_label(re.compile("Code from your authenticator app")).fill(admin.code())
        page.get_by_role("button", name="Continue").click()
    page.wait_for_load_state("domcontentloaded")
    assert page.url.endswith("/admin/"), page.url
    assert page.get_by_role("heading", name="Dashboard").is_visible()


def add_mailbox_in_form(page: Any, address: str, password: str = MAILBOX_PASSWORD) -> str:
    """Fill and send the "add mailbox" form; the alert or status line it answers with."""
    page.goto(ADMIN_URL + "mailboxes", wait_until="domcontentloaded")
    page.get_by_label("Address").fill(address)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Add mailbox").click()
    page.wait_for_load_state("domcontentloaded")
    return str(page.locator("[role=alert], [role=status]").first.inner_text())


def mailbox_listed(stack: RunningStack, address: str) -> bool:
    return address in stack.cli("mailbox", "list").stdout


def db(stack: RunningStack, sql: str, **variables: str) -> str:
    """Run SQL as the database's superuser; values as psql variables."""
    return stack.compose(
        "exec", "-T", "--user", "postgres", "db", "psql", "--host=/run/postgresql",
        "--username=postgres", "--dbname=mail", "--no-psqlrc", "--tuples-only", "--quiet",
        "--set=ON_ERROR_STOP=1", *(f"--set={name}={value}" for name, value in variables.items()),
        stdin=sql.encode(),
    ).stdout.decode()  # fmt: skip
