"""Passkeys (WebAuthn) as a second factor beside TOTP: register an authenticator, prove it at
sign-in, list and remove them (table passkeys, migration 0008).

The ceremonies are python3-fido2's (Debian bookworm ships 0.9; the dev tools pin the same
series): `fido2.server.Fido2Server` makes the options and checks the browser's answer (the
challenge, the origin against the relying party, the RP ID hash, user presence, the
signature). What this module adds is the storage and the rules around it:

- Each ceremony is two steps. `begin_*` returns the options for the browser (JSON, bytes as
  base64url, the shape of the page's script) and a *state* the caller keeps on the server,
  in the signed-in session, never in the browser; `finish_*` takes that state back. A state
  is used once: the caller drops it whatever the outcome.
- The relying party is the stack's hostname: a passkey made for mail.example.org answers
  only pages served under that name, over HTTPS.
- The signature counter: an authenticator that counts (a security key) must count up; an
  answer with a counter at or below the stored one (and not both zero, as passkeys synced
  between devices report) is refused as a possible clone.
- Only public data is stored; answers from the browser are bounded in size and decoded
  defensively, so a hostile answer is one refusal (PasskeyRefused), never a traceback.

Loaded by the admin service on Debian's own Python: no pydantic, typer or rich.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fido2.client import ClientData
from fido2.ctap2 import AttestationObject, AttestedCredentialData, AuthenticatorData
from fido2.server import Fido2Server
from fido2.webauthn import PublicKeyCredentialRpEntity

from mailstack.accounts import names
from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import MailstackError, NotFound, UsageError
from mailstack.identity.mfa import Owner

# Passkeys an account may hold: enough for a phone, a laptop and two keys in a drawer.
MAX_PER_ACCOUNT = 10
# The browser's answer, JSON: a few hundred bytes for real authenticators.
MAX_ANSWER_BYTES = 16_384
# Asked of the authenticator: a PIN or biometric where it has one, not demanded (the password
# came first; the passkey is the second factor).
USER_VERIFICATION = "preferred"
# How long the browser waits for the person to touch the key, in milliseconds.
TIMEOUT_MS = 120_000


class PasskeyRefused(UsageError):
    """The browser's answer does not prove the passkey (or is not an answer at all)."""


@dataclass(frozen=True)
class Passkey:
    id: int
    name: str
    created: str
    last_used: str  # "" when never used

    def __str__(self) -> str:
        return f"{self.name}  added {self.created}  last used {self.last_used or 'never'}"


@dataclass(frozen=True)
class Ceremony:
    """One step's output: the options for the browser's navigator.credentials call (JSON)
    and the state the server keeps until the answer comes."""

    options: str
    state: str


@dataclass(frozen=True)
class Registered:
    owner: str
    name: str

    def __str__(self) -> str:
        return f"added passkey {self.name} for {self.owner}"


@dataclass(frozen=True)
class Proven:
    owner: str
    name: str  # the passkey that signed


@dataclass(frozen=True)
class _Stored:
    listed: Passkey
    credential_id: str
    credential: AttestedCredentialData
    sign_count: int


# Every statement finds the owner's rows by two psql variables, kind and owner (as mfa.py).
_READ = """
SELECT 'account', count(*) FROM (
    SELECT name FROM admins WHERE :'kind' = 'admin' AND name = :'owner'
    UNION ALL SELECT address FROM mailboxes WHERE :'kind' = 'mailbox' AND address = :'owner'
) AS account;
SELECT 'key', id, name, credential_id, credential, sign_count, created,
    coalesce(last_used::text, '')
FROM passkeys
WHERE ((:'kind' = 'admin' AND admin = :'owner') OR (:'kind' = 'mailbox' AND mailbox = :'owner'))
ORDER BY created, id;
"""

# The limit is checked in the INSERT itself, so two parallel registrations cannot pass it.
_ADD = """
INSERT INTO passkeys (admin, mailbox, name, credential_id, credential, sign_count)
SELECT CASE WHEN :'kind' = 'admin' THEN :'owner' END,
       CASE WHEN :'kind' = 'mailbox' THEN :'owner' END,
       :'name', :'credential_id', :'credential', CAST(:'sign_count' AS bigint)
WHERE (SELECT count(*) FROM passkeys
       WHERE ((:'kind' = 'admin' AND admin = :'owner')
           OR (:'kind' = 'mailbox' AND mailbox = :'owner'))) < CAST(:'limit' AS integer)
ON CONFLICT DO NOTHING
RETURNING 'added', id;
"""

