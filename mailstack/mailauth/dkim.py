"""DKIM keys: one RSA 2048 key per mail domain, made by mailstack, used by rspamd to sign.

Layout in the stack directory (the directory 0700, every file 0600; the rspamd container
copies them at start to a tmpfs that only its _rspamd group can read):

    dkim/<domain>.<selector>.key   PEM private key (PKCS#8), one per domain and selector
    dkim/selectors.map             "<domain> <selector>" per line: the key rspamd signs with

rspamd reads selectors.map as its `selector_map` and finds the key by the path template
`<domain>.<selector>.key`. Every key on disk is published (in the sandbox zone, and by
`mailstack dkim show`), so an old selector stays verifiable while a newer one takes over.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailstack.errors import MailstackError, UsageError
from mailstack.stack.stackdir import atomic_write

DKIM_DIR = "dkim"
SELECTORS_FILE = "selectors.map"
KEY_SUFFIX = ".key"
RSA_BITS = 2048
# A DNS TXT record is a list of strings of at most 255 bytes each.
TXT_CHUNK = 255
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_DOMAIN = re.compile(r"^[a-z0-9.-]{1,253}\Z")


@dataclass(frozen=True)
class DkimKey:
    """The public half of one domain's DKIM key and where it is published."""

    domain: str
    selector: str
    key_type: str  # "rsa" or "ed25519"
    bits: int
    public_key: str  # base64 of the DER SubjectPublicKeyInfo (the p= tag)
    active: bool  # rspamd signs with this one

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def txt(self) -> str:
        """The TXT record's value as one string (what verifiers read)."""
        return f"v=DKIM1; k={self.key_type}; p={self.public_key}"

    @property
    def zone_data(self) -> str:
        """The TXT data in zone-file form: quoted strings of at most 255 characters."""
        text = self.txt
        chunks = [text[i : i + TXT_CHUNK] for i in range(0, len(text), TXT_CHUNK)]
        return " ".join(f'"{chunk}"' for chunk in chunks)

    @property
    def zone_line(self) -> str:
        return f"{self.record_name}. IN TXT ( {self.zone_data} )"

    def __str__(self) -> str:
        state = "active" if self.active else "published, not signing"
        return (
            f"{self.domain}  selector {self.selector}  {self.key_type} {self.bits} bits  "
            f"({state})\n{self.zone_line}"
        )


@dataclass(frozen=True)
class KeyResult:
    key: DkimKey
    created: bool


def new_selector(now: datetime.datetime | None = None, prefix: str = "ms") -> str:
    """A selector naming the key's creation date, e.g. ms20250314 (rotation adds new ones)."""
    moment = now or datetime.datetime.now(datetime.UTC)
    return f"{prefix}{moment:%Y%m%d}"


def ensure_key(root: Path, domain: str, now: datetime.datetime | None = None) -> KeyResult:
    """The domain's signing key: made (RSA 2048, 0600) and recorded when it has none yet."""
    _check_domain(domain)
    with _locked(root) as directory:
        selectors = read_selectors(root)
        selector = selectors.get(domain)
        if selector is not None:
            path = directory / key_file_name(domain, selector)
            if not path.exists():
                raise MailstackError(
                    f"DKIM key {DKIM_DIR}/{path.name} is missing, but {DKIM_DIR}/"
                    f"{SELECTORS_FILE} says {domain} signs with selector {selector}",
                    hint="restore the key file from a backup; or delete the domain's line in "
                    f"{DKIM_DIR}/{SELECTORS_FILE} to make a new key (publish its new record)",
                )
            return KeyResult(_public(domain, selector, path, active=True), created=False)
        selector = new_selector(now)
        path = directory / key_file_name(domain, selector)
        created = not path.exists()  # an orphan from an interrupted run is taken as it is
        if created:
            _generate(path)
        selectors[domain] = selector
        _write_selectors(root, selectors)
        return KeyResult(_public(domain, selector, path, active=True), created=created)


