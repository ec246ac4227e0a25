"""The second factor at every door (issue 16): a mailbox with a confirmed TOTP, on the
shared stack. IMAP, POP3, SMTP AUTH (587) and ManageSieve refuse its account password and accept
an app password; the webmail (Debian's Chromium, driven by Playwright) refuses the password
alone and opens only after a code (from pyotp, an independent TOTP), never the same code
twice; failed codes reach the bans service; the admin service's internal endpoint answers
nobody but the webmail. A mailbox without a second factor is unaffected, and disabling the
factor restores password logins. Everything it enrols is disabled again at the end.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import json
import poplib
import re
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pyotp
import pytest

from mailstack.adapters.compose import Compose
from mailstack.errors import UsageError
from mailstack.identity import mfa, totp
from mailstack.identity.mfa import Owner
from mailstack.stack.secrets import SECRETS_DIR
from mailstack.stack.stackdir import Stack
from tests.e2e.conftest import HOSTNAME, PORTS, RunningStack
from tests.e2e.test_webmail import WEBMAIL, Browser, browser, goto, https_request

pytestmark = pytest.mark.e2e
__all__ = ["browser"]  # the Chromium fixture of test_webmail, used here too

# Not exempt from bans (the gateway is): where the webmail says a guessing browser is.
GUESSER = "192.0.2.77"


@dataclass(frozen=True)
class MfaUser:
    address: str
    password: str
    secret: str
    app_password: str
    recovery_codes: tuple[str, ...]
    owner: Owner


@pytest.fixture(scope="module")
def db(stack: RunningStack) -> Compose:
    return Stack.load(stack.root).compose


def _enrol(stack: RunningStack) -> MfaUser:
    """A new mailbox with a second factor, set up as an operator would (`mailbox mfa`), and
    an app password (`mailbox app-password add`)."""
    address, password = stack.new_mailbox()
    enrolment = json.loads(stack.cli("mailbox", "mfa", "enrol", address, "--json").stdout)
    code = pyotp.TOTP(enrolment["secret"]).now()
    shown = json.loads(stack.cli("mailbox", "mfa", "confirm", address, code, "--json").stdout)
    created = stack.cli("mailbox", "app-password", "add", address, "phone", "--json")
    app_password = json.loads(created.stdout)["password"]
    return MfaUser(
        address,
        password,
        enrolment["secret"],
        app_password,
        tuple(shown["codes"]),
        Owner.mailbox(address),
    )


@pytest.fixture(scope="module")
def user(stack: RunningStack, db: Compose) -> Iterator[MfaUser]:
    enrolled = _enrol(stack)
    try:
        yield enrolled
    finally:
        with contextlib.suppress(UsageError):  # a test disabled it already
            mfa.disable(db, enrolled.owner)


# --- clients -------------------------------------------------------------------------------


def imap_login(stack: RunningStack, address: str, password: str) -> bool:
    with imaplib.IMAP4_SSL("127.0.0.1", PORTS["imaps"], ssl_context=stack.tls_context()) as imap:
        try:
            imap.login(address, password)
        except imaplib.IMAP4.error:
            return False
        imap.logout()
        return True


def pop3_login(stack: RunningStack, address: str, password: str) -> bool:
    """POP3 on 995 (features.pop3 is on in the session stack)."""
    pop = poplib.POP3_SSL("127.0.0.1", PORTS["pop3s"], context=stack.tls_context(), timeout=30)
    try:
        pop.user(address)
        pop.pass_(password)
    except poplib.error_proto:
        return False
    finally:
        pop.close()
    return True


def smtp_login(stack: RunningStack, address: str, password: str) -> bool:
    with smtplib.SMTP("127.0.0.1", PORTS["submission"], timeout=30) as smtp:
        smtp.starttls(context=stack.tls_context())
        try:
            smtp.login(address, password)
        except smtplib.SMTPAuthenticationError:
            return False
        return True


def _sieve_response(reader: socket.socket | ssl.SSLSocket) -> str:
    """Lines up to the first OK, NO or BYE (ManageSieve, RFC 5804)."""
    data = b""
    while not re.search(rb"(^|\r\n)(OK|NO|BYE)\b[^\r\n]*\r\n$", data):
        chunk = reader.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def sieve_login(stack: RunningStack, address: str, password: str) -> bool:
    """STARTTLS, then AUTHENTICATE PLAIN on ManageSieve; True when it answers OK."""
    with socket.create_connection(("127.0.0.1", PORTS["managesieve"]), timeout=30) as plain:
        assert "OK" in _sieve_response(plain)
        plain.sendall(b"STARTTLS\r\n")
        assert _sieve_response(plain).startswith("OK")
        with stack.tls_context().wrap_socket(plain, server_hostname=HOSTNAME) as tls:
            _sieve_response(tls)  # the capabilities again, under TLS
            token = base64.b64encode(f"\0{address}\0{password}".encode()).decode()
            tls.sendall(f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode())
            answer = _sieve_response(tls)
            tls.sendall(b"LOGOUT\r\n")
            return answer.startswith("OK")


# --- the mail protocols ----------------------------------------------------------------------


def test_imap_refuses_the_account_password_of_a_user_with_a_second_factor(
    stack: RunningStack, user: MfaUser
) -> None:
    assert not imap_login(stack, user.address, user.password)


def test_imap_accepts_an_app_password(stack: RunningStack, user: MfaUser) -> None:
    assert imap_login(stack, user.address, user.app_password)


def test_smtp_auth_refuses_the_account_password_of_a_user_with_a_second_factor(
    stack: RunningStack, user: MfaUser
) -> None:
    assert not smtp_login(stack, user.address, user.password)


def test_smtp_auth_accepts_an_app_password(stack: RunningStack, user: MfaUser) -> None:
    assert smtp_login(stack, user.address, user.app_password)


def test_managesieve_refuses_the_account_password_of_a_user_with_a_second_factor(
    stack: RunningStack, user: MfaUser
) -> None:
    assert not sieve_login(stack, user.address, user.password)


def test_managesieve_accepts_an_app_password(stack: RunningStack, user: MfaUser) -> None:
    assert sieve_login(stack, user.address, user.app_password)


def test_pop3_refuses_the_account_password_of_a_user_with_a_second_factor(
    stack: RunningStack, user: MfaUser
) -> None:
    assert not pop3_login(stack, user.address, user.password)


def test_pop3_accepts_an_app_password(stack: RunningStack, user: MfaUser) -> None:
    assert pop3_login(stack, user.address, user.app_password)


def test_a_user_without_a_second_factor_still_logs_in_to_imap_with_the_password(
    stack: RunningStack,
) -> None:
    address, password = stack.new_mailbox()
    assert imap_login(stack, address, password)
    assert smtp_login(stack, address, password)
    assert sieve_login(stack, address, password)


def test_a_client_claiming_the_webmails_address_is_still_refused(
    stack: RunningStack, user: MfaUser
) -> None:
    # IMAP ID x-originating-ip is believed only from the webmail, and even then changes
    # %{rip}, not the connecting address Dovecot's exception looks at (%{real_rip}).
    claimed = stack.addresses("webmail")["backend"]
    with imaplib.IMAP4_SSL("127.0.0.1", PORTS["imaps"], ssl_context=stack.tls_context()) as imap:
        imap.xatom("ID", f'("x-originating-ip" "{claimed}")')
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(user.address, user.password)


SMTP_FROM_WEBMAIL = r"""
$s = stream_socket_client("tcp://postfix:587", $errno, $error, 20);
function answer($s) { $all = ""; while (($line = fgets($s)) !== false) {
    $all .= $line; if (strlen($line) > 3 && $line[3] === " ") break; } return $all; }