# The counter moves only forwards: of two parallel uses of one answer, one updates.
_USE = """
UPDATE passkeys SET sign_count = CAST(:'sign_count' AS bigint), last_used = now()
WHERE credential_id = :'credential_id'
    AND ((:'kind' = 'admin' AND admin = :'owner') OR (:'kind' = 'mailbox' AND mailbox = :'owner'))
    AND (sign_count < CAST(:'sign_count' AS bigint)
         OR (sign_count = 0 AND CAST(:'sign_count' AS bigint) = 0))
RETURNING 'used', name;
"""

_REMOVE = """
SELECT 'account', count(*) FROM (
    SELECT name FROM admins WHERE :'kind' = 'admin' AND name = :'owner'
    UNION ALL SELECT address FROM mailboxes WHERE :'kind' = 'mailbox' AND address = :'owner'
) AS account;
DELETE FROM passkeys
WHERE name = :'name'
    AND ((:'kind' = 'admin' AND admin = :'owner') OR (:'kind' = 'mailbox' AND mailbox = :'owner'))
RETURNING 'removed', name;
"""


def server(hostname: str) -> Fido2Server:
    """The relying party: the stack's hostname (mailstack.yaml: hostname)."""
    return Fido2Server(PublicKeyCredentialRpEntity(hostname, "mailstack"))


def list_passkeys(executor: Executor, owner: Owner) -> list[Passkey]:
    return [key.listed for key in _stored(executor, owner)]


def begin_registration(executor: Executor, owner: Owner, hostname: str) -> Ceremony:
    """Options for navigator.credentials.create(): a new credential for this account, none
    of its registered ones again (excludeCredentials)."""
    stored = _stored(executor, owner)
    if len(stored) >= MAX_PER_ACCOUNT:
        raise UsageError(f"{owner} has {MAX_PER_ACCOUNT} passkeys already; remove one first")
    user = {
        # A random handle, not the name: the authenticator may show or sync it.
        "id": secrets.token_bytes(16),
        "name": owner.name,
        "displayName": owner.name,
    }
    options, state = server(hostname).register_begin(
        user,
        [key.credential for key in stored],
        user_verification=USER_VERIFICATION,
    )
    options["publicKey"]["timeout"] = TIMEOUT_MS
    return Ceremony(_options_json(options), json.dumps(state))


def finish_registration(
    executor: Executor, owner: Owner, hostname: str, name: str, state: str, answer: str
) -> Registered:
    """Check the browser's answer to begin_registration and store the new passkey."""
    label = names.require("NAME", names.passkey_name, name)
    fields = _answer(answer, ("clientDataJSON", "attestationObject"))
    try:
        authenticator = server(hostname).register_complete(
            _state(state),
            ClientData(fields["clientDataJSON"]),
            AttestationObject(fields["attestationObject"]),
        )
    except (ValueError, KeyError, TypeError) as reason:
        raise PasskeyRefused(f"the passkey was not registered: {_reason(reason)}") from None
    credential = authenticator.credential_data
    if credential is None:
        raise PasskeyRefused("the passkey was not registered: the answer holds no credential")
    rows = psql.query(
        executor,
        _ADD,
        {
            **owner.variables(),
            "name": label,
            "credential_id": _encode(credential.credential_id),
            "credential": _encode(bytes(credential)),
            "sign_count": str(authenticator.counter),
            "limit": str(MAX_PER_ACCOUNT),
        },
    )
    if not any(row[0] == "added" for row in rows):
        raise UsageError(
            f"NAME: {label} is taken, the authenticator is registered already, or {owner} "
            f"has {MAX_PER_ACCOUNT} passkeys; nothing was added"
        )
    return Registered(str(owner), label)


def begin_authentication(executor: Executor, owner: Owner, hostname: str) -> Ceremony:
    """Options for navigator.credentials.get(): any of the account's passkeys."""
    stored = _stored(executor, owner)
    if not stored:
        raise NotFound(f"{owner} has no passkey")
    options, state = server(hostname).authenticate_begin(
        [key.credential for key in stored], user_verification=USER_VERIFICATION
    )
    options["publicKey"]["timeout"] = TIMEOUT_MS
    return Ceremony(_options_json(options), json.dumps(state))


