"""Quota use and recent sign-ins (issue 16), as Dovecot records them in PostgreSQL through its
dict (quota_clone and last_login, migration 0013) and the admin service shows them: a user
receives mail of a known size and /account/ shows the use rising; an IMAP login from this
test shows in the user's recent sign-ins with protocol imap and this test's address, a
ManageSieve login as managesieve; another user's sign-ins never show; the administrator's
mailbox list and mailbox page and the REST API show the use; a webmail sign-in shows the
browser's address. Chromium signs in over HTTPS as a user would."""

from __future__ import annotations

import base64
import re
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import pytest

from mailstack.units import human_size
from tests.e2e.adminweb import ADMIN_URL, db, new_admin, sign_in
from tests.e2e.conftest import GATEWAY, PORTS, RunningStack
from tests.e2e.mail import send_inbound, unique_subject
from tests.e2e.test_account_web import ACCOUNT_URL
from tests.e2e.test_account_web import sign_in as account_sign_in
from tests.e2e.test_admin_api import api, new_token
from tests.e2e.test_admin_web import page
from tests.e2e.test_mfa_doors import imap_login
from tests.e2e.test_webmail import WEBMAIL, Browser, browser

pytestmark = pytest.mark.e2e
__all__ = ["browser", "page"]  # the Chromium fixtures of test_webmail and test_admin_web

BODY_BYTES = 300_000  # the known size of each test message's body
WRITE_WITHIN = 90  # seconds for a usage or sign-in write to show in the database
T = TypeVar("T")


def eventually(stack: RunningStack, what: str, probe: Callable[[], T | None]) -> T:
    """Poll until probe gives a value: Dovecot writes through its dict asynchronously, and
    after another module restarted the database its connection may take a while to come
    back (Dovecot retries with growing delays; a query in flight waits up to 60 s). On
    timeout the message carries Dovecot's dict and SQL log lines, to tell which."""
    started = time.monotonic()
    while True:
        found = probe()
        if found is not None:
            if time.monotonic() - started > 5:
                print(f"\n{what}: seen after {time.monotonic() - started:.1f} s")
            return found
        if time.monotonic() - started > WRITE_WITHIN:
            logs = stack.compose("logs", "--no-color", "--since", "10m", "dovecot", check=False)
            lines = logs.stdout.decode(errors="replace").splitlines()
            said = [line for line in lines if re.search(r"dict|sql", line)]
            raise AssertionError(
                f"{what}: not seen within {WRITE_WITHIN} s; Dovecot's dict and SQL lines:\n"
                + "\n".join(said[-30:])
            )
        time.sleep(0.3)


def recorded_bytes(stack: RunningStack, address: str) -> int | None:
    out = db(stack, "SELECT bytes FROM quota_usage WHERE username = :'a';", a=address).strip()
    return int(out) if out.isdigit() else None


def sign_in_rows(stack: RunningStack, address: str) -> list[tuple[str, str]]:
    out = db(
        stack,
        "SELECT service || ',' || remote FROM sign_ins WHERE username = :'a' ORDER BY 1;",
        a=address,
    )
    pairs = [line.strip().split(",", 1) for line in out.splitlines() if "," in line]
    return [(service, remote) for service, remote in pairs]


