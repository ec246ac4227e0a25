"""Mailbox passwords: strength rules and Dovecot-ready hashes ({ARGON2ID}, verified by doveadm).

Parameters: Argon2id, 32 MiB, 2 passes, 1 lane. One verification costs about 50-65 ms on
a 2-core host (a whole IMAPS login measured 46-68 ms). Dovecot 2.3 verifies SQL passdb
hashes inside its single auth process, one at a time, so the peak is one 32 MiB buffer
(auth process high-water mark about 45 MiB) and the rate is bounded at roughly 15-20
logins per second: enough for a small or mid-size domain, and a brake on guessing.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import warnings

from argon2 import PasswordHasher, Type
from argon2.exceptions import VerificationError

from mailstack.errors import UsageError

SCHEME = "ARGON2ID"
MEMORY_KIB = 32 * 1024
TIME_COST = 2
PARALLELISM = 1

MIN_LENGTH = 12
MAX_LENGTH = 1024  # bounds the work of a hash; no person types more
MIN_CLASSES = 2
MIN_DISTINCT = 5

_HASHER = PasswordHasher(
    time_cost=TIME_COST,
    memory_cost=MEMORY_KIB,
    parallelism=PARALLELISM,
    hash_len=32,
    salt_len=16,
    type=Type.ID,
)

# What a stored hash may contain: the scheme prefix plus the PHC string (base64 without
# padding, $ , = separators). Checked before a hash is handed to the database.
_HASH_SHAPE = re.compile(r"^\{[A-Z0-9-]{1,32}\}[A-Za-z0-9$,=+/.-]{1,512}\Z")


def hash_password(plain: str) -> str:
    """Hash a password for the directory: '{ARGON2ID}$argon2id$v=19$m=...'."""
    check_password_strength(plain)
    return "{" + SCHEME + "}" + _HASHER.hash(plain)


def unusable_hash() -> str:
    """An {ARGON2ID} hash no password matches: a random salt and a random digest (finding a
    password for it is a preimage of Argon2). For a mailbox that must exist before its owner
    has a password here; instant, where hashing a random secret costs a hash each."""
    salt, digest = (
        base64.b64encode(secrets.token_bytes(size)).decode().rstrip("=") for size in (16, 32)
    )
    return (
        "{"
        + SCHEME
        + "}"
        + f"$argon2id$v=19$m={MEMORY_KIB},t={TIME_COST},p={PARALLELISM}${salt}${digest}"
    )


def verify_password(stored: str, plain: str) -> bool:
    """Check a password as Dovecot would: this module's {ARGON2ID} hashes, and the
    {BLF-CRYPT} and {SHA512-CRYPT} ones an import brought (mailstack.accounts.mailu)."""
    scheme = hash_scheme(stored)
    hashed = stored[len(scheme) + 2 :]
    if scheme in _CRYPT_SCHEMES:
        return _crypt_matches(hashed, plain)
    if scheme != SCHEME:
        return False
    try:
        return _HASHER.verify(hashed, plain)
    # A malformed hash: InvalidHashError (argon2-cffi 23.1+), InvalidHash in Debian bookworm's
    # 21.1 (the admin service); a ValueError in both.
    except (VerificationError, ValueError):
        return False


_CRYPT_SCHEMES = ("BLF-CRYPT", "SHA512-CRYPT")


def _crypt_matches(hashed: str, plain: str) -> bool:
    """libc's crypt(3), which Dovecot uses for these schemes (Debian's libxcrypt has both)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # noqa: PLC0415  # deprecated, gone in Python 3.13; bookworm has 3.11
    except ImportError:
        return False
    computed = crypt.crypt(plain, hashed)
    return computed is not None and hmac.compare_digest(computed, hashed)


# Dovecot schemes that are slow, salted hashes; {PLAIN}, {CLEAR}, {PLAIN-MD5}, {SHA} and the
# like store a password (or an unsalted fast digest of it) and are refused.
STRONG_SCHEMES = ("ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT")


def hash_scheme(value: str) -> str:
    """The scheme of '{SCHEME}...' ("" for anything else)."""
    return value[1 : value.index("}")] if value.startswith("{") and "}" in value else ""


def is_password_hash(value: str) -> bool:
    """True when value is a scheme-prefixed hash of a strong scheme, safe to store as it is."""
    return bool(_HASH_SHAPE.match(value)) and hash_scheme(value) in STRONG_SCHEMES


def check_password_strength(plain: str) -> None:
    """Refuse passwords that are short, one-class, repetitive or unprintable."""
    if len(plain) < MIN_LENGTH:
        raise UsageError(
            f"the password is too short ({len(plain)} characters; at least {MIN_LENGTH})",
            hint="use a passphrase of several words or a password manager",
        )
    if len(plain) > MAX_LENGTH:
        raise UsageError(f"the password is too long (at most {MAX_LENGTH} characters)")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in plain):
        raise UsageError("the password contains a control character (newline, tab, …)")
    if plain != plain.strip():
        raise UsageError(
            "the password starts or ends with a space",
            hint="mail clients often trim spaces; put them inside the password",
        )
    if _character_classes(plain) < MIN_CLASSES:
        raise UsageError(
            "the password uses only one kind of character",
            hint="mix at least two of: lower case, upper case, digits, symbols",
        )
    if len(set(plain.lower())) < MIN_DISTINCT:
        raise UsageError(
            f"the password repeats too few characters (at least {MIN_DISTINCT} different ones)"
        )


def _character_classes(plain: str) -> int:
    classes = (
        any(ch.islower() for ch in plain),
        any(ch.isupper() for ch in plain),
        any(ch.isdigit() for ch in plain),
        any(not ch.isalnum() for ch in plain),
    )
    return sum(classes)


# Generated passwords (app passwords, `mailbox add --generate-password`): easy to read out and
# type on a phone, no look-alikes (no 0/o, 1/l/i).
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_GROUPS = 4
_GROUP_LENGTH = 5


def generate_password() -> str:
    """Four groups of five characters from a 31-letter alphabet (~99 bits), e.g. 'k3xq9-...'."""
    while True:
        groups = (
            "".join(secrets.choice(_ALPHABET) for _ in range(_GROUP_LENGTH)) for _ in range(_GROUPS)
        )
        candidate = "-".join(groups)
        try:
            check_password_strength(candidate)
        except UsageError:
            continue  # e.g. too few distinct letters: vanishingly rare, draw again
        return candidate