def signing_domains(root: Path) -> list[str]:
    """The mail domains the stack signs for (a key each, made by `domain add`)."""
    return sorted(read_selectors(root))


def load_keys(root: Path) -> list[DkimKey]:
    """Every key in dkim/ (active or not), sorted by domain and selector."""
    directory = root / DKIM_DIR
    if not directory.is_dir():
        return []
    active = read_selectors(root)
    keys: list[DkimKey] = []
    for path in sorted(directory.glob(f"*{KEY_SUFFIX}")):
        domain, _, selector = path.name.removesuffix(KEY_SUFFIX).rpartition(".")
        if not (_DOMAIN.match(domain) and _SELECTOR.match(selector)):
            continue  # not a file of ours
        keys.append(_public(domain, selector, path, active=active.get(domain) == selector))
    return keys


def show(root: Path, domain: str) -> list[DkimKey]:
    """The domain's published keys, the active one first."""
    keys = [key for key in load_keys(root) if key.domain == domain]
    if not keys:
        raise UsageError(
            f"domain {domain} has no DKIM key",
            hint=f"keys are made by `mailstack domain add {domain}` and `mailstack render`",
        )
    return sorted(keys, key=lambda key: (not key.active, key.selector))


def read_selectors(root: Path) -> dict[str, str]:
    """dkim/selectors.map as {domain: selector}; blank lines and # comments are skipped."""
    path = root / DKIM_DIR / SELECTORS_FILE
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise MailstackError(f"{DKIM_DIR}/{SELECTORS_FILE} cannot be read ({e})") from None
    selectors: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].split()
        if not content:
            continue
        if len(content) != 2 or not (_DOMAIN.match(content[0]) and _SELECTOR.match(content[1])):
            raise MailstackError(
                f"{DKIM_DIR}/{SELECTORS_FILE}:{number}: expected '<domain> <selector>'",
                hint="fix or delete the line",
            )
        selectors[content[0]] = content[1]
    return selectors


# --- rotation: a new key published beside the active one, then the switch, then retire ------

_ROTATION_SELECTOR = re.compile(r"^ms(?P<date>\d{8})(?:-(?P<serial>\d{1,4}))?\Z")


def selector_order(selector: str) -> tuple[str, int, str]:
    """Sort key: the creation order of mailstack's selectors (ms20250314 < ms20250314-2)."""
    match = _ROTATION_SELECTOR.match(selector)
    if match is None:
        return ("", 0, selector)  # someone else's naming: older than any of ours
    return (match["date"], int(match["serial"] or 1), selector)


def next_selector(taken: set[str], now: datetime.datetime | None = None) -> str:
    """A new selector for today: msYYYYMMDD, then msYYYYMMDD-2, -3, ... if rotated again."""
    base = new_selector(now)
    candidate, serial = base, 1
    while candidate in taken:
        serial += 1
        candidate = f"{base}-{serial}"
    return candidate


def pending_key(keys: list[DkimKey]) -> DkimKey | None:
    """The newest key that is published but not yet signing (None: no rotation under way).

    keys: one domain's keys. A rotation's new key sorts after the active one; older inactive
    keys are the ones a rotation left behind, waiting for `dkim retire`."""
    active = next((key for key in keys if key.active), None)
    floor = selector_order(active.selector) if active else ("", -1, "")
    newer = [key for key in keys if not key.active and selector_order(key.selector) > floor]
    return max(newer, key=lambda key: selector_order(key.selector), default=None)


ACTIVE, PENDING, RETIRING = "active", "pending", "retiring"


def key_states(keys: list[DkimKey]) -> dict[str, str]:
    """{selector: state} for one domain's keys: the active one, a rotation's new key waiting
    to take over (pending), and keys it replaced that are still published (retiring)."""
    pending = pending_key(keys)
    return {
        key.selector: ACTIVE if key.active else PENDING if key == pending else RETIRING
        for key in keys
    }


