"""The rules every name, address and stored secret of the mail directory must pass, whoever
writes it: the CLI, `accounts import`, the core before it writes. Each rule returns the
value normalised (IDN as punycode; mailboxes and sources lower-cased) or raises ValueError with the
reason; `require` turns that into a one-line UsageError naming the argument or key.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mailstack.accounts.passwords import STRONG_SCHEMES, hash_scheme, is_password_hash
from mailstack.errors import UsageError
from mailstack.stack.config_values import mixed_scripts, normalize_address, normalize_domain

# A short name of something a person names (an app password, an API token).
SHORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# An administrator's name: the admins table's CHECK (0003_admin.sql), word for word.
ADMIN_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}\Z")
LOOKUP_KEY = re.compile(r"^[0-9a-f]{8}\Z")

Rule = Callable[[str], str]


def require(kind: str, rule: Rule, value: str) -> str:
    """The value by the rule, or one line: `KIND: 'value' <reason>`."""
    try:
        return rule(value)
    except ValueError as reason:
        raise UsageError(f"{kind}: {value[:80]!r} {reason}") from None


def _no_lookalikes(domain_name: str) -> None:
    mixed = mixed_scripts(domain_name)
    if mixed:
        raise ValueError(
            f"is not accepted: it mixes {' and '.join(mixed)} letters in one label "
            "(a look-alike of another name?)"
        )


def domain(value: str) -> str:
    name = normalize_domain(value)
    _no_lookalikes(name)
    return name


def address(value: str) -> str:
    """Any mail address, its local part kept as written: an alias destination may be
    outside the stack, where a local part may be case-sensitive (RFC 5321)."""
    normalised = normalize_address(value)
    _no_lookalikes(normalised.rpartition("@")[2])
    return normalised


def mailbox(value: str) -> str:
    """An address that gets a mail directory of its own (stored lower-case)."""
    normalised = address(value).lower()
    if "/" in normalised.rpartition("@")[0]:
        raise ValueError(
            "is not accepted for a mailbox: '/' in the local part would nest its mail "
            "inside another mailbox's directory"
        )
    return normalised


def source(value: str) -> str:
    """An alias source or a granted sender: an address, or '@domain' for every address of a
    domain (stored lower-case, as the directory compares them)."""
    if value.startswith("@"):
        try:
            return "@" + domain(value[1:])
        except ValueError:
            raise ValueError("is not a catch-all (@ followed by a domain name)") from None
    return address(value).lower()


def password_hash(value: str) -> str:
    """A stored password: a hash of a strong scheme, never a plain password."""
    scheme = hash_scheme(value)
    if scheme and scheme not in STRONG_SCHEMES:
        raise ValueError(
            f"uses the weak scheme {{{scheme}}}: only {', '.join(STRONG_SCHEMES)} hashes are "
            "accepted (set a new password with mailstack mailbox passwd)"
        )
    if not is_password_hash(value):
        raise ValueError(
            "is not a password hash ('{SCHEME}...', e.g. {ARGON2ID}$argon2id$...); plain "
            "passwords are not accepted here: set them with mailstack mailbox passwd"
        )
    return value


def _short_name(value: str, examples: str) -> str:
    if not SHORT_NAME.match(value):
        raise ValueError(
            "is not accepted: 1-64 of letters, digits, '.', '_', '-', starting with a letter "
            f"or digit (e.g. {examples})"
        )
    return value


def app_password_name(value: str) -> str:
    return _short_name(value, "phone, laptop-2025")


def token_name(value: str) -> str:
    return _short_name(value, "provisioning, ci-2026")


def passkey_name(value: str) -> str:
    return _short_name(value, "laptop, yubikey-5")


def admin_name(value: str) -> str:
    """An administrator's name, stored lower-case."""
    # isascii first: str.lower() maps a few non-ASCII letters (the Kelvin sign) onto ASCII.
    if not value.isascii() or not ADMIN_NAME.match(value.lower()):
        raise ValueError(
            "is not accepted: 1-64 of letters, digits, '.', '_', '-', '@', starting with a "
            "letter or digit, stored lower-case (e.g. alice, ops@example.org)"
        )
    return value.lower()


def lookup_key(value: str) -> str:
    if not LOOKUP_KEY.match(value):
        raise ValueError("is not a lookup key (8 lower-case hex digits)")
    return value
