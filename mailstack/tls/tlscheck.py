"""`check tls`: what every TLS endpoint of the running stack serves, judged.

For each endpoint (SMTP 25/587 and ManageSieve 4190 and IMAP 143 with STARTTLS, 465, 993,
HTTPS 443) the check connects as a client would, with SNI, and reports the certificate chain
(complete up to a root? a publicly trusted one or the stack's own CA?), the names the leaf
covers against the names it must cover, days to expiry, key and signature algorithm, the
revocation URLs the certificate names, and which TLS versions the server accepts.

The handshakes go through one adapter, `openssl s_client` (Python 3.11's ssl cannot hand
back the served chain, and can no longer speak TLS 1.0 to find out whether a server would).
Everything else is pure: `evaluate_endpoint` takes PEM text and handshake outcomes and
returns findings, so it is tested with certificates made in the test. Nothing is fetched
from the network: OCSP and CRL URLs are reported, not queried.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    NameOID,
    SignatureAlgorithmOID,
)

from mailstack.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_OWN_CA,
    MailstackError,
)
from mailstack.mailauth.dnscheck import mail_domains
from mailstack.mailauth.dnsrecords import AUTOCONFIG_HOSTS, MTA_STS_HOST
from mailstack.stack import Stack
from mailstack.stack.config import Config
from mailstack.tls import acme
from mailstack.tls.acme import AcmeState
from mailstack.tls.handshakes import PROTOCOLS, Endpoint, Handshake, Probe, openssl_probe
from mailstack.verdict import FAIL, WARN, Verdict, worst

# Renewal (ACME, and the self-signed certificate on render/up) happens 30 days before
# expiry; a certificate under 21 days has missed over a week of renewals.
WARN_DAYS = 21
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
REQUIRED_PROTOCOLS = ("TLS1.2", "TLS1.3")
MAX_CHAIN = 8

# Where the chain ends.
ANCHOR_PUBLIC = "public"  # a root of the system trust store
ANCHOR_OWN_CA = "stack-ca"  # tls/ca.pem (selfsigned) or tls/trusted.pem (tls.ca_file)
ANCHOR_UNTRUSTED = "untrusted"  # a self-signed root nobody here trusts
ANCHOR_INCOMPLETE = "incomplete"  # an issuer is neither served nor a known root
ANCHOR_BROKEN = "broken"  # a signature does not verify, or a non-CA issues


# --- the report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    verdict: Verdict  # FAIL or WARN
    what: str
    fix: str  # one line


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
class NameCheck:
    name: str
    covered: bool
    certificate: str  # sha256 of the leaf served for this SNI name; empty when none


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


@dataclass(frozen=True)
class EndpointReport:
    name: str
    address: str
    port: int
    starttls: str | None
    protocols: dict[str, bool]  # TLS1.0 … TLS1.3: did that handshake succeed
    leaf: Leaf | None
    chain: Chain | None
    names: tuple[NameCheck, ...]
    ocsp_stapled: bool
    findings: tuple[Finding, ...]

    @property
    def verdict(self) -> Verdict:
        return worst(finding.verdict for finding in self.findings)


@dataclass(frozen=True)
class TlsCheckReport:
    endpoints: tuple[EndpointReport, ...]
    acme: AcmeState | None
    findings: tuple[Finding, ...]  # not tied to one endpoint (ACME renewal)

    @property
    def ok(self) -> bool:
        return all(f.verdict != FAIL for f in self.all_findings())

    @property
    def own_ca(self) -> bool:
        return any(
            report.chain is not None and report.chain.anchor == ANCHOR_OWN_CA
            for report in self.endpoints
        )

    @property
    def exit_code(self) -> int:
        if not self.ok:
            return EXIT_FAILED
        return EXIT_OWN_CA if self.own_ca else EXIT_OK

    def all_findings(self) -> list[Finding]:
        return [*self.findings, *(f for report in self.endpoints for f in report.findings)]


# --- the endpoints of a stack ---------------------------------------------------------------------

# (port key, STARTTLS protocol); the order `check tls` reports them in.
_SERVICES: tuple[tuple[str, str | None], ...] = (
    ("smtp", "smtp"),
    ("submissions", None),
    ("submission", "smtp"),
    ("imap", "imap"),
    ("imaps", None),
    ("managesieve", "sieve"),
    ("https", None),
)


def web_names(domain: str) -> tuple[str, ...]:
    """The HTTPS names of one mail domain (nginx's mta-sts and autoconfig server blocks)."""
    return tuple(f"{host}.{domain}" for host in (MTA_STS_HOST, *AUTOCONFIG_HOSTS))


def stack_endpoints(config: Config, domains: Sequence[str]) -> tuple[Endpoint, ...]:
    """Every TLS endpoint the stack publishes, at its bind address (loopback for 0.0.0.0)."""
    bind = ipaddress.ip_address(config.network.bind_ipv4)
    address = "127.0.0.1" if bind.is_unspecified else str(bind)
    ports = config.network.ports
    endpoints = []
    for key, starttls in _SERVICES:
        names: tuple[str, ...] = (config.hostname,)
        if key == "https":
            names += tuple(name for domain in domains for name in web_names(domain))
        endpoints.append(Endpoint(key, address, getattr(ports, key), starttls, names))
    return tuple(endpoints)


# --- pure evaluation ------------------------------------------------------------------------------


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


def _fingerprint(certificate: x509.Certificate) -> str:
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


def _name(name: x509.Name) -> str:
    common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={common[0].value!s}" if common else name.rfc4514_string() or "(empty)"


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="seconds")


