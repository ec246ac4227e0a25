"""A served certificate chain, read: the issuers followed from the leaf to where the chain
ends (a public root, the stack's own CA, an untrusted root) or breaks off, and what each
certificate is (key, signature, names, dates, revocation URLs).

Pure: certificates in, facts out. Whether they are good enough is mailstack.tls.judgement's
business.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    NameOID,
    SignatureAlgorithmOID,
)

from mailstack.tls import dane

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
MAX_CHAIN = 8

# Where the chain ends.
ANCHOR_PUBLIC = "public"  # a root of the system trust store
ANCHOR_OWN_CA = "stack-ca"  # tls/ca.pem (selfsigned) or tls/trusted.pem (tls.ca_file)
ANCHOR_UNTRUSTED = "untrusted"  # a self-signed root nobody here trusts
ANCHOR_INCOMPLETE = "incomplete"  # an issuer is neither served nor a known root
ANCHOR_BROKEN = "broken"  # a signature does not verify, or a non-CA issues


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    issuer: str
    sha256: str
    not_before: str  # ISO 8601, UTC
    not_after: str
    key: str  # "ECDSA P-256", "RSA 2048"
    signature: str  # "ECDSA-SHA256", "RSA-SHA256", …
    is_ca: bool
    served: bool  # False: taken from a trust store, not sent by the server


@dataclass(frozen=True)
class Chain:
    certificates: tuple[CertificateInfo, ...]  # leaf first, up to the anchor when found
    anchor: str  # public, stack-ca, untrusted, incomplete, broken
    detail: str  # why it is incomplete or broken; empty otherwise

    @property
    def complete(self) -> bool:
        return self.anchor in (ANCHOR_PUBLIC, ANCHOR_OWN_CA, ANCHOR_UNTRUSTED)


@dataclass(frozen=True)
class Leaf:
    subject: str
    names: tuple[str, ...]  # subjectAltName DNS names and addresses
    not_after: str
    days_left: int
    key: str
    signature: str
    ocsp: tuple[str, ...]
    ca_issuers: tuple[str, ...]
    crl: tuple[str, ...]
    tlsa: str  # DANE's `3 1 1` data of its key (mailstack.tls.dane)


def parse_chain(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode()) if "-----BEGIN" in pem else []


def describe_key(certificate: x509.Certificate) -> tuple[str, bool]:
    """("ECDSA P-256", strong enough?) for the certificate's public key."""
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}", key.key_size >= MIN_RSA_BITS
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(
            key.curve.name, key.curve.name
        )
        return f"ECDSA {curve}", key.curve.key_size >= MIN_EC_BITS
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", True
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", True
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}", False  # no client of today accepts DSA
    return type(key).__name__, False


def describe_signature(certificate: x509.Certificate) -> tuple[str, bool]:
    """("ECDSA-SHA256", strong enough?) for the signature on the certificate."""
    oid = certificate.signature_algorithm_oid
    if oid == SignatureAlgorithmOID.ED25519:
        return "Ed25519", True
    if oid == SignatureAlgorithmOID.ED448:
        return "Ed448", True
    try:
        hash_algorithm = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return oid.dotted_string, False
    digest = hash_algorithm.name.upper().replace("-", "") if hash_algorithm else "?"
    if oid == SignatureAlgorithmOID.RSASSA_PSS:
        kind = "RSA-PSS"
    elif oid.dotted_string.startswith("1.2.840.10045.4."):
        kind = "ECDSA"
    elif oid.dotted_string.startswith("1.2.840.113549.1.1."):
        kind = "RSA"
    elif oid.dotted_string.startswith("2.16.840.1.101.3.4.3.") or oid.dotted_string.startswith(
        "1.2.840.10040.4."
    ):
        kind = "DSA"
    else:
        kind = oid.dotted_string
    return f"{kind}-{digest}", digest not in ("MD5", "SHA1", "?")


def certificate_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The subjectAltName DNS names and addresses (clients ignore the CN when a SAN exists)."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    names = [name.lower() for name in extension.value.get_values_for_type(x509.DNSName)]
    names += [str(address) for address in extension.value.get_values_for_type(x509.IPAddress)]
    return tuple(names)


def name_matches(name: str, pattern: str) -> bool:
    """RFC 6125: exact, or a wildcard standing for the whole left-most label."""
    name, pattern = name.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:] and "." in rest
    return name == pattern


def covers(certificate: x509.Certificate, name: str) -> bool:
    return any(name_matches(name, pattern) for pattern in certificate_names(certificate))


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def sha256_fingerprint(certificate: x509.Certificate) -> str:
    """The SHA-256 of the DER certificate, in hex: how two served certificates are told apart."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def _signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Issued by it: the names match and the signature verifies with its key. A signature
    cryptography no longer verifies (SHA-1, MD5) counts as issued by the named certificate:
    the weak signature is a finding of its own."""
    if not describe_signature(certificate)[1]:
        return certificate.issuer == issuer.subject
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def display_name(name: x509.Name) -> str:
    """`CN=…` when the name has a common name, else the whole name: how reports name a
    certificate."""
    common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={common[0].value!s}" if common else name.rfc4514_string() or "(empty)"