def create_rotation_key(root: Path, domain: str, now: datetime.datetime | None = None) -> DkimKey:
    """A new key for the domain, published (it is on disk) but not signing yet."""
    _check_domain(domain)
    with _locked(root) as directory:
        taken = {key.selector for key in load_keys(root) if key.domain == domain}
        taken |= {read_selectors(root).get(domain, "")}
        selector = next_selector(taken, now)
        path = directory / key_file_name(domain, selector)
        _generate(path)
        return _public(domain, selector, path, active=False)


def activate(root: Path, domain: str, selector: str) -> DkimKey:
    """Make rspamd sign the domain's mail with this (existing) key from its next start."""
    _check_domain(domain)
    with _locked(root) as directory:
        path = directory / key_file_name(domain, _checked_selector(selector))
        if not path.exists():
            raise UsageError(f"domain {domain} has no DKIM key with selector {selector}")
        key = _public(domain, selector, path, active=True)
        selectors = read_selectors(root)
        selectors[domain] = selector
        _write_selectors(root, selectors)
        return key


def retire(root: Path, domain: str, selector: str | None = None) -> list[DkimKey]:
    """Delete the domain's old keys (older than the active one), or the one named.

    The active key is never deleted; a key newer than the active one (a rotation not yet
    switched) only when named."""
    _check_domain(domain)
    with _locked(root) as directory:
        keys = [key for key in load_keys(root) if key.domain == domain]
        active = next((key for key in keys if key.active), None)
        if selector is not None:
            _checked_selector(selector)
            chosen = [key for key in keys if key.selector == selector]
            if not chosen:
                raise UsageError(f"domain {domain} has no DKIM key with selector {selector}")
            if chosen[0].active:
                raise UsageError(
                    f"selector {selector} is the one {domain} signs with; it cannot be retired",
                    hint=f"rotate first: mailstack dkim rotate {domain}",
                )
        else:
            floor = selector_order(active.selector) if active else ("", -1, "")
            chosen = [
                key for key in keys if not key.active and selector_order(key.selector) < floor
            ]
            if not chosen:
                raise UsageError(
                    f"domain {domain} has no retired-but-published DKIM key to remove",
                    hint="see mailstack dkim show " + domain,
                )
        for key in chosen:
            (directory / key_file_name(domain, key.selector)).unlink()
        return chosen


# --- Ed25519: an optional second signature (policy.dkim.ed25519) ------------------------------
# dkim/ed25519/<domain>.<selector>.key, 0600: base64 of the 32-byte seed and the 32-byte public
# key, the form rspamd reads (what `rspamadm dkim_keygen -t ed25519` prints). Kept out of
# dkim/*.key, which are the RSA selectors that rotation manages. One key per domain.

ED25519_DIR = "ed25519"


def ensure_ed25519_key(root: Path, domain: str, now: datetime.datetime | None = None) -> DkimKey:
    """The domain's Ed25519 key, made when it has none yet."""
    _check_domain(domain)
    with _locked(root) as directory:
        existing = [key for key in load_ed25519_keys(root) if key.domain == domain]
        if existing:
            return existing[0]
        keys = directory / ED25519_DIR
        keys.mkdir(mode=0o700, exist_ok=True)
        selector = new_selector(now, prefix="ed")
        seed = secrets.token_bytes(32)  # an Ed25519 private key is 32 random bytes
        path = keys / key_file_name(domain, selector)
        atomic_write(path, base64.b64encode(seed + _ed25519_public_bytes(seed)) + b"\n", 0o600)
        return _ed25519_public(domain, selector, path)