def certificate_info(certificate: x509.Certificate, *, served: bool = True) -> CertificateInfo:
    return CertificateInfo(
        subject=_name(certificate.subject),
        issuer=_name(certificate.issuer),
        sha256=_fingerprint(certificate),
        not_before=_iso(certificate.not_valid_before_utc),
        not_after=_iso(certificate.not_valid_after_utc),
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
    own = {_fingerprint(root) for root in own_cas}
    public = {_fingerprint(root) for root in public_roots}
    path = [served[0]]
    infos = [certificate_info(served[0])]

    def done(anchor: str, detail: str = "") -> tuple[Chain, list[x509.Certificate]]:
        return Chain(tuple(infos), anchor, detail), path

    while len(path) <= MAX_CHAIN:
        current = path[-1]
        if current.issuer == current.subject and _signed_by(current, current):
            fingerprint = _fingerprint(current)
            if fingerprint in own:
                return done(ANCHOR_OWN_CA)
            if fingerprint in public:
                return done(ANCHOR_PUBLIC)
            return done(ANCHOR_UNTRUSTED, f"{_name(current.subject)} is a root nobody here trusts")
        candidates = [(c, True) for c in served[1:] if c not in path]
        candidates += [(c, False) for c in [*own_cas, *public_roots]]
        named = [(c, was_served) for c, was_served in candidates if c.subject == current.issuer]
        issuer = next(((c, s) for c, s in named if _signed_by(current, c)), None)
        if issuer is None:
            if named:
                return done(
                    ANCHOR_BROKEN,
                    f"the signature on {_name(current.subject)} does not verify with "
                    f"{_name(current.issuer)}'s key",
                )
            return done(
                ANCHOR_INCOMPLETE,
                f"the issuer {_name(current.issuer)} of {_name(current.subject)} is neither "
                "served nor a known root",
            )
        certificate, was_served = issuer
        if not _is_ca(certificate):
            return done(ANCHOR_BROKEN, f"{_name(certificate.subject)} is not a CA certificate")
        path.append(certificate)
        infos.append(certificate_info(certificate, served=was_served))
        if not was_served:  # a trust anchor ends the chain
            fingerprint = _fingerprint(certificate)
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
        subject=_name(certificate.subject),
        names=certificate_names(certificate),
        not_after=_iso(certificate.not_valid_after_utc),
        days_left=left.days,  # floor: -1 once expired
        key=describe_key(certificate)[0],
        signature=describe_signature(certificate)[0],
        ocsp=ocsp,
        ca_issuers=issuers,
        crl=crl,
    )


RENEW = (
    "renew the certificate (selfsigned: `mailstack render`; manual: a new cert_file, then "
    "`mailstack render`), then `mailstack restart`"
)