def iso_utc(moment: datetime.datetime) -> str:
    """ISO 8601 in UTC, to the second: how reports give a certificate's dates."""
    return moment.astimezone(datetime.UTC).isoformat(timespec="seconds")


def certificate_info(certificate: x509.Certificate, *, served: bool = True) -> CertificateInfo:
    return CertificateInfo(
        subject=display_name(certificate.subject),
        issuer=display_name(certificate.issuer),
        sha256=sha256_fingerprint(certificate),
        not_before=iso_utc(certificate.not_valid_before_utc),
        not_after=iso_utc(certificate.not_valid_after_utc),
        key=describe_key(certificate)[0],
        signature=describe_signature(certificate)[0],
        is_ca=_is_ca(certificate),
        served=served,
    )


def build_chain(  # noqa: PLR0911  # one return per way a chain can end
    served: Sequence[x509.Certificate],
    own_cas: Sequence[x509.Certificate],
    public_roots: Sequence[x509.Certificate],
) -> tuple[Chain, list[x509.Certificate]]:
    """Follow issuers from the leaf: first among the served certificates, then the known
    roots (the stack's CA, the system trust store). Returns the chain and its certificates."""
    own = {sha256_fingerprint(root) for root in own_cas}
    public = {sha256_fingerprint(root) for root in public_roots}
    path = [served[0]]
    infos = [certificate_info(served[0])]

    def done(anchor: str, detail: str = "") -> tuple[Chain, list[x509.Certificate]]:
        return Chain(tuple(infos), anchor, detail), path

    while len(path) <= MAX_CHAIN:
        current = path[-1]
        if current.issuer == current.subject and _signed_by(current, current):
            fingerprint = sha256_fingerprint(current)
            if fingerprint in own:
                return done(ANCHOR_OWN_CA)
            if fingerprint in public:
                return done(ANCHOR_PUBLIC)
            return done(
                ANCHOR_UNTRUSTED, f"{display_name(current.subject)} is a root nobody here trusts"
            )
        candidates = [(c, True) for c in served[1:] if c not in path]
        candidates += [(c, False) for c in [*own_cas, *public_roots]]
        named = [(c, was_served) for c, was_served in candidates if c.subject == current.issuer]
        issuer = next(((c, s) for c, s in named if _signed_by(current, c)), None)
        if issuer is None:
            if named:
                return done(
                    ANCHOR_BROKEN,
                    f"the signature on {display_name(current.subject)} does not verify with "
                    f"{display_name(current.issuer)}'s key",
                )
            return done(
                ANCHOR_INCOMPLETE,
                f"the issuer {display_name(current.issuer)} of {display_name(current.subject)} "
                "is neither served nor a known root",
            )
        certificate, was_served = issuer
        if not _is_ca(certificate):
            return done(
                ANCHOR_BROKEN, f"{display_name(certificate.subject)} is not a CA certificate"
            )
        path.append(certificate)
        infos.append(certificate_info(certificate, served=was_served))
        if not was_served:  # a trust anchor ends the chain
            fingerprint = sha256_fingerprint(certificate)
            return done(ANCHOR_OWN_CA if fingerprint in own else ANCHOR_PUBLIC)
    return done(ANCHOR_BROKEN, f"longer than {MAX_CHAIN} certificates")


def _urls(
    certificate: x509.Certificate,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(OCSP, CA issuers, CRL distribution points) the certificate names."""
    ocsp: list[str] = []
    issuers: list[str] = []
    crl: list[str] = []
    try:
        access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
        for description in access.value:
            location = description.access_location
            if not isinstance(location, x509.UniformResourceIdentifier):
                continue
            if description.access_method == AuthorityInformationAccessOID.OCSP:
                ocsp.append(location.value)
            elif description.access_method == AuthorityInformationAccessOID.CA_ISSUERS:
                issuers.append(location.value)
    except x509.ExtensionNotFound:
        pass
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
        for point in points.value:
            crl += [
                name.value
                for name in point.full_name or []
                if isinstance(name, x509.UniformResourceIdentifier)
            ]
    except x509.ExtensionNotFound:
        pass
    return tuple(ocsp), tuple(issuers), tuple(crl)


def leaf_info(certificate: x509.Certificate, now: datetime.datetime) -> Leaf:
    ocsp, issuers, crl = _urls(certificate)
    left = certificate.not_valid_after_utc - now
    return Leaf(
        subject=display_name(certificate.subject),
        names=certificate_names(certificate),
        not_after=iso_utc(certificate.not_valid_after_utc),
        days_left=left.days,  # floor: -1 once expired
        key=describe_key(certificate)[0],
        signature=describe_signature(certificate)[0],
        ocsp=ocsp,
        ca_issuers=issuers,
        crl=crl,
        tlsa=dane.tlsa_data(dane.spki_sha256(certificate.public_key())),
    )
