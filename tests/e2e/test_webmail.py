"""Webmail and client autoconfiguration, as users and their mail programs meet them.

A real Chromium (Debian's, driven by Playwright; no browser download) opens Roundcube over
HTTPS through the published port, trusting exactly the stack's key (SPKI pin), logs in,
reads a message sent over SMTP, replies (the reply is read back over IMAP), and logs out.
Thunderbird's autoconfig, Outlook's autodiscover and Apple's .mobileconfig are fetched as
those clients do and parsed.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import plistlib
import smtplib
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import sync_playwright

from tests.e2e.conftest import DOMAIN, GATEWAY, HOSTNAME, PORTS, PROJECT, RunningStack
from tests.e2e.mail import fetch_by_subject, message, unique_subject

CHROMIUM = "/usr/bin/chromium"
# Starts CHROMIUM in a network namespace of its own with only the HTTPS port relayed (see
# the file): immune to the host's network changes, and unable to reach anything else.
BROWSER = Path(__file__).with_name("chromium_netns.py")
WEBMAIL = f"https://{HOSTNAME}:{PORTS['https']}/"
# Roundcube's own page load may take a while on a busy 2-core host; far above the usual.
INBOX_LOAD_LIMIT_SECONDS = 15.0
# Submission, rspamd and the Sent copy behind one click; generous for a loaded host.
SEND_LIMIT_MS = 120_000
ROUNDCUBE_CAN_SEND = "() => window.rcmail && rcmail.commands.send && !rcmail.busy"


# --- helpers ---------------------------------------------------------------------------------


def spki_pin(cert_file: Path) -> str:
    """Chromium's --ignore-certificate-errors-spki-list value for the stack's certificate."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def https_request(
    stack: RunningStack,
    host: str,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTPS request to the front's published port, chain checked against the stack CA."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1", PORTS["https"], context=stack.tls_context(), timeout=30
    )
    try:
        connection.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def send_submission(
    stack: RunningStack, address: str, password: str, recipient: str, subject: str, body: str
) -> None:
    with smtplib.SMTP("127.0.0.1", PORTS["submission"], timeout=30) as smtp:
        smtp.starttls(context=stack.tls_context())
        smtp.login(address, password)
        smtp.send_message(message(address, recipient, subject, body))


def dovecot_log(stack: RunningStack) -> str:
    logs = stack.compose("logs", "--no-color", "dovecot", check=False)
    return logs.stdout.decode(errors="replace")


def container_memory_mib(service: str) -> float:
    """The service container's memory use now, as `docker stats` reports it."""
    name = f"{PROJECT}-{service}-1"
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{json .}}", name],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    usage = json.loads(out)["MemUsage"].split("/")[0].strip()
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / 1024**2}
    for unit, factor in units.items():
        if usage.endswith(unit):
            return float(usage.removesuffix(unit)) * factor
    raise AssertionError(f"unexpected docker stats figure {usage!r}")


# --- the browser -----------------------------------------------------------------------------


@dataclass
class Browser:
    context: Any
    page: Any
    csp_violations: list[str]


@pytest.fixture
def browser(stack: RunningStack, tmp_path: Path) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: run scripts/setup-host.sh --dev")
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # The hostname reaches the published loopback port; only the stack's own key is
        # trusted besides the system's CAs (no blanket "ignore certificate errors").
        f"--host-resolver-rules=MAP {HOSTNAME} 127.0.0.1",
        f"--ignore-certificate-errors-spki-list={spki_pin(stack.root / 'tls' / 'cert.pem')}",
    ]
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(BROWSER),
            env={**os.environ, "MAILSTACK_BROWSER_PORT": str(PORTS["https"])},
            headless=True,
            args=args,
            viewport={"width": 1280, "height": 800},
        )
        page = context.new_page()
        page.set_default_timeout(60_000)
        violations: list[str] = []
        page.on(
            "console",
            lambda entry: (
                violations.append(entry.text)
                if "Content Security Policy" in entry.text
                or "Content-Security-Policy" in entry.text
                else None
            ),
        )
        try:
            yield Browser(context, page, violations)
        finally:
            context.close()


