"""The stack's own CA and server certificate (tls.mode: selfsigned).

Files in <stack>/tls/: ca.pem, cert.pem (server certificate + CA), key.pem (0600).
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

from mailstack.stackdir import atomic_write

TLS_DIR = "tls"
CA_VALIDITY = datetime.timedelta(days=3650)
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
) -> TlsReport:
    """Create the CA once; (re)issue the server certificate when missing, expiring or renamed."""
    now = now or datetime.datetime.now(datetime.UTC)
    tls_dir = stack_dir / TLS_DIR
    tls_dir.mkdir(mode=0o755, exist_ok=True)
    ca_key_path = stack_dir / "secrets" / "ca.key"
    ca_cert_path = tls_dir / "ca.pem"
    created_ca = False
    if not (ca_key_path.exists() and ca_cert_path.exists()):
        ca_key = ec.generate_private_key(ec.SECP384R1())
        ca_cert = _issue_ca(ca_key, hostname, now)
        atomic_write(ca_key_path, _key_pem(ca_key), 0o600)
        atomic_write(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        created_ca = True
    ca_key_loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    assert isinstance(ca_key_loaded, ec.EllipticCurvePrivateKey)  # noqa: S101  # we wrote it
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())

    wanted = sorted({hostname, *names})
    cert_path = tls_dir / "cert.pem"
    current = _load_or_none(cert_path)
    if (
        not created_ca
        and current is not None
        and (tls_dir / "key.pem").exists()
        and _names_of(current) == wanted
        and current.not_valid_after_utc - now > RENEW_BEFORE
    ):
        return TlsReport(False, False, current.not_valid_after_utc)

    key = ec.generate_private_key(ec.SECP256R1())
    # The hostname is the subject's common name; every name is in subjectAltName.
    cert = _issue_server(
        key, [hostname, *(n for n in wanted if n != hostname)], ca_key_loaded, ca_cert, now
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
        serialization.Encoding.PEM
    )
    atomic_write(tls_dir / "key.pem", _key_pem(key), 0o600)
    atomic_write(cert_path, chain, 0o644)
    return TlsReport(created_ca, True, cert.not_valid_after_utc)


def _issue_ca(
    key: ec.EllipticCurvePrivateKey, hostname: str, now: datetime.datetime
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
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_or_none(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def _names_of(cert: x509.Certificate) -> list[str]:
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return sorted(str(value) for value in extension.value.get_values_for_type(x509.DNSName))
