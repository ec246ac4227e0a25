"""The admin service's client of the bans service (compose/bans/bansd.py), which it asks
exactly as Dovecot does (auth policy protocol): `allow` before a password or code is
checked, `report` with the result after, both with the client's address.

So a failed web sign-in, or a failed second-factor code at the webmail, counts with IMAP's
and SMTP's from the same address; `protocol` names which in bansd's list. The password
never leaves the container: bansd sees a 16-bit salted hash of it (as Dovecot sends with
auth_policy_hash_truncate = 16), enough to tell one mistyped password retried from a
guessing run. If bansd does not answer within TIMEOUT_SECONDS the sign-in goes on without
it (fail open), or is refused (fail closed), as policy.bans.fail_closed says for Dovecot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass

ADMIN_SIGN_IN = "admin"  # how the web sign-in shows in bansd's log and `security bans`
TIMEOUT_SECONDS = 2.0  # Dovecot's auth_policy_server_timeout_msecs
_HASH_BITS = 16
LOG = logging.getLogger("mailstack.admin.bans")


@dataclass(frozen=True)
class Verdict:
    """bansd's answer to `allow`: refused (with its line), or allowed after `delay` seconds.
    `unavailable`: refused because bansd did not answer and policy.bans.fail_closed is set."""

    refused: str | None = None
    delay: int = 0
    unavailable: bool = False


ALLOWED = Verdict()


@dataclass(frozen=True)
class BansClient:
    """The policy API at `url` (http://bans:12350/), with the key bansd expects."""

    url: str
    api_key: str
    fail_closed: bool = False
    protocol: str = ADMIN_SIGN_IN  # "account": the users' self-service; "webmail-mfa"

    def allow(self, client: str, login: str) -> Verdict:
        answer = self._ask("allow", {"login": login, "remote": client, "protocol": self.protocol})
        if answer is None:
            if self.fail_closed:
                return Verdict(
                    "the sign-in cannot be checked now; try again later", unavailable=True
                )
            return ALLOWED
        status = answer.get("status")
        if not isinstance(status, int):
            return ALLOWED
        if status < 0:
            message = answer.get("msg")
            return Verdict(message if isinstance(message, str) and message else "refused")
        return Verdict(delay=min(status, 60))

    def report(self, client: str, login: str, secret: str, *, success: bool) -> None:
        self._ask(
            "report",
            {
                "login": login,
                "pwhash": self.secret_hash(login, secret),
                "remote": client,
                "protocol": self.protocol,
                "success": success,
                "policy_reject": False,
            },
        )

    def secret_hash(self, login: str, secret: str) -> str:
        """A 16-bit salted hash of what was typed: as Dovecot's, only to tell tries apart."""
        nonce = hashlib.sha256(f"auth-policy-nonce:{self.api_key}".encode()).hexdigest()
        digest = hashlib.sha256(f"{nonce}{login}\0{secret}".encode()).hexdigest()
        return digest[: _HASH_BITS // 4]

    def _ask(self, command: str, body: dict[str, object]) -> dict[str, object] | None:
        request = urllib.request.Request(  # noqa: S310  # a fixed http URL from the config
            f"{self.url.rstrip('/')}/?command={command}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-API-Key": self.api_key},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:  # noqa: S310
                parsed = json.loads(answer.read(65536))
        except (OSError, ValueError) as error:
            LOG.error("the bans service did not answer %s: %s", command, error)
            return None
        return parsed if isinstance(parsed, dict) else None
