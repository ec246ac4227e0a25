"""The stack's certificate: its own CA (tls.mode: selfsigned), or one installed from
elsewhere (manual: the operator's files; acme: mailstack.tls.acme).

Files in <stack>/tls/: ca.pem (the stack's CA), cert.pem (server certificate + chain),
key.pem (0600), trusted.pem (tls.ca_file: the CAs that verify a certificate from elsewhere).
The CA's private key is a secret: secrets/ca.key (0600), never mounted into a container.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailstack.errors import UsageError
from mailstack.stack.stackdir import atomic_write

TLS_DIR = "tls"
TRUSTED = "trusted.pem"
# Two years, renewed (same key) 90 days before the end: a leaked copy of an old CA
# certificate stops mattering within two years, and clients that imported ca.pem keep
# verifying across a renewal until their copy expires.
CA_VALIDITY = datetime.timedelta(days=730)
CA_RENEW_BEFORE = datetime.timedelta(days=90)
SERVER_VALIDITY = datetime.timedelta(days=365)  # Mozilla intermediate: at most 366
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class TlsReport:
    created_ca: bool
    issued_server: bool
    not_after: datetime.datetime


def ensure_selfsigned(
    stack_dir: Path,
    hostname: str,
    names: tuple[str, ...] = (),
    now: datetime.datetime | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> TlsReport:
    """Create the CA once; (re)issue the server certificate when missing, expiring or renamed,
    or for another key (`key`: a DANE rollover's). A reissue keeps the served key unless given
    one: DANE's TLSA records name it (mailstack.tls.dane)."""
    now = now or datetime.datetime.now(datetime.UTC)
    tls_dir = stack_dir / TLS_DIR
    tls_dir.mkdir(mode=0o755, exist_ok=True)
    ca_key_path = stack_dir / "secrets" / "ca.key"
    ca_cert_path = tls_dir / "ca.pem"
    wanted = sorted({hostname, *names})
    created_ca = False
    if not ca_key_path.exists():
        atomic_write(ca_key_path, key_pem(ec.generate_private_key(ec.SECP384R1())), 0o600)
        ca_cert_path.unlink(missing_ok=True)
    ca_key_loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    assert isinstance(ca_key_loaded, ec.EllipticCurvePrivateKey)  # noqa: S101  # we wrote it
    ca_cert = load_certificate(ca_cert_path)
    if ca_cert is None or ca_needs_reissue(ca_cert, wanted, now):
        # The same key: certificates it issued before still verify against the new one.
        ca_cert = _issue_ca(ca_key_loaded, hostname, wanted, now)
        atomic_write(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        created_ca = True
    cert_path = tls_dir / "cert.pem"
    current = load_certificate(cert_path)
    if (
        not created_ca
        and current is not None
        and (tls_dir / "key.pem").exists()
        and current.issuer == ca_cert.subject  # not one from elsewhere (acme, manual) before
        and names_of(current) == wanted
        and current.not_valid_after_utc - now > RENEW_BEFORE
        and (key is None or same_key(current.public_key(), key.public_key()))
    ):
        return TlsReport(False, False, current.not_valid_after_utc)

    key = key or server_key(stack_dir)
    # The hostname is the subject's common name; every name is in subjectAltName.
    cert = _issue_server(
        key, [hostname, *(n for n in wanted if n != hostname)], ca_key_loaded, ca_cert, now
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
        serialization.Encoding.PEM
    )
    atomic_write(tls_dir / "key.pem", key_pem(key), 0o600)
    atomic_write(cert_path, chain, 0o644)
    return TlsReport(created_ca, True, cert.not_valid_after_utc)


def server_key(root: Path) -> ec.EllipticCurvePrivateKey:
    """The key a new certificate is issued for: the one the daemons serve (tls/key.pem) when
    a certificate can be issued for it here (EC; an operator's RSA key from tls.mode manual
    is not reused), else a new P-256 key."""
    try:
        key = serialization.load_pem_private_key(
            (root / TLS_DIR / "key.pem").read_bytes(), password=None
        )
    except (OSError, ValueError):
        key = None
    return (
        key
        if isinstance(key, ec.EllipticCurvePrivateKey)
        else ec.generate_private_key(ec.SECP256R1())
    )


def same_key(one: object, other: object) -> bool:
    return _public_der(one) == _public_der(other)


def ca_needs_reissue(ca_cert: x509.Certificate, names: list[str], now: datetime.datetime) -> bool:
    """True when the CA is due, or its name constraints are not exactly the served names
    (a CA from before constraints, or a domain added or removed since)."""
    if ca_cert.not_valid_after_utc - now <= CA_RENEW_BEFORE:
        return True
    return permitted_names(ca_cert) != sorted(names)


def permitted_names(ca_cert: x509.Certificate) -> list[str] | None:
    """The DNS names a CA may issue for (its name constraints), None when unconstrained."""
    try:
        constraints = ca_cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    return sorted(
        subtree.value
        for subtree in constraints.permitted_subtrees or ()
        if isinstance(subtree, x509.DNSName)
    )


def _name_constraints(names: list[str]) -> x509.NameConstraints:
    """Exactly the names the stack serves (RFC 5280: each with its subdomains), no IP
    address at all: a stolen CA key cannot mint a certificate for a bank, nor for another
    host of the operator's own domains."""
    return x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(name) for name in names],
        excluded_subtrees=[
            x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
            x509.IPAddress(ipaddress.ip_network("::/0")),
        ],
    )


