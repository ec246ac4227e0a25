"""One-time codes of a second factor: TOTP (RFC 6238) over HOTP (RFC 4226), as authenticator
apps compute them (HMAC-SHA1, 30-second steps, 6 digits), and the otpauth:// URI they scan.

Pure: no clock, no database. The caller passes the time (`now`, seconds since the epoch) and
the last step it accepted; `verify` returns the step it accepts so the caller can store it
and never accept that code again (RFC 6238 section 5.2).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
import urllib.parse

SECRET_BYTES = 20  # 160 bits: the HMAC-SHA1 block's natural key size (RFC 4226 section 4)
DIGITS = 6
STEP_SECONDS = 30
# Steps either side of the current one that are accepted: a phone's clock a little off, or
# a code typed just as it changed (RFC 6238 section 5.2 recommends at most one).
DRIFT_STEPS = 1
# Apps show a code as "123 456": spaces are dropped before the digits are checked. Nothing
# else is forgiven (a letter is refused, not guessed).
_SPACES = re.compile(r" +")
_MAX_INPUT = 64  # longer than any code typed with spaces; bounds the work on hostile input
_BASE32_SECRET = re.compile(r"^[A-Z2-7]{16,128}$")


def new_secret() -> str:
    """A fresh 160-bit secret from the CSPRNG, base32 without padding (32 characters)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def secret_bytes(secret: str) -> bytes:
    """The key of a base32 secret (upper or lower case, padding optional)."""
    text = secret.upper().rstrip("=")
    if not _BASE32_SECRET.match(text):
        raise ValueError("not a base32 TOTP secret")
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except binascii.Error:
        raise ValueError("not a base32 TOTP secret") from None


def hotp(key: bytes, counter: int, digits: int = DIGITS) -> str:
    """RFC 4226 section 5.3: HMAC-SHA1 of the 8-byte counter, dynamically truncated."""
    mac = hmac.digest(key, struct.pack(">Q", counter), hashlib.sha1)
    offset = mac[-1] & 0x0F
    binary = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def time_step(now: float, step_seconds: int = STEP_SECONDS) -> int:
    """The RFC 6238 counter T = floor(now / X), with T0 = 0 (the Unix epoch)."""
    return int(now // step_seconds)


def code_at(secret: str, now: float, digits: int = DIGITS) -> str:
    """The code an app shows at `now`."""
    return hotp(secret_bytes(secret), time_step(now), digits)


def normalize_code(code: str, digits: int = DIGITS) -> str | None:
    """The code without spaces if it is exactly `digits` ASCII digits, else None."""
    if len(code) > _MAX_INPUT:
        return None
    compact = _SPACES.sub("", code.strip())
    if len(compact) != digits or not all("0" <= ch <= "9" for ch in compact):
        return None
    return compact


def verify(
    secret: str, code: str, now: float, last_step: int, *, digits: int = DIGITS
) -> int | None:
    """The time step the code belongs to (now's, or one either side), if that step is after
    `last_step`; None otherwise (wrong, malformed, or a code already used: a replay).

    Every candidate step is computed and compared in constant time, so the time taken does
    not tell which step (if any) matched or how close a guess was.
    """
    typed = normalize_code(code, digits)
    key = secret_bytes(secret)
    current = time_step(now)
    matched: int | None = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        expected = hotp(key, step, digits)
        # Compare even a malformed code (against a same-length stand-in): no early exit.
        same = hmac.compare_digest(expected.encode(), (typed or "x" * digits).encode())
        if same and typed is not None and step > last_step:
            matched = step  # the latest matching step: it burns every earlier one too
    return matched


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app scans (Google's Key Uri Format): the label
    `issuer:account` and the issuer parameter, each percent-encoded (RFC 3986; a space is
    %20, never '+'), with the algorithm, digits and period spelled out."""
    secret_bytes(secret)  # refuse a malformed secret here rather than in the user's app
    for what, value in (("account", account), ("issuer", issuer)):
        # The format forbids a colon in either part: it separates them in the label.
        if not value or ":" in value or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise ValueError(f"a TOTP {what} must be non-empty, without ':' or control characters")
    label = f"{urllib.parse.quote(issuer, safe='')}:{urllib.parse.quote(account, safe='@')}"
    parameters = (
        f"secret={secret.upper().rstrip('=')}"
        f"&issuer={urllib.parse.quote(issuer, safe='')}"
        f"&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}"
    )
    return f"otpauth://totp/{label}?{parameters}"