def receive(address: str) -> None:
    """One message of BODY_BYTES body from outside; the delivery is polled for by callers."""
    body = ("0123456789abcdef" * 4 + "\n") * (BODY_BYTES // 65)
    send_inbound([address], unique_subject("usage"), body)


def managesieve_login(stack: RunningStack, address: str, password: str) -> None:
    """Sign in over ManageSieve (4190): STARTTLS, then AUTHENTICATE PLAIN (RFC 5804)."""

    def until_ok(stream: Any) -> str:
        lines = []
        while True:
            line = stream.readline().decode()
            assert line, "ManageSieve closed the connection"
            lines.append(line)
            if line.startswith(("OK", "NO", "BYE")):
                assert line.startswith("OK"), "".join(lines)
                return "".join(lines)

    with socket.create_connection(("127.0.0.1", PORTS["managesieve"]), timeout=30) as raw:
        until_ok(raw.makefile("rb"))
        raw.sendall(b"STARTTLS\r\n")
        until_ok(raw.makefile("rb"))
        with stack.tls_context().wrap_socket(raw, server_hostname=None) as tls:
            assert isinstance(tls, ssl.SSLSocket)
            stream = tls.makefile("rb")
            until_ok(stream)  # the capabilities again, after TLS
            credentials = base64.b64encode(f"\0{address}\0{password}".encode()).decode()
            tls.sendall(f'AUTHENTICATE "PLAIN" "{credentials}"\r\n'.encode())
            until_ok(stream)
            tls.sendall(b"LOGOUT\r\n")


def account_usage_text(page: Any) -> str:
    page.goto(ACCOUNT_URL, wait_until="domcontentloaded")
    return str(page.locator("#usage").inner_text())


def test_received_mail_shows_as_rising_use_on_the_account_page_and_the_admin_pages(
    stack: RunningStack, page: Any
) -> None:
    address, password = stack.new_mailbox()
    account_sign_in(page, address, password)
    assert "not known yet" in account_usage_text(page)  # nothing changed in the mailbox yet

    sent = time.monotonic()
    receive(address)
    first = eventually(stack, "the first use", lambda: recorded_bytes(stack, address))
    print(f"\nuse recorded {time.monotonic() - sent:.2f} s after the message was sent")
    assert first >= BODY_BYTES
    receive(address)
    second = eventually(
        stack,
        "the use after a second message",
        lambda: used if (used := recorded_bytes(stack, address) or 0) > first else None,
    )
    assert second >= first + BODY_BYTES  # Dovecot's quota counts whole message sizes

    shown = account_usage_text(page)
    quota = int(db(stack, "SELECT quota_bytes FROM mailboxes WHERE address = :'a';", a=address))
    assert f"{human_size(second)} used of {human_size(quota)}" in shown, shown
    assert f"({round(100 * second / quota)}%)" in shown, shown
    assert "in 2 messages" in shown, shown

    # The administrator's list and the mailbox's page show the same use.
    admin = new_admin(stack)
    page.context.clear_cookies()
    sign_in(page, admin)
    page.goto(ADMIN_URL + "mailboxes", wait_until="domcontentloaded")
    row = page.locator("tr", has_text=address)
    assert human_size(second) in row.inner_text(), row.inner_text()
    page.goto(ADMIN_URL + "mailbox?address=" + quote(address), wait_until="domcontentloaded")
    detail = page.locator("#usage").inner_text()
    assert f"Used: {human_size(second)} of {human_size(quota)}" in detail, detail
    assert "in 2 messages" in detail, detail

    # And the REST API's list, exactly.
    status, listed = api(stack, "GET", "/api/v1/mailboxes", new_token(stack, "read")[1])
    assert status == 200, listed
    [entry] = [m for m in listed["mailboxes"] if m["address"] == address]
    assert (entry["used_bytes"], entry["messages"]) == (second, 2)


def test_imap_and_managesieve_sign_ins_show_to_their_user_alone(
    stack: RunningStack, page: Any
) -> None:
    user, password = stack.new_mailbox()
    other, other_password = stack.new_mailbox()
    assert imap_login(stack, user, password)
    managesieve_login(stack, other, other_password)
    assert imap_login(stack, other, other_password)

    eventually(stack, "the user's IMAP sign-in", lambda: sign_in_rows(stack, user) or None)
    eventually(
        stack,
        "the other's two sign-ins",
        lambda: r if len(r := sign_in_rows(stack, other)) == 2 else None,
    )
    assert sign_in_rows(stack, user) == [("imap", GATEWAY)]
    assert sign_in_rows(stack, other) == [("imap", GATEWAY), ("managesieve", GATEWAY)]

    account_sign_in(page, user, password)
    rows = [
        [cell.strip() for cell in row.split("\t")]
        for row in page.locator("#sign-ins tbody tr").all_inner_texts()
    ]
    # Only the user's own row: the other's ManageSieve sign-in (same address) never shows.
    assert [row[:2] for row in rows] == [["imap", GATEWAY]], rows
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows[0][2]), rows
    assert "managesieve" not in page.locator("#sign-ins").inner_text()

    # A second login updates the one row: one row per (protocol, address), the latest time.
    # (last_login's value has whole seconds: the stored one is set back a minute first.)
    db(stack, "UPDATE sign_ins SET last_seen = last_seen - 60 WHERE username = :'a';", a=user)
    before = int(db(stack, "SELECT last_seen FROM sign_ins WHERE username = :'a';", a=user))
    assert imap_login(stack, user, password)
    eventually(
        stack,
        "the later sign-in",
        lambda: (
            True
            if int(db(stack, "SELECT last_seen FROM sign_ins WHERE username = :'a';", a=user))
            > before
            else None
        ),
    )
    assert sign_in_rows(stack, user) == [("imap", GATEWAY)]


