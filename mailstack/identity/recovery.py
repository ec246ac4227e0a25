"""Recovery codes of a second factor: the way in when the phone is lost.

Ten per enrolment, 80 bits each from the CSPRNG, shown once as four groups of four
characters (`7k2m-q9xd-...`) in Crockford's base32 alphabet (no i, l, o, u: nothing to
misread), stored only as the SHA-256 hex of the 16 characters; a used one is deleted. Typing
is forgiving the way Crockford's alphabet intends: case, hyphens and spaces do not matter,
and o, i, l are read as 0, 1, 1.
"""

from __future__ import annotations

import hashlib
import secrets

COUNT = 10
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # 32 letters: 5 bits each
LENGTH = 16  # 16 x 5 = 80 bits
_GROUP = 4
_READ_AS = str.maketrans({"o": "0", "i": "1", "l": "1", "-": None, " ": None})
_MAX_INPUT = 64


def new_codes(count: int = COUNT) -> tuple[str, ...]:
    """`count` fresh codes, grouped for reading."""
    return tuple(
        _grouped("".join(secrets.choice(_ALPHABET) for _ in range(LENGTH))) for _ in range(count)
    )


def normalize(code: str) -> str | None:
    """The 16 characters of a typed recovery code, or None if it cannot be one."""
    if len(code) > _MAX_INPUT:
        return None
    compact = code.strip().lower().translate(_READ_AS)
    if len(compact) != LENGTH or any(ch not in _ALPHABET for ch in compact):
        return None
    return compact


def code_hash(code: str) -> str:
    """What is stored of a code (SHA-256 hex of its normalised form); ValueError if the text
    cannot be a recovery code. An 80-bit random value needs no slow hash."""
    compact = normalize(code)
    if compact is None:
        raise ValueError("not a recovery code")
    return hashlib.sha256(compact.encode("ascii")).hexdigest()


def _grouped(compact: str) -> str:
    return "-".join(compact[i : i + _GROUP] for i in range(0, len(compact), _GROUP))