def goto(page: Any, url: str) -> None:
    page.goto(url, wait_until="domcontentloaded")


# --- webmail ---------------------------------------------------------------------------------


def test_webmail_login_read_reply_logout(
    stack: RunningStack, browser: Browser, tmp_path: Path
) -> None:
    sender, sender_password = stack.new_mailbox()
    user, password = stack.new_mailbox()
    subject = unique_subject("webmail")
    send_submission(
        stack, sender, sender_password, user, subject, "Hello from SMTP, webmail user.\n"
    )
    fetch_by_subject(stack, user, password, subject)  # delivered before the browser looks
    memory_before = container_memory_mib("webmail")
    page = browser.page

    goto(page, WEBMAIL)
    page.fill("#rcmloginuser", user)
    page.fill("#rcmloginpwd", password)
    started = time.monotonic()
    page.click("#rcmloginsubmit")
    row = page.locator("#messagelist tr", has_text=subject)
    row.wait_for()
    inbox_seconds = time.monotonic() - started
    screenshot = tmp_path / "inbox.png"
    page.screenshot(path=str(screenshot))
    print(f"\ninbox screenshot: {screenshot}")
    print(f"inbox page load: {inbox_seconds:.2f} s from the login click to the message listed")
    assert inbox_seconds < INBOX_LOAD_LIMIT_SECONDS

    # Open the message: its text is shown in the message view.
    row.dblclick()
    page.wait_for_url("**_action=show**")
    assert "Hello from SMTP, webmail user." in page.locator("#messagebody").inner_text()

    # Reply: the reply goes out through submission and arrives in the sender's INBOX.
    reply_text = f"Webmail reply {uuid.uuid4().hex}"
    page.locator("a.reply:visible").first.click()
    page.wait_for_url("**_action=compose**")
    body = page.locator("#composebody")
    body.wait_for()
    body.press("Control+Home")
    body.type(reply_text + "\n")
    # A click before Roundcube's compose script has enabled "send" is silently ignored
    # (seen once on a loaded CI host): wait for the command, then for the page to leave.
    page.wait_for_function(ROUNDCUBE_CAN_SEND)
    page.locator("button.send:visible").first.click()
    try:
        page.wait_for_url(lambda url: "_action=compose" not in url, timeout=SEND_LIMIT_MS)
    except PlaywrightTimeoutError:
        shown = page.locator("#messagestack").inner_text()
        raise AssertionError(f"the reply was not sent; Roundcube shows: {shown!r}") from None
    answer = fetch_by_subject(stack, sender, sender_password, f"Re: {subject}")
    text = answer.get_body(preferencelist=("plain", "html"))
    assert text is not None and reply_text in text.get_content()
    assert user in str(answer["From"])

    # Filters and vacation (the managesieve plugin) reach Dovecot's ManageSieve.
    goto(page, WEBMAIL + "?_task=settings&_action=plugin.managesieve")
    page.locator("#filterslist").wait_for(state="attached")
    page.wait_for_load_state("networkidle")
    assert "Unable to connect" not in page.content()

    # Log out: the login form is back, and the mail view needs a login again. (Once the
    # page is quiet: a request still in flight could write the session back.)
    page.wait_for_load_state("networkidle")
    page.locator("a.logout:visible").first.click()
    page.locator("#rcmloginuser").wait_for()
    goto(page, WEBMAIL + "?_task=mail&_mbox=INBOX")
    page.locator("#rcmloginuser").wait_for()
    assert page.locator("#messagelist").count() == 0

    assert browser.csp_violations == []
    memory_after = container_memory_mib("webmail")
    print(
        f"webmail memory: {memory_before:.1f} MiB before, {memory_after:.1f} MiB after the session"
    )