def _issue_ca(
    key: ec.EllipticCurvePrivateKey, hostname: str, names: list[str], now: datetime.datetime
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mailstack CA for {hostname}")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_name_constraints(names), critical=True)
        # Server certificates only (browsers and OpenSSL honour EKU on a CA).
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )


def _issue_server(
    key: ec.EllipticCurvePrivateKey,
    names: list[str],
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    now: datetime.datetime,
) -> x509.Certificate:
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_certificate(path: Path) -> x509.Certificate | None:
    """The first certificate of a PEM file, or None when it is missing or unreadable."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def names_of(cert: x509.Certificate) -> list[str]:
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return sorted(str(value) for value in extension.value.get_values_for_type(x509.DNSName))


def install_chain(root: Path, chain: bytes, key: bytes) -> x509.Certificate:
    """Put a PEM chain (certificate first) and its key where the daemons read them; the key
    must belong to the certificate. Unchanged files are not rewritten."""
    certificate = matching_certificate(chain, key)
    tls_dir = root / TLS_DIR
    tls_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name, data, mode in (("key.pem", key, 0o600), ("cert.pem", chain, 0o644)):
        if _read_or_none(tls_dir / name) != data:
            atomic_write(tls_dir / name, data, mode)
    return certificate


def install_manual(
    root: Path, cert_file: str, key_file: str, hostname: str, now: datetime.datetime | None = None
) -> x509.Certificate:
    """tls.mode manual: check the operator's files, then install them. One-line errors."""
    now = now or datetime.datetime.now(datetime.UTC)
    chain = _read_pem("tls.cert_file", cert_file, b"CERTIFICATE")
    key = _read_pem("tls.key_file", key_file, b"PRIVATE KEY")
    try:
        certificate = matching_certificate(chain, key)
    except ValueError as error:
        raise UsageError(
            f"tls.cert_file: {cert_file}: {error}",
            hint="the certificate file must hold the PEM chain (the server certificate first) "
            "and tls.key_file its unencrypted PEM key",
        ) from None
    if hostname not in names_of(certificate):
        raise UsageError(
            f"tls.cert_file: {cert_file} does not cover the hostname {hostname} "
            f"(it covers {', '.join(names_of(certificate)) or 'no DNS name'})",
        )
    if certificate.not_valid_after_utc <= now:
        raise UsageError(
            f"tls.cert_file: {cert_file} expired on {certificate.not_valid_after_utc:%Y-%m-%d}"
        )
    return install_chain(root, chain, key)


def matching_certificate(chain: bytes, key: bytes) -> x509.Certificate:
    """The chain's first certificate, if the key is its own (ValueError otherwise)."""
    certificate = x509.load_pem_x509_certificate(chain)
    private = serialization.load_pem_private_key(key, password=None)
    if not same_key(private.public_key(), certificate.public_key()):
        raise ValueError("the private key does not belong to the certificate")
    return certificate


def install_trusted(root: Path, ca_file: str | None) -> None:
    """tls.ca_file copied to tls/trusted.pem (what the webmail and the MTA-STS resolver trust)."""
    target = root / TLS_DIR / TRUSTED
    if ca_file is None:
        target.unlink(missing_ok=True)
        return
    bundle = _read_pem("tls.ca_file", ca_file, b"CERTIFICATE")
    if _read_or_none(target) != bundle:
        atomic_write(target, bundle, 0o644)


def _read_pem(key: str, path: str, kind: bytes) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"{key}: {path} cannot be read ({error.strerror})") from None
    if b"-----BEGIN " not in data or kind not in data:
        raise UsageError(f"{key}: {path} is not a PEM file with a {kind.decode().lower()}")
    return data


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _public_der(key: object) -> bytes:
    if not hasattr(key, "public_bytes"):
        raise ValueError("the key type is not supported")
    return key.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
