"""The webmail's second factor (issue 16), free of any web framework: what the admin
service answers on its internal endpoints (compose/admin/internal.py), which only the
webmail's plugin (compose/webmail/mailstack_mfa) calls.

After the account password has opened IMAP, the plugin asks `status` whether the mailbox has
a confirmed second factor; if so it shows a code form and opens the session only when
`verify` accepts a code. The code is checked by mailstack.identity.mfa (no second TOTP in
PHP), so a code is never accepted twice, and a recovery code works too. Every attempt goes
through the bans service first, with the browser's address, and is reported after: failed
codes delay and then ban that address like failed passwords.

Who may ask: only a request from the webmail container's fixed address, with no
X-Forwarded-For (the front sets one on everything it proxies, so nothing that came through
the front is admitted, whatever it claims), carrying the shared secret webmail_mfa_key. The
address alone would admit anything that can take the webmail's place on the frontend
network; the secret alone would admit a copy of it anywhere: both, like PostgreSQL's
password plus pg_hba for the roles.
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailstack.adapters.psql import Executor
from mailstack.api.operations import ApiError
from mailstack.api.signin import Guard
from mailstack.errors import UsageError
from mailstack.identity import mfa
from mailstack.identity.mfa import Owner

# What bansd's list shows as the protocol of these failures (the BansClient's protocol).
PROTOCOL = "webmail-mfa"
KEY_HEADER = "X-Mailstack-Key"
FORBIDDEN = "only the webmail may ask this"
BANNED = "too many failed sign-ins from your address; try again later"
LOG = logging.getLogger("mailstack.admin.internal")


@dataclass(frozen=True)
class WebmailLink:
    """What admits the webmail: its fixed address (on a cluster its link's network) and the
    shared secret webmail_mfa_key."""

    webmail_address: str  # an address, or a network (a cluster's link)
    shared_key: str

    def _from_webmail(self, peer: str | None) -> bool:
        try:
            return peer is not None and ipaddress.ip_address(peer) in ipaddress.ip_network(
                self.webmail_address
            )
        except ValueError:
            return False

    def admit(self, peer: str | None, forwarded_for: str | None, presented: str | None) -> None:
        """ApiError 403 unless the request comes straight from the webmail with the key."""
        key_matches = hmac.compare_digest(
            (presented or "").strip().encode(), self.shared_key.strip().encode()
        )
        if (
            not self._from_webmail(peer)
            or forwarded_for is not None
            or not self.shared_key.strip()
            or not key_matches
        ):
            LOG.warning("internal endpoint refused to %s (not the webmail, or a wrong key)", peer)
            raise ApiError(403, FORBIDDEN)


def status(executor: Executor, address: str) -> dict[str, Any]:
    """POST /internal/v1/mfa/status {address}: whether the mailbox has a second factor in
    force (the plugin then asks for a code)."""
    owner = _owner(address)
    try:
        found = mfa.status(executor, owner)
    except UsageError as error:  # no such mailbox: the password just opened it, so a race
        raise ApiError(404, error.message) from None
    return {"address": owner.name, "second_factor": found.confirmed}


def verify(
    executor: Executor,
    key: bytes,
    bans: Guard | None,
    address: str,
    code: str,
    client: str,
    *,
    now: Callable[[], datetime.datetime],
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """POST /internal/v1/mfa/verify {address, code, client}: whether the code proves the
    mailbox's second factor now; `client` is the browser's address (bans count it)."""
    owner = _owner(address)
    remote = _client(client)
    if bans is not None:
        _ask_bans(bans, remote, owner.name, sleep=sleep)
    try:
        checked = mfa.check(executor, owner, key, code, now().timestamp())
        accepted, method, left = checked.accepted, checked.method, checked.recovery_codes_left
    except mfa.CodeRefused:
        accepted, method, left = False, "", None
    except UsageError as error:
        if "no confirmed second factor" in error.message or "does not exist" in error.message:
            raise ApiError(409, error.message) from None
        accepted, method, left = False, "", None  # a malformed code: a failure like another
    if bans is not None:
        bans.report(remote, owner.name, code, success=accepted)
    LOG.info(
        "webmail second factor of %s from %s: %s",
        owner.name,
        remote,
        f"accepted ({method})" if accepted else "refused",
    )
    answer: dict[str, Any] = {"address": owner.name, "accepted": accepted, "method": method}
    if left is not None:
        answer["recovery_codes_left"] = left
    return answer


def _ask_bans(bans: Guard, remote: str, login: str, *, sleep: Callable[[float], None]) -> None:
    """bansd first, as Dovecot asks it; unreachable, it fails open or closed as
    policy.bans.fail_closed says (the client's verdict)."""
    verdict = bans.allow(remote, login)
    if verdict.unavailable:
        raise ApiError(503, "the sign-in cannot be checked now; try again shortly")
    if verdict.refused is not None:
        raise ApiError(429, BANNED)
    if verdict.delay > 0:
        sleep(float(verdict.delay))


def _owner(address: str) -> Owner:
    try:
        return Owner.mailbox(address)
    except UsageError as error:
        raise ApiError(400, error.message) from None


def _client(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ApiError(400, f"client: {text[:80]!r} is not an IP address") from None