def finish_authentication(
    executor: Executor, owner: Owner, hostname: str, state: str, answer: str
) -> Proven:
    """Whether the browser's answer to begin_authentication proves one of the account's
    passkeys; PasskeyRefused otherwise (a wrong signature, origin or challenge, an unknown
    credential, a counter that did not move forwards)."""
    fields = _answer(answer, ("id", "clientDataJSON", "authenticatorData", "signature"))
    stored = {key.credential_id: key for key in _stored(executor, owner)}
    key = stored.get(_encode(fields["id"]))
    if key is None:
        raise PasskeyRefused("the passkey was not accepted: it is not one of this account's")
    try:
        data = AuthenticatorData(fields["authenticatorData"])
        server(hostname).authenticate_complete(
            _state(state),
            [key.credential],
            fields["id"],
            ClientData(fields["clientDataJSON"]),
            data,
            fields["signature"],
        )
    except (ValueError, KeyError, TypeError) as reason:
        raise PasskeyRefused(f"the passkey was not accepted: {_reason(reason)}") from None
    rows = psql.query(
        executor,
        _USE,
        {**owner.variables(), "credential_id": key.credential_id, "sign_count": str(data.counter)},
    )
    if not any(row[0] == "used" for row in rows):
        raise PasskeyRefused(
            "the passkey was not accepted: its signature counter did not move forwards "
            "(a copied authenticator, or an answer used twice)"
        )
    return Proven(str(owner), key.listed.name)


def remove_passkey(executor: Executor, owner: Owner, name: str) -> None:
    label = names.require("NAME", names.passkey_name, name)
    rows = psql.query(executor, _REMOVE, {**owner.variables(), "name": label})
    _require_account(rows, owner)
    if not any(row[0] == "removed" for row in rows):
        raise NotFound(f"NAME: {owner} has no passkey named {label}")


# --- the browser's side ------------------------------------------------------------------


def _options_json(options: Mapping[str, Any]) -> str:
    """fido2's options as JSON for the page's script: bytes as base64url, which the script
    turns back into ArrayBuffers; empty values left out."""
    return json.dumps(_jsonable(options), separators=(",", ":"), sort_keys=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):  # fido2's are str mixins: str() gives the member name
        return _jsonable(value.value)
    if isinstance(value, bytes):
        return _encode(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, str | int | bool) or value is None:
        return value
    raise TypeError(f"cannot put {type(value).__name__} in the options")


def _answer(answer: str, required: Sequence[str]) -> dict[str, bytes]:
    """The browser's answer: a JSON object of base64url fields, each decoded."""
    if len(answer) > MAX_ANSWER_BYTES:
        raise PasskeyRefused(f"the browser's answer is over {MAX_ANSWER_BYTES} bytes")
    try:
        given = json.loads(answer)
    except ValueError:
        raise PasskeyRefused("the browser's answer is not JSON") from None
    if not isinstance(given, dict):
        raise PasskeyRefused("the browser's answer is not a JSON object")
    fields = {}
    for name in required:
        value = given.get(name)
        if not isinstance(value, str) or not value:
            raise PasskeyRefused(f"the browser's answer lacks {name}")
        fields[name] = _decode(name, value)
    return fields


def _state(state: str) -> dict[str, Any]:
    try:
        loaded = json.loads(state)
    except ValueError:
        raise MailstackError("the passkey ceremony's state is damaged; start again") from None
    if not isinstance(loaded, dict) or "challenge" not in loaded:
        raise MailstackError("the passkey ceremony's state is damaged; start again")
    return loaded


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(name: str, text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise PasskeyRefused(f"the browser's answer: {name} is not base64url") from None


def _reason(error: Exception) -> str:
    """fido2's message names the check that failed ("Invalid origin in ClientData.") and
    holds nothing secret; anything else is said generically."""
    text = str(error).strip().rstrip(".")
    if not isinstance(error, ValueError) or not text:
        return "the answer is malformed"
    return text[:1].lower() + text[1:120]


# --- storage -------------------------------------------------------------------------------


def _stored(executor: Executor, owner: Owner) -> list[_Stored]:
    rows = psql.query(executor, _READ, owner.variables())
    _require_account(rows, owner)
    try:
        return [
            _Stored(
                Passkey(int(key_id), name, created, last_used),
                credential_id,
                AttestedCredentialData(_decode("credential", credential)),
                int(sign_count),
            )
            for _, key_id, name, credential_id, credential, sign_count, created, last_used in (
                row for row in rows if row[0] == "key"
            )
        ]
    except (ValueError, PasskeyRefused):
        raise MailstackError("unexpected answer from the database") from None


def _require_account(rows: Sequence[Sequence[str]], owner: Owner) -> None:
    counts = [row for row in rows if row[0] == "account"]
    if not counts or counts[0][1] == "0":
        raise UsageError(f"{owner} does not exist")
