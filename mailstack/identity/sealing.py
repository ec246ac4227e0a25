"""Sealing a second factor's secret for the database: AES-256-GCM under the stack's `mfa_key`
(secrets/mfa_key, 0600, made with the other secrets by mailstack.stack.secrets), so a dump of
the database alone (a backup, a leaked copy) does not yield any TOTP secret.

The owner ("admin:NAME" or "mailbox:ADDRESS") is the associated data: a sealed value copied
into another account's row does not open there. The text form is versioned,
`v1:` + base64url(nonce || ciphertext || tag), so a later key or cipher can live beside it.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailstack.errors import MailstackError

VERSION = "v1"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce; random per seal (a key seals few values)
TAG_BYTES = 16
# Binds a sealed value to this use as well as to its owner: the same key sealing something
# else later cannot be confused with a TOTP secret.
_PURPOSE = b"mailstack mfa_totp v1\x00"


class SealBroken(MailstackError):
    """A sealed value that does not open: another key, another owner, or changed bytes."""


def key_from_text(text: str) -> bytes:
    """The key of secrets/mfa_key: 256 bits as unpadded base64url (secrets.token_urlsafe)."""
    stripped = text.strip()
    try:
        padded = stripped + "=" * (-len(stripped) % 4)
        key = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise MailstackError(
            "secret mfa_key is not a 256-bit key",
            hint="restore secrets/mfa_key from a backup; without it every TOTP enrolment "
            "must be made again",
        )
    return key


def read_key(path: Path) -> bytes:
    """The key from its file (secrets/mfa_key on the host, /run/secrets/mfa_key in a container)."""
    try:
        return key_from_text(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError) as e:
        raise MailstackError(f"secret mfa_key cannot be read from {path} ({e})") from None


def seal(key: bytes, secret: str, owner: str) -> str:
    """The secret encrypted and authenticated for this owner, as `v1:<base64url>`."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, secret.encode("utf-8"), _associated_data(owner))
    return f"{VERSION}:{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"


def unseal(key: bytes, sealed: str, owner: str) -> str:
    """The secret, or SealBroken if the value was not sealed under this key for this owner."""
    version, separator, body = sealed.partition(":")
    if not separator or version != VERSION:
        raise SealBroken(f"the second factor of {owner} is sealed in an unknown form")
    try:
        raw = base64.b64decode(body.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise SealBroken(f"the second factor of {owner} is damaged") from None
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise SealBroken(f"the second factor of {owner} is damaged")
    try:
        plain = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _associated_data(owner))
    except InvalidTag:
        raise SealBroken(
            f"the second factor of {owner} does not open: sealed under another mfa_key, "
            "for another account, or changed",
            hint="if secrets/mfa_key was replaced, restore it; otherwise disable the second "
            "factor and enrol again",
        ) from None
    return plain.decode("utf-8")


def _associated_data(owner: str) -> bytes:
    return _PURPOSE + owner.encode("utf-8")
