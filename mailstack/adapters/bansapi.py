"""The bans service's policy API (compose/bans/bansd.py), asked the way Dovecot asks it:
POST /?command=allow before a credential is checked, POST /?command=report after, with the
X-API-Key of the secret bans_api_key. The admin service uses it for the webmail's second
factor, so a failed code counts against the browser's address like a failed password.

Standard library only (the admin container runs it on Debian's Python).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from mailstack.errors import MailstackError

TIMEOUT_SECONDS = 2.0  # Dovecot's auth_policy_server_timeout_msecs
# Like Dovecot's auth_policy_hash_truncate: enough to tell one retried code from a guessing
# run, too little to learn a code from.
FINGERPRINT_HEX = 4


class BansUnavailable(MailstackError):
    """bansd did not answer (stopped, restarting) or answered something unexpected."""


@dataclass(frozen=True)
class BansPolicy:
    """One bansd policy endpoint (http://bans:12350/) and its key."""

    url: str
    api_key: str
    # Salts the fingerprints for this process, as Dovecot's auth_policy_hash_nonce does.
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))

    def allow(self, remote: str, login: str, credential: str, protocol: str) -> int:
        """bansd's verdict before a check: -1 refused (banned), N > 0 delay N s, 0 go on."""
        answer = self._post("allow", self._attributes(remote, login, credential, protocol))
        status = answer.get("status")
        if not isinstance(status, int) or isinstance(status, bool):
            raise BansUnavailable(f"the bans service answered allow with {answer!r:.200}")
        return status

    def report(
        self, remote: str, login: str, credential: str, protocol: str, *, success: bool
    ) -> None:
        """The result of a check: a failure counts toward the address's delay and ban."""
        attributes = self._attributes(remote, login, credential, protocol)
        self._post("report", {**attributes, "success": success, "policy_reject": False})

    def fingerprint(self, login: str, credential: str) -> str:
        digest = hashlib.sha256(f"{self.nonce}\0{login}\0{credential}".encode()).hexdigest()
        return digest[:FINGERPRINT_HEX]

    def _attributes(
        self, remote: str, login: str, credential: str, protocol: str
    ) -> dict[str, Any]:
        return {
            "login": login,
            "pwhash": self.fingerprint(login, credential),
            "remote": remote,
            "protocol": protocol,
        }

    def _post(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310  # the stack's own http URL, from render
            f"{self.url.rstrip('/')}/?command={command}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-API-Key": self.api_key},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
                answer = json.loads(response.read(4096))
        except (OSError, ValueError) as error:  # URLError and HTTPError are OSErrors
            raise BansUnavailable(f"the bans service did not answer {command}: {error}") from None
        if not isinstance(answer, dict):
            raise BansUnavailable(f"the bans service answered {command} with {answer!r:.200}")
        return answer
