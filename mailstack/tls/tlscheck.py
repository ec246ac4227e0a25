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
import ipaddress
import ssl
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

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
from mailstack.tls.chains import (
    ANCHOR_BROKEN,
    ANCHOR_INCOMPLETE,
    ANCHOR_OWN_CA,
    ANCHOR_UNTRUSTED,
    MIN_RSA_BITS,
    Chain,
    Leaf,
    build_chain,
    certificate_names,
    covers,
    describe_key,
    describe_signature,
    display_name,
    iso_utc,
    leaf_info,
    parse_chain,
    sha256_fingerprint,
)
from mailstack.tls.handshakes import PROTOCOLS, Endpoint, Handshake, Probe, openssl_probe
from mailstack.verdict import FAIL, WARN, Verdict, worst

# Renewal (ACME, and the self-signed certificate on render/up) happens 30 days before
# expiry; a certificate under 21 days has missed over a week of renewals.
WARN_DAYS = 21
REQUIRED_PROTOCOLS = ("TLS1.2", "TLS1.3")


# --- the report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    verdict: Verdict  # FAIL or WARN
    what: str
    fix: str  # one line


@dataclass(frozen=True)
class NameCheck:
    name: str
    covered: bool
    certificate: str  # sha256 of the leaf served for this SNI name; empty when none


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
        subject = display_name(certificate.subject)
        if certificate.not_valid_after_utc <= now:
            findings.append(
                Finding(
                    FAIL,
                    f"{where}: {subject} expired on {iso_utc(certificate.not_valid_after_utc)}",
                    RENEW,
                )
            )
        elif certificate.not_valid_before_utc > now:
            findings.append(
                Finding(
                    FAIL,
                    f"{where}: {subject} is not valid before "
                    f"{iso_utc(certificate.not_valid_before_utc)}",
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
    main_fingerprint = sha256_fingerprint(main_served[0]) if main_served else ""
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
        fingerprint = sha256_fingerprint(served[0])
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
