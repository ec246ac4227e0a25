"""DANE for inbound mail (RFC 7672): the TLSA records of port 25, judged (pure).

A sending server that validates DNSSEC and finds TLSA records at `_25._tcp.<hostname>`
requires TLS and a server key one of them matches; otherwise it keeps the mail queued. So a
key change must never come before its record: the stack keeps its server key across
renewals (tls.mode selfsigned and acme alike) and generates the next key ahead of time
(secrets/tls_next.key, never mounted into a container). `dns records` prints both as
`3 1 1` records (DANE-EE, SubjectPublicKeyInfo, SHA-256: a renewal with the same key
needs no DNS change), and `tls rollover` (mailstack.tls.rollover) switches to the next key
only once its record is published.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from mailstack.stack.stackdir import atomic_write
from mailstack.tls.certs import TLS_DIR, load_certificate
from mailstack.verdict import FAIL, PASS, WARN, Verdict

DANE_EE_SPKI_SHA256 = "3 1 1"  # usage DANE-EE, selector SubjectPublicKeyInfo, SHA-256
NEXT_KEY = Path("secrets") / "tls_next.key"
# What DNS says of port 25's TLSA records: (their data, validated, the zone is signed).
TlsaAnswer = tuple[list[str], bool, bool]


def spki_sha256(public_key: PublicKeyTypes) -> str:
    """The SHA-256 of a public key's DER SubjectPublicKeyInfo, in hex."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def tlsa_data(digest: str) -> str:
    return f"{DANE_EE_SPKI_SHA256} {digest}"


def tlsa_name(hostname: str) -> str:
    """Where senders look for the TLSA records of the MX host's port 25."""
    return f"_25._tcp.{hostname}"


def normalised(rdata: str) -> str:
    """TLSA data as compared: the three numbers, then the hex in one lower-case word
    (zone files and resolvers may split and upper-case it)."""
    fields = rdata.split()
    return " ".join([*fields[:3], "".join(fields[3:]).lower()])


@dataclass(frozen=True)
class DaneKeys:
    """The digests `dns records` publishes: the served key's, and the next key's (None in
    tls.mode manual: that key is the operator's)."""

    current: str
    next: str | None

    @property
    def records(self) -> tuple[str, ...]:
        return tuple(tlsa_data(digest) for digest in (self.current, self.next) if digest)


def load_keys(root: Path) -> DaneKeys | None:
    """The served certificate's key and the pre-generated next key; None before the stack
    has a certificate."""
    served = load_certificate(root / TLS_DIR / "cert.pem")
    if served is None:
        return None
    upcoming = load_next_key(root)
    return DaneKeys(
        spki_sha256(served.public_key()),
        spki_sha256(upcoming.public_key()) if upcoming is not None else None,
    )


def load_next_key(root: Path) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key((root / NEXT_KEY).read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def ensure_next_key(root: Path) -> ec.EllipticCurvePrivateKey:
    """The next server key, generated once (P-256, like the served one) and kept until a
    rollover puts it in service."""
    existing = load_next_key(root)
    if existing is not None:
        return existing
    return replace_next_key(root)


def replace_next_key(root: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(root / NEXT_KEY, pem, 0o600)
    return key


@dataclass(frozen=True)
class TlsaVerdict:
    verdict: Verdict
    found: str
    fix: str  # one line; empty when it passes


def judge(  # noqa: PLR0911  # one verdict per case
    published: Sequence[str],
    *,
    validated: bool,
    zone_signed: bool,
    keys: DaneKeys,
    hostname: str,
) -> TlsaVerdict:
    """What senders make of the TLSA records published for port 25. `validated`: the answer
    carried DNSSEC's AD bit; `zone_signed`: the hostname's own address did."""
    records = [normalised(rdata) for rdata in published]
    name = tlsa_name(hostname)
    publish = "; ".join(f"{name}. IN TLSA {data}" for data in keys.records)
    if not records:
        if zone_signed:
            return TlsaVerdict(
                WARN,
                "none (the zone is DNSSEC-signed: DANE could require TLS with this key)",
                f"publish {publish}",
            )
        return TlsaVerdict(PASS, "none (the zone is not DNSSEC-signed: DANE does not apply)", "")
    found = "; ".join(records)
    if not validated:
        return TlsaVerdict(
            WARN,
            f"{found} (not DNSSEC-validated: senders ignore them)",
            "sign the zone with DNSSEC and publish its DS record at the parent",
        )
    if tlsa_data(keys.current) not in records:
        others = [r for r in records if not r.startswith(f"{DANE_EE_SPKI_SHA256} ")]
        if others:  # e.g. DANE-TA (2 x x) of a CA: not judged here
            return TlsaVerdict(
                WARN,
                f"{found} (no 3 1 1 record of the served key; other kinds are not judged)",
                f"publish {name}. IN TLSA {tlsa_data(keys.current)}",
            )
        return TlsaVerdict(
            FAIL,
            f"{found} (none matches the served key: DANE senders keep mail queued)",
            f"publish {name}. IN TLSA {tlsa_data(keys.current)}",
        )
    if keys.next is not None and tlsa_data(keys.next) not in records:
        return TlsaVerdict(
            WARN,
            f"{found} (the next key's record is missing)",
            f"publish {name}. IN TLSA {tlsa_data(keys.next)} before `mailstack tls rollover`",
        )
    return TlsaVerdict(PASS, found, "")