def test_webmail_refuses_a_wrong_password_and_reports_the_browser_address(
    stack: RunningStack, browser: Browser
) -> None:
    user, password = stack.new_mailbox()
    page = browser.page

    goto(page, WEBMAIL)
    page.fill("#rcmloginuser", user)
    page.fill("#rcmloginpwd", "not-" + password)
    with page.expect_navigation():
        page.click("#rcmloginsubmit")
    page.locator("#rcmloginuser").wait_for()
    # The refused login's page says so (its message is in the page's own script).
    assert "Login failed" in page.content()
    assert page.locator("#rcmloginuser").is_visible()
    assert page.locator("#messagelist").count() == 0
    # Dovecot saw the browser's address (the host's clients arrive from the frontend
    # gateway), not the webmail container's: the failure counts toward that address's ban.
    deadline = time.monotonic() + 20
    while True:
        failed = [
            line
            for line in dovecot_log(stack).splitlines()
            if f"user=<{user}>" in line and "auth failed" in line
        ]
        if failed or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert failed, "Dovecot logged no failed login for the webmail user"
    assert all(f"rip={GATEWAY}" in line for line in failed), failed


def test_webmail_cookies_and_headers_are_hardened(stack: RunningStack) -> None:
    status, headers, body = https_request(stack, HOSTNAME, "/")
    assert status == 200
    assert b"rcmloginuser" in body
    cookie = headers["set-cookie"]
    for flag in ("secure", "httponly", "samesite=strict"):
        assert flag in cookie.lower(), cookie
    csp = headers["content-security-policy"]
    assert "frame-ancestors 'self'" in csp and "object-src 'none'" in csp
    # Nothing from another origin: every source is 'self' (or inline/data: for Roundcube).
    assert "*" not in csp and "http" not in csp
    assert headers["strict-transport-security"].startswith("max-age=")
    # Only index.php runs: other PHP files and the configuration are never served or run.
    status, _, body = https_request(stack, HOSTNAME, "/config/config.inc.php")
    assert b"db_dsnw" not in body and b"des_key" not in body
    status, _, installer = https_request(stack, HOSTNAME, "/installer/index.php")
    assert b"Installer" not in installer


# --- client autoconfiguration ----------------------------------------------------------------


def test_thunderbird_autoconfig_names_the_stack(stack: RunningStack) -> None:
    address = f"someone@{DOMAIN}"
    for host, path in (
        (f"autoconfig.{DOMAIN}", "/mail/config-v1.1.xml"),
        (HOSTNAME, f"/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress={address}"),
    ):
        status, headers, body = https_request(stack, host, path)
        assert status == 200, (host, path)
        assert headers["content-type"].startswith("application/xml")
        root = ET.fromstring(body)  # noqa: S314  # the stack's own answer, in a test
        provider = root.find("emailProvider")
        assert provider is not None and provider.get("id") == DOMAIN
        incoming = provider.find("incomingServer")
        assert incoming is not None and incoming.get("type") == "imap"
        assert incoming.findtext("hostname") == HOSTNAME
        assert incoming.findtext("port") == str(PORTS["imaps"])
        assert incoming.findtext("socketType") == "SSL"
        assert incoming.findtext("username") == "%EMAILADDRESS%"
        outgoing = {
            (server.findtext("port"), server.findtext("socketType"))
            for server in provider.findall("outgoingServer")
            if server.findtext("hostname") == HOSTNAME
        }
        assert outgoing == {
            (str(PORTS["submissions"]), "SSL"),
            (str(PORTS["submission"]), "STARTTLS"),
        }


AUTODISCOVER_REQUEST = """<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>{address}</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>
"""
RESPONSE = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