def evaluate_certificate(
    endpoint: Endpoint,
    chain_pem: str,
    now: datetime.datetime,
    own_cas: Sequence[x509.Certificate],
    public_roots: Sequence[x509.Certificate],
    label: str = "",
) -> tuple[Leaf | None, Chain | None, list[Finding]]:
    """The served chain of one handshake: complete, trusted, in date, strong enough."""
    where = f"{endpoint.name}:{endpoint.port}{label}"
    try:
        served = parse_chain(chain_pem)
    except ValueError as e:
        return (
            None,
            None,
            [
                Finding(
                    FAIL,
                    f"{where}: the served certificate is unreadable ({e})",
                    "serve a PEM certificate chain",
                )
            ],
        )
    if not served:
        return (
            None,
            None,
            [
                Finding(
                    FAIL,
                    f"{where}: no certificate served",
                    "configure a certificate for this service",
                )
            ],
        )
    findings: list[Finding] = []
    leaf = served[0]
    chain, path = build_chain(served, own_cas, public_roots)
    if chain.anchor in (ANCHOR_INCOMPLETE, ANCHOR_BROKEN):
        findings.append(
            Finding(
                FAIL,
                f"{where}: the chain is {chain.anchor}: {chain.detail}",
                "serve the full chain: the certificate, then each intermediate (fullchain.pem)",
            )
        )
    elif chain.anchor == ANCHOR_UNTRUSTED:
        findings.append(
            Finding(
                FAIL,
                f"{where}: the chain ends at an untrusted root: {chain.detail}",
                "serve a chain that ends at a public CA's root (tls.mode acme, or manual "
                "with a public certificate)",
            )
        )
    for position, certificate in enumerate(path):
        subject = _name(certificate.subject)
        if certificate.not_valid_after_utc <= now:
            findings.append(
                Finding(
                    FAIL,
                    f"{where}: {subject} expired on {_iso(certificate.not_valid_after_utc)}",
                    RENEW,
                )
            )
        elif certificate.not_valid_before_utc > now:
            findings.append(
                Finding(
                    FAIL,
                    f"{where}: {subject} is not valid before "
                    f"{_iso(certificate.not_valid_before_utc)}",
                    "check the host's clock, or serve a certificate valid now",
                )
            )
        key, key_ok = describe_key(certificate)
        if not key_ok:
            findings.append(
                Finding(
                    FAIL,
                    f"{where}: {subject} has a weak key ({key})",
                    f"use a key of at least RSA {MIN_RSA_BITS} or ECDSA P-256",
                )
            )
        self_signed = certificate.issuer == certificate.subject
        signature, signature_ok = describe_signature(certificate)
        if not signature_ok and not self_signed:  # a root's own signature is never checked
            findings.append(
                Finding(
                    FAIL,
                    f"{where}: {subject} has a weak signature ({signature})",
                    "use a certificate signed with SHA-256 or better",
                )
            )
        if position == 0 and certificate.not_valid_after_utc > now:
            days = (certificate.not_valid_after_utc - now).days
            if days < WARN_DAYS:
                findings.append(
                    Finding(
                        WARN,
                        f"{where}: the certificate expires in {days} days",
                        "renewal should have happened 30 days before expiry: " + RENEW,
                    )
                )
    return leaf_info(leaf, now), chain, findings


def evaluate_endpoint(
    endpoint: Endpoint,
    probe: Probe,
    now: datetime.datetime,
    own_cas: Sequence[x509.Certificate],
    public_roots: Sequence[x509.Certificate],
) -> EndpointReport:
    """One endpoint's handshakes judged: protocols, chain, names, expiry, key."""
    where = f"{endpoint.name}:{endpoint.port}"
    findings: list[Finding] = []
    protocols = {
        version: probe.by_protocol.get(version, _NO_HANDSHAKE).protocol is not None
        for version in PROTOCOLS
    }
    main = probe.by_name.get(endpoint.names[0], _NO_HANDSHAKE)
    if main.protocol is None:
        findings.append(
            Finding(
                FAIL,
                f"{where}: no TLS handshake ({main.error or 'no answer'})",
                "is the stack up (`mailstack status`)? see `mailstack logs` of the service",
            )
        )
        return EndpointReport(
            endpoint.name,
            endpoint.address,
            endpoint.port,
            endpoint.starttls,
            protocols,
            None,
            None,
            (),
            False,
            tuple(findings),
        )
    for version in PROTOCOLS:
        if protocols[version] and version not in REQUIRED_PROTOCOLS:
            findings.append(
                Finding(
                    FAIL,
                    f"{where}: {version} is offered",
                    "allow only TLS 1.2 and 1.3 (Mozilla intermediate)",
                )
            )
    if not protocols["TLS1.2"]:
        findings.append(
            Finding(
                FAIL,
                f"{where}: TLS1.2 is not offered",
                "offer TLS 1.2: many sending servers and clients do not speak 1.3 yet",
            )
        )
    if not protocols["TLS1.3"]:
        findings.append(
            Finding(WARN, f"{where}: TLS1.3 is not offered", "offer TLS 1.3 beside 1.2")
        )
    leaf, chain, certificate_findings = evaluate_certificate(
        endpoint, main.chain_pem, now, own_cas, public_roots
    )
    findings += certificate_findings
    main_served = parse_chain(main.chain_pem) if leaf is not None else []
    main_fingerprint = _fingerprint(main_served[0]) if main_served else ""
    names: list[NameCheck] = []
    for name in endpoint.names:
        handshake = probe.by_name.get(name, _NO_HANDSHAKE)
        try:
            served = parse_chain(handshake.chain_pem)
        except ValueError:
            served = []
        if handshake.protocol is None or not served:
            names.append(NameCheck(name, False, ""))
            findings.append(
                Finding(
                    FAIL,
                    f"{where}: no TLS handshake with SNI {name} "
                    f"({handshake.error or 'no certificate'})",
                    f"serve a certificate for {name}",
                )
            )
            continue
        fingerprint = _fingerprint(served[0])
        covered = covers(served[0], name)
        names.append(NameCheck(name, covered, fingerprint))
        if not covered:
            findings.append(
                Finding(
                    FAIL,
                    f"{where}: the certificate served for {name} does not cover it "
                    f"(it covers {', '.join(certificate_names(served[0])) or 'no names'})",
                    f"add {name} to the certificate's names (subjectAltName)",
                )
            )
        if fingerprint != main_fingerprint:  # another certificate for this name: judge it too
            findings += evaluate_certificate(
                endpoint, handshake.chain_pem, now, own_cas, public_roots, f" ({name})"
            )[2]
    return EndpointReport(
        endpoint.name,
        endpoint.address,
        endpoint.port,
        endpoint.starttls,
        protocols,
        leaf,
        chain,
        tuple(names),
        main.stapled,
        tuple(findings),
    )