def load_ed25519_keys(root: Path) -> list[DkimKey]:
    directory = root / DKIM_DIR / ED25519_DIR
    if not directory.is_dir():
        return []
    keys = []
    for path in sorted(directory.glob(f"*{KEY_SUFFIX}")):
        domain, _, selector = path.name.removesuffix(KEY_SUFFIX).rpartition(".")
        if _DOMAIN.match(domain) and _SELECTOR.match(selector):
            keys.append(_ed25519_public(domain, selector, path))
    return keys


def published_keys(root: Path, *, ed25519_on: bool) -> list[DkimKey]:
    """What DNS must carry: every RSA key, and the Ed25519 keys when they sign."""
    return load_keys(root) + (load_ed25519_keys(root) if ed25519_on else [])


def _ed25519_public(domain: str, selector: str, path: Path) -> DkimKey:
    try:
        raw = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (OSError, ValueError) as e:
        raise MailstackError(f"DKIM key {DKIM_DIR}/{ED25519_DIR}/{path.name}: {e}") from None
    if len(raw) != 64 or _ed25519_public_bytes(raw[:32]) != raw[32:]:
        raise MailstackError(
            f"DKIM key {DKIM_DIR}/{ED25519_DIR}/{path.name} is not an Ed25519 key "
            "(base64 of the seed and the public key)",
            hint="restore it from a backup, or delete it to make a new one (publish its record)",
        )
    return DkimKey(
        domain=domain,
        selector=selector,
        key_type="ed25519",
        bits=256,
        public_key=base64.b64encode(raw[32:]).decode("ascii"),
        active=True,
    )


def _ed25519_public_bytes(seed: bytes) -> bytes:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def txt_strings_match(expected: DkimKey, answers: list[str]) -> bool:
    """True when one TXT record (its strings joined) carries the key's public key."""
    for answer in answers:
        tags = {}
        for part in answer.split(";"):
            name, separator, value = part.partition("=")
            if separator:
                tags[name.strip()] = "".join(value.split())
        if tags.get("v", "DKIM1") == "DKIM1" and tags.get("p") == expected.public_key:
            return True
    return False


def _checked_selector(selector: str) -> str:
    if not _SELECTOR.match(selector):
        raise UsageError(
            f"SELECTOR: {selector[:80]!r} is not a DKIM selector (letters, digits, '-')"
        )
    return selector


def _generate(path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(path, pem, 0o600)


def key_file_name(domain: str, selector: str) -> str:
    return f"{domain}.{selector}{KEY_SUFFIX}"


def _write_selectors(root: Path, selectors: dict[str, str]) -> None:
    lines = [
        "# Written by mailstack: the DKIM selector each domain signs with (rspamd's",
        "# selector_map). The key is <domain>.<selector>.key beside this file.",
        *(f"{domain} {selector}" for domain, selector in sorted(selectors.items())),
    ]
    atomic_write(root / DKIM_DIR / SELECTORS_FILE, ("\n".join(lines) + "\n").encode(), 0o600)


def _public(domain: str, selector: str, path: Path, *, active: bool) -> DkimKey:
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as e:
        raise MailstackError(
            f"DKIM key {DKIM_DIR}/{path.name} cannot be read ({e})",
            hint="restore it from a backup",
        ) from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise MailstackError(f"DKIM key {DKIM_DIR}/{path.name} is not an RSA key")
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKey(
        domain=domain,
        selector=selector,
        key_type="rsa",
        bits=private.key_size,
        public_key=base64.b64encode(der).decode("ascii"),
        active=active,
    )


def _check_domain(domain: str) -> None:
    # Domains arrive normalised (config_values.normalize_domain); this guards the file names.
    if not _DOMAIN.match(domain) or ".." in domain or domain.startswith((".", "-")):
        raise UsageError(f"DKIM: {domain[:80]!r} is not a normalised domain name")


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[Path]:
    """dkim/ (created 0700) held under an exclusive lock: two `domain add` runs do not race."""
    directory = root / DKIM_DIR
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    descriptor = os.open(directory / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield directory
    finally:
        os.close(descriptor)  # releases the lock