def test_a_webmail_sign_in_shows_the_browsers_address_not_the_webmails(
    stack: RunningStack, browser: Browser
) -> None:
    """Roundcube passes the browser's address (IMAP ID x-originating-ip), which Dovecot
    believes from the webmail alone: %{rip} in last_login_key is the browser's."""
    user, password = stack.new_mailbox()
    page = browser.page
    page.goto(WEBMAIL, wait_until="domcontentloaded")
    page.fill("#rcmloginuser", user)
    page.fill("#rcmloginpwd", password)
    page.click("#rcmloginsubmit")
    page.locator("#messagelist").wait_for(state="attached")  # signed in (an empty list)
    rows = eventually(stack, "the webmail's sign-in", lambda: sign_in_rows(stack, user) or None)
    webmail = set(stack.addresses("webmail").values())
    assert rows == [("imap", GATEWAY)], (rows, webmail)
    assert not webmail & {remote for _, remote in rows}


def as_dovecot(stack: RunningStack, sql: str, **variables: str) -> tuple[int, str]:
    """One statement as the role dovecot (SET ROLE from the superuser's session): its exit
    status and what psql said."""
    done = stack.compose(
        "exec", "-T", "--user", "postgres", "db", "psql", "--host=/run/postgresql",
        "--username=postgres", "--dbname=mail", "--no-psqlrc", "--tuples-only", "--quiet",
        "--set=ON_ERROR_STOP=1", *(f"--set={name}={value}" for name, value in variables.items()),
        stdin=f"SET ROLE dovecot;\n{sql}\n".encode(), check=False,
    )  # fmt: skip
    return done.returncode, (done.stdout + done.stderr).decode()


# What Dovecot 2.3.19's dict-sql sends (seen in the database's log), with the values as
# variables here.
UPSERT_SIGN_IN = (
    "INSERT INTO sign_ins (last_seen,service,remote,username) "
    "VALUES (extract(epoch FROM now())::bigint,'imap','192.0.2.9',:'a') "
    "ON CONFLICT (service,remote,username) DO UPDATE SET last_seen=extract(epoch FROM now())::bigint;"
)


def test_dovecots_role_may_upsert_but_never_read_change_otherwise_or_delete(
    stack: RunningStack,
) -> None:
    """A foothold in Dovecot's dict learns nothing from these tables and cannot empty them;
    and a sign-in prunes its mailbox's rows older than 90 days."""
    user, _ = stack.new_mailbox()
    db(
        stack,
        "INSERT INTO sign_ins VALUES (:'a', 'imap', '198.51.100.1', "
        "extract(epoch FROM now() - interval '91 days')::bigint);",
        a=user,
    )
    assert as_dovecot(stack, UPSERT_SIGN_IN, a=user)[0] == 0
    assert sign_in_rows(stack, user) == [("imap", "192.0.2.9")]  # the 91-day-old one pruned
    for refused in (
        "SELECT last_seen FROM sign_ins;",
        "SELECT bytes FROM quota_usage;",
        "DELETE FROM sign_ins;",
        "DELETE FROM quota_usage;",
        "UPDATE sign_ins SET remote = '203.0.113.1';",
        "TRUNCATE sign_ins;",
    ):
        status, said = as_dovecot(stack, refused)
        assert status != 0 and "permission denied" in said, (refused, said)
    assert sign_in_rows(stack, user) == [("imap", "192.0.2.9")]
