"""restic repository key files: open one with the password, seal the master key in a new one.

A key file (restic's design document, "Keys, Encryption and MAC") is JSON: the scrypt
parameters and salt, and `data` = nonce (16 bytes) || AES-256-CTR ciphertext of the master
key's JSON || Poly1305-AES tag (16 bytes). scrypt(password, salt, N, r, p) gives 64 bytes:
the AES key, then the MAC key as k (AES-128 key for the tag's nonce part) || r.

restic 0.14 calibrates scrypt at `init` (here N=2^15, r=8, p=10: about 0.6 s of one core) and
pays that in every later command, and has no option to choose cheaper parameters. mailstack's
repository password is a 256-bit random token, so the work factor protects nothing there: an
attacker must guess 2^256 passwords whatever one guess costs. This module lets mailstack give
such a repository a key with restic's own N and r and p=1 (one scrypt lane, ~0.07 s); restic
itself then proves the new key opens the repository before the calibrated one is removed.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

NONCE_BYTES = 16
TAG_BYTES = 16
SALT_BYTES = 64  # restic refuses other salt lengths
# restic's calibrated N and r on this class of machine, with one lane instead of ten.
FAST_N, FAST_R, FAST_P = 2**15, 8, 1
# Refuse to run scrypt on parameters that would take more memory than this (a damaged file).
MAX_KDF_MEMORY = 1 << 30
# mailstack's generated password: secrets.token_urlsafe(32), 43 characters, 256 bits.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43,}")


@dataclass(frozen=True)
class KeyFile:
    """One opened key file: its scrypt parameters and who made it, and the master key."""

    n: int
    r: int
    p: int
    username: str
    hostname: str
    master_key: bytes  # the master key's JSON, as restic stores it


def is_random_token(password: str) -> bool:
    """True for a password shaped like mailstack's generated one (≥ 256 bits of randomness).

    An operator's own password may be weaker: it keeps restic's calibrated key.
    """
    return _TOKEN.fullmatch(password) is not None


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes, bytes]:
    """(AES key, MAC k, MAC r) from the password, as restic's crypto.KDF splits scrypt's output."""
    memory = 128 * r * (n + p + 2)  # OpenSSL's own count of what scrypt needs
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or memory > MAX_KDF_MEMORY:
        raise ValueError(f"unusable scrypt parameters N={n} r={r} p={p}")
    derived = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=memory + (1 << 20), dklen=64
    )
    return derived[:32], derived[32:48], derived[48:64]


def _tag(mac_k: bytes, mac_r: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    """Poly1305-AES: the one-time key is r || AES-128_k(nonce) (Poly1305 clamps r itself)."""
    encryptor = Cipher(algorithms.AES(mac_k), modes.ECB()).encryptor()  # noqa: S305  # one block, the nonce: Poly1305-AES's construction
    s = encryptor.update(nonce) + encryptor.finalize()
    return Poly1305.generate_tag(mac_r + s, ciphertext)


def _ctr(key: bytes, nonce: bytes, data: bytes) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    return cipher.update(data) + cipher.finalize()


def open_key(content: bytes, password: str) -> KeyFile:
    """Decrypt a key file; ValueError when it is not one or the password does not open it."""
    try:
        fields = json.loads(content)
        n, r, p = int(fields["N"]), int(fields["r"]), int(fields["p"])
        salt = base64.b64decode(fields["salt"], validate=True)
        data = base64.b64decode(fields["data"], validate=True)
        kdf = fields["kdf"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"not a restic key file ({e})") from None
    if kdf != "scrypt" or len(data) <= NONCE_BYTES + TAG_BYTES:
        raise ValueError("not a restic scrypt key file")
    encryption, mac_k, mac_r = _derive(password, salt, n, r, p)
    nonce, ciphertext, tag = data[:NONCE_BYTES], data[NONCE_BYTES:-TAG_BYTES], data[-TAG_BYTES:]
    if not hmac.compare_digest(_tag(mac_k, mac_r, nonce, ciphertext), tag):
        raise ValueError("the password does not open this key")
    return KeyFile(
        n=n,
        r=r,
        p=p,
        username=str(fields.get("username", "")),
        hostname=str(fields.get("hostname", "")),
        master_key=_ctr(encryption, nonce, ciphertext),
    )


def seal_key(
    master_key: bytes,
    password: str,
    *,
    username: str,
    hostname: str,
    n: int = FAST_N,
    r: int = FAST_R,
    p: int = FAST_P,
) -> tuple[str, bytes]:
    """A new key file for the master key; (its name in keys/: the SHA-256 of its bytes, bytes)."""
    salt = os.urandom(SALT_BYTES)
    encryption, mac_k, mac_r = _derive(password, salt, n, r, p)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = _ctr(encryption, nonce, master_key)
    fields = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(),
        "username": username,
        "hostname": hostname,
        "kdf": "scrypt",
        "N": n,
        "r": r,
        "p": p,
        "salt": base64.b64encode(salt).decode(),
        "data": base64.b64encode(
            nonce + ciphertext + _tag(mac_k, mac_r, nonce, ciphertext)
        ).decode(),
    }
    content = json.dumps(fields).encode()
    return hashlib.sha256(content).hexdigest(), content