def test_outlook_autodiscover_answers_for_the_address_asked(stack: RunningStack) -> None:
    address = f"Alice.Example@{DOMAIN}"
    for host in (f"autodiscover.{DOMAIN}", HOSTNAME):
        status, _, body = https_request(
            stack,
            host,
            "/autodiscover/autodiscover.xml",
            method="POST",
            body=AUTODISCOVER_REQUEST.format(address=address).encode(),
            headers={"Content-Type": "text/xml"},
        )
        assert status == 200
        response = ET.fromstring(body)  # noqa: S314  # the stack's own answer, in a test
        account = response.find(f"{RESPONSE}Response/{RESPONSE}Account")
        assert account is not None
        assert account.findtext(f"{RESPONSE}AccountType") == "email"
        protocols = {
            protocol.findtext(f"{RESPONSE}Type"): protocol
            for protocol in account.findall(f"{RESPONSE}Protocol")
        }
        # POP3 too: features.pop3 is on in the session stack.
        assert set(protocols) == {"IMAP", "POP3", "SMTP"}
        for kind, port in (
            ("IMAP", PORTS["imaps"]),
            ("POP3", PORTS["pop3s"]),
            ("SMTP", PORTS["submissions"]),
        ):
            protocol = protocols[kind]
            assert protocol.findtext(f"{RESPONSE}Server") == HOSTNAME
            assert protocol.findtext(f"{RESPONSE}Port") == str(port)
            assert protocol.findtext(f"{RESPONSE}Encryption") == "SSL"
            assert protocol.findtext(f"{RESPONSE}LoginName") == address

    # Anything but an address is refused, and nothing from the request is echoed into XML.
    status, _, body = https_request(
        stack,
        HOSTNAME,
        "/autodiscover/autodiscover.xml",
        method="POST",
        body=AUTODISCOVER_REQUEST.format(address='x"/><Server>evil</Server>@x').encode(),
    )
    assert b"<ErrorCode>600</ErrorCode>" in body and b"evil" not in body
    status, _, _ = https_request(stack, HOSTNAME, "/autodiscover/autodiscover.xml")
    assert status == 405


def test_apple_mobileconfig_is_a_profile_for_the_user(stack: RunningStack) -> None:
    address = f"bob@{DOMAIN}"
    status, headers, body = https_request(stack, HOSTNAME, f"/mobileconfig?email={address}")
    assert status == 200
    assert headers["content-type"] == "application/x-apple-aspen-config"
    assert "attachment" in headers["content-disposition"]
    profile = plistlib.loads(body)
    assert profile["PayloadType"] == "Configuration"
    payloads = {payload["PayloadType"]: payload for payload in profile["PayloadContent"]}
    # The mail account, and calendars and contacts (features.dav, tests/e2e/test_dav.py).
    assert sorted(payloads) == [
        "com.apple.caldav.account", "com.apple.carddav.account", "com.apple.mail.managed"
    ]  # fmt: skip
    account = payloads["com.apple.mail.managed"]
    assert account["EmailAddress"] == address
    assert account["EmailAccountType"] == "EmailTypeIMAP"
    assert account["IncomingMailServerHostName"] == HOSTNAME
    assert account["IncomingMailServerPortNumber"] == PORTS["imaps"]
    assert account["IncomingMailServerUseSSL"] is True
    assert account["IncomingMailServerUsername"] == address
    assert account["OutgoingMailServerHostName"] == HOSTNAME
    assert account["OutgoingMailServerPortNumber"] == PORTS["submissions"]
    assert account["OutgoingMailServerUseSSL"] is True
    assert account["OutgoingMailServerUsername"] == address
    # Installing it again replaces the account rather than adding a second one.
    _, _, again = https_request(stack, HOSTNAME, f"/mobileconfig?email={address}")
    assert plistlib.loads(again)["PayloadUUID"] == profile["PayloadUUID"]

    status, _, body = https_request(stack, HOSTNAME, "/mobileconfig?email=%3Cscript%3E@x")
    assert status == 400 and b"<script>" not in body