answer($s); fwrite($s, "EHLO webmail\r\n"); answer($s);
fwrite($s, "STARTTLS\r\n"); answer($s);
stream_context_set_option($s, "ssl", "verify_peer", false);
stream_context_set_option($s, "ssl", "verify_peer_name", false);
stream_socket_enable_crypto($s, true, STREAM_CRYPTO_METHOD_TLS_CLIENT);
fwrite($s, "EHLO webmail\r\n"); answer($s);
fwrite($s, "AUTH PLAIN " . base64_encode("\0" . getenv("U") . "\0" . getenv("P")) . "\r\n");
echo answer($s);
"""


def test_the_webmail_still_sends_with_the_account_password(
    stack: RunningStack, user: MfaUser
) -> None:
    # Roundcube sends as the user with the account password (smtp_pass %p): Postfix hands
    # Dovecot the webmail's own address, which the exception admits.
    result = stack.compose(
        "exec", "-T", "-u", "www-data", "-e", f"U={user.address}", "-e", f"P={user.password}",
        "webmail", "php", "-r", SMTP_FROM_WEBMAIL, check=False,
    )  # fmt: skip
    assert result.stdout.decode().startswith("235"), result.stdout + result.stderr


# --- the webmail ---------------------------------------------------------------------------


FETCH = """async (url) => {
    const answer = await fetch(url, {credentials: "same-origin"});
    return [answer.status, await answer.text()];
}"""


def _sign_in(browser: Browser, user: MfaUser) -> None:
    page = browser.page
    goto(page, WEBMAIL)
    page.fill("#rcmloginuser", user.address)
    page.fill("#rcmloginpwd", user.password)
    page.click("#rcmloginsubmit")
    page.locator("#mailstack-mfa-code").wait_for()


def _give_code(browser: Browser, code: str) -> None:
    page = browser.page
    page.fill("#mailstack-mfa-code", code)
    with page.expect_navigation():
        page.click("#mailstack-mfa-submit")


def test_webmail_refuses_the_password_alone(
    stack: RunningStack, user: MfaUser, browser: Browser
) -> None:
    _sign_in(browser, user)  # the password was right: Dovecot let the webmail in
    page = browser.page
    assert page.locator("#messagelist").count() == 0
    # Nothing behind the gate answers: the mail view, a folder list call, the settings.
    goto(page, WEBMAIL + "?_task=mail&_mbox=INBOX")
    assert page.locator("#mailstack-mfa-code").count() == 1
    assert page.locator("#messagelist").count() == 0
    for query in (
        "?_task=mail&_action=list&_mbox=INBOX&_remote=1",
        "?_task=mail&_action=getunread&_remote=1",
        "?_task=settings&_action=plugin.managesieve",
    ):
        # Fetched by the page itself: its cookies, its origin, as Roundcube's scripts would.
        status, body = page.evaluate(FETCH, WEBMAIL + query)
        assert status in (200, 401), query
        for shown in ("INBOX", "messagelist", "filterslist"):
            assert shown not in body, query
    goto(page, WEBMAIL + "?_task=settings")
    assert page.locator("#mailstack-mfa-code").count() == 1


def test_webmail_accepts_password_and_code_and_never_the_same_code_twice(
    stack: RunningStack, user: MfaUser, browser: Browser
) -> None:
    # The next step's code: the confirmation spent this one (a step is never used twice),
    # and one step of drift is allowed.
    code = pyotp.TOTP(user.secret).at(time.time() + totp.STEP_SECONDS)
    _sign_in(browser, user)
    _give_code(browser, code)
    page = browser.page
    page.locator("#messagelist").wait_for(state="attached")
    assert page.locator("#mailstack-mfa-code").count() == 0

    # The same code in another sign-in (a replay) is refused; the session stays closed.
    # (A new session: the browser forgets its cookies, as another browser would have none.)
    page.wait_for_load_state("networkidle")
    browser.context.clear_cookies()
    _sign_in(browser, user)
    _give_code(browser, code)
    assert "not accepted" in page.locator("#mailstack-mfa-message").inner_text()
    assert page.locator("#messagelist").count() == 0


def test_webmail_accepts_a_recovery_code_once(
    stack: RunningStack, user: MfaUser, browser: Browser, db: Compose
) -> None:
    recovery = user.recovery_codes[0]
    _sign_in(browser, user)
    _give_code(browser, recovery)
    page = browser.page
    page.locator("#messagelist").wait_for(state="attached")
    assert mfa.status(db, user.owner).recovery_codes_left == len(user.recovery_codes) - 1


def _wrong_code(secret: str) -> str:
    """Six digits that no step of the accepted window gives."""
    now = time.time()
    valid = {pyotp.TOTP(secret).at(now + offset) for offset in (-60, -30, 0, 30, 60)}
    return next(code for code in ("000000", "111111", "222222") if code not in valid)


def test_webmail_closes_the_session_after_five_wrong_codes(
    stack: RunningStack, user: MfaUser, browser: Browser
) -> None:
    _sign_in(browser, user)
    page = browser.page
    wrong = _wrong_code(user.secret)
    for _ in range(4):
        _give_code(browser, wrong)
        assert "not accepted" in page.locator("#mailstack-mfa-message").inner_text()
    _give_code(browser, wrong)
    assert "signed out" in page.locator("#mailstack-mfa-message").inner_text()
    # The session is gone: the next page is Roundcube's login form, not the code form.
    goto(page, WEBMAIL + "?_task=mail&_mbox=INBOX")
    page.locator("#rcmloginuser").wait_for()
    assert page.locator("#mailstack-mfa-code").count() == 0


def test_with_mfa_required_a_user_without_a_second_factor_is_told_to_enrol(
    stack: RunningStack, browser: Browser
) -> None:
    # policy.mfa: required renders this one setting; the operator's override point sets it
    # for this test alone (Roundcube reads it with every request), so the shared stack is
    # not re-rendered.
    override = stack.root / "overrides" / "webmail" / "zz-test-mfa-required.inc.php"
    override.write_text("<?php\n$config['mailstack_mfa_required'] = true;\n")
    override.chmod(0o644)
    try:
        address, password = stack.new_mailbox()
        page = browser.page
        goto(page, WEBMAIL)
        page.fill("#rcmloginuser", address)
        page.fill("#rcmloginpwd", password)
        page.click("#rcmloginsubmit")
        message = page.locator("#mailstack-mfa-message")
        message.wait_for()
        assert "needs a second factor" in message.inner_text()
        assert page.locator("#mailstack-mfa-code").count() == 0
        goto(page, WEBMAIL + "?_task=mail&_mbox=INBOX")
        assert page.locator("#messagelist").count() == 0
        assert "needs a second factor" in page.content()
    finally:
        override.unlink()


# --- the internal endpoint -----------------------------------------------------------------


def _admin_address(stack: RunningStack) -> str:
    return stack.addresses("admin")["frontend"]


def _ask_from_webmail(
    stack: RunningStack, what: str, body: dict[str, str], *, with_key: bool = True
) -> tuple[int, dict[str, object]]:
    """The internal endpoint asked from inside the webmail container (its PHP, its key)."""
    php = (
        '$c = require "/run/mailstack/webmail/secrets.inc.php";'
        "$key = $config['mailstack_mfa_key'] ?? '';"
        "$h = \"Content-Type: application/json\\r\\n\" . (getenv('WITH_KEY') ? \"X-Mailstack-Key: $key\\r\\n\" : '');"
        "$ctx = stream_context_create(['http' => ['method' => 'POST', 'header' => $h,"
        " 'content' => getenv('BODY'), 'timeout' => 40, 'ignore_errors' => true]]);"
        "$t = microtime(true); $r = file_get_contents(getenv('URL'), false, $ctx);"
        "$ms = round((microtime(true) - $t) * 1000, 1);"
        'echo $http_response_header[0], "\\n", $ms, "\\n", $r;'
    )
    url = f"http://{_admin_address(stack)}:8080/internal/v1/mfa/{what}"
    env = ["-e", f"URL={url}", "-e", f"BODY={json.dumps(body)}"]
    if with_key:
        env += ["-e", "WITH_KEY=1"]
    result = stack.compose(
        "exec", "-T", "-u", "www-data", *env, "webmail", "php", "-r", php, check=False
    )
    output = result.stdout.decode()
    assert result.returncode == 0, output + result.stderr.decode()
    status_line, milliseconds, reply = output.split("\n", 2)
    print(f"internal {what}: {status_line.split()[1]} in {milliseconds} ms (inside the webmail)")
    return int(status_line.split()[1]), json.loads(reply)


def test_failed_codes_are_counted_by_the_bans_service(stack: RunningStack, user: MfaUser) -> None:
    try:
        for attempt in range(2):
            status, reply = _ask_from_webmail(
                stack,
                "verify",
                {"address": user.address, "code": f"00000{attempt}", "client": GUESSER},
            )
            assert status == 200 and reply["accepted"] is False, reply
        shown = json.loads(stack.cli("security", "bans", "--json").stdout)
        delayed = {entry["address"]: entry for entry in shown["delayed"]}
        assert delayed[GUESSER]["failures"] == 2
        # bansd's own list says which door failed (the CLI shows counts and delays only).
        listed = json.loads(stack.compose("exec", "-T", "bans", "bansd", "list").stdout)
        [entry] = [item for item in listed["delayed"] if item["address"] == GUESSER]
        assert entry["protocols"] == ["webmail-mfa"]
        assert delayed[GUESSER]["delay"] >= 1
    finally:
        stack.cli("security", "bans", "--clear", GUESSER)


def test_the_internal_endpoint_answers_only_the_webmail_with_its_key(
    stack: RunningStack, user: MfaUser
) -> None:
    question = {"address": user.address}
    # The webmail with its key: the answer.
    status, reply = _ask_from_webmail(stack, "status", question)
    assert (status, reply["second_factor"]) == (200, True)
    # The webmail's address without the key: refused.
    status, reply = _ask_from_webmail(stack, "status", question, with_key=False)
    assert status == 403
    # The host (the frontend gateway) with the right key: refused, it is not the webmail.
    shared_key = (stack.root / SECRETS_DIR / "webmail_mfa_key").read_text().strip()
    curl = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
         "-H", "Content-Type: application/json", "-H", f"X-Mailstack-Key: {shared_key}",
         "--data", json.dumps(question),
         f"http://{_admin_address(stack)}:8080/internal/v1/mfa/status"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert curl.stdout == "403", curl
    # Not in the API's published document.
    status, _, document = https_request(stack, HOSTNAME, "/api/v1/openapi.json")
    assert status == 200 and b"/internal" not in document
    # Through the front: the front proxies /api/v1/ alone, so this never reaches the admin.
    for path in ("/internal/v1/mfa/status", "/api/v1/../internal/v1/mfa/status"):
        status, _, body = https_request(
            stack,
            HOSTNAME,
            path,
            method="POST",
            body=json.dumps(question).encode(),
            headers={"Content-Type": "application/json", "X-Mailstack-Key": shared_key},
        )
        assert b"second_factor" not in body, (path, status)


# --- disabling -----------------------------------------------------------------------------


def test_disabling_the_factor_restores_password_logins(stack: RunningStack) -> None:
    other = _enrol(stack)
    assert not imap_login(stack, other.address, other.password)
    status = stack.cli("mailbox", "mfa", "status", other.address).stdout
    assert "TOTP on, 10 recovery code(s) left" in status
    stack.cli("mailbox", "mfa", "disable", other.address)
    assert imap_login(stack, other.address, other.password)
    assert smtp_login(stack, other.address, other.password)
    assert sieve_login(stack, other.address, other.password)