_NO_HANDSHAKE = Handshake(None, "", False, "not tried")


def read_acme_state(stack_root: Path) -> tuple[AcmeState | None, list[Finding]]:
    """The ACME renewal's last word (<stack>/.mailstack/acme.json): a failed renewal is a
    failure, an unreadable file a warning."""
    try:
        state = acme.load_state(stack_root)
    except acme.AcmeStateUnreadable as unreadable:
        return None, [
            Finding(
                WARN,
                f"ACME: {acme.state_path(stack_root)} is unreadable ({unreadable})",
                "it is rewritten on the next renewal attempt",
            )
        ]
    if state is None or state.ok:
        return state, []
    checked = f" (checked {state.checked})" if state.checked else ""
    return state, [
        Finding(
            FAIL,
            f"ACME: the certificate renewal failed{checked}: {state.error or 'no error given'}",
            "fix the cause (DNS of the names, port 80 reachable from outside), then "
            "`mailstack tls renew`",
        )
    ]


def check(
    endpoints: Sequence[Endpoint],
    probe: Callable[[Sequence[Endpoint]], dict[str, Probe]],
    now: datetime.datetime,
    own_cas: Sequence[x509.Certificate],
    public_roots: Sequence[x509.Certificate],
    acme_root: Path | None,
) -> TlsCheckReport:
    """Every endpoint judged; and in tls.mode acme (acme_root: the stack directory) the last
    renewal's outcome."""
    probes = probe(endpoints)
    reports = tuple(
        evaluate_endpoint(endpoint, probes[endpoint.name], now, own_cas, public_roots)
        for endpoint in endpoints
    )
    acme, findings = read_acme_state(acme_root) if acme_root else (None, [])
    return TlsCheckReport(reports, acme, tuple(findings))


def system_roots() -> list[x509.Certificate]:
    """The system trust store (OpenSSL's default CA file, as SSL_CERT_FILE may point it)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            try:
                with warnings.catch_warnings():
                    # A few old roots have a non-positive serial; they are the store's business.
                    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                    return x509.load_pem_x509_certificates(Path(candidate).read_bytes())
            except ValueError:
                continue
    return []


def load_own_cas(stack_root: Path) -> list[x509.Certificate]:
    """The stack's own CA (tls/ca.pem) and the operator's private CAs (tls.ca_file, copied
    to tls/trusted.pem): roots this stack trusts that no other server does."""
    roots: list[x509.Certificate] = []
    for name in ("ca.pem", "trusted.pem"):
        path = stack_root / "tls" / name
        try:
            roots += x509.load_pem_x509_certificates(path.read_bytes())
        except FileNotFoundError:
            continue
        except ValueError as e:
            raise MailstackError(f"{path} is not a PEM certificate ({e})") from None
    return roots


def check_stack(stack: Stack, requested: str | None) -> TlsCheckReport:
    """`check tls`: every endpoint of the running stack, the HTTPS names of its mail domains
    (or of the one requested)."""
    domains, _ = mail_domains(stack, requested)
    root = stack.dir.root
    return check(
        stack_endpoints(stack.config, domains),
        openssl_probe,
        datetime.datetime.now(datetime.UTC),
        load_own_cas(root),
        system_roots(),
        root if stack.config.tls.mode == "acme" else None,  # another mode's old state is moot
    )
