"""`check tls`: what every TLS endpoint of the running stack serves, judged.

For each endpoint (SMTP 25/587 and ManageSieve 4190 and IMAP 143 with STARTTLS, 465, 993,
HTTPS 443) the check connects as a client would, with SNI, and reports the certificate chain
(complete up to a root? a publicly trusted one or the stack's own CA?), the names the leaf
covers against the names it must cover, days to expiry, key and signature algorithm, the
revocation URLs the certificate names, and which TLS versions the server accepts.

This module is the command: the stack's endpoints, its trust anchors, the ACME renewal's
state, and the report. The handshakes are mailstack.tls.handshakes (one adapter, `openssl
s_client`); reading a chain is mailstack.tls.chains and judging what was served
mailstack.tls.judgement, both pure. Nothing is fetched from the network: OCSP and CRL URLs
are reported, not queried.
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

from mailstack.errors import EXIT_FAILED, EXIT_OK, EXIT_OWN_CA, MailstackError
from mailstack.mailauth.dnscheck import mail_domains, stack_lookup, tlsa_answer
from mailstack.mailauth.dnsrecords import AUTOCONFIG_HOSTS, MTA_STS_HOST
from mailstack.stack.config import Config, published_ports
from mailstack.stack.stackdir import Stack
from mailstack.tls import acme, dane
from mailstack.tls.acme import AcmeState
from mailstack.tls.chains import ANCHOR_OWN_CA
from mailstack.tls.dane import TlsaAnswer
from mailstack.tls.handshakes import Endpoint, Probe, openssl_probe
from mailstack.tls.judgement import EndpointReport, Finding, evaluate_endpoint
from mailstack.verdict import FAIL, PASS, WARN

# --- the report -----------------------------------------------------------------------------------


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
    ("pop3", "pop3"),
    ("pop3s", None),
    ("https", None),
)


def web_names(domain: str) -> tuple[str, ...]:
    """The HTTPS names of one mail domain (nginx's mta-sts and autoconfig server blocks)."""
    return tuple(f"{host}.{domain}" for host in (MTA_STS_HOST, *AUTOCONFIG_HOSTS))


def stack_endpoints(config: Config, domains: Sequence[str]) -> tuple[Endpoint, ...]:
    """Every TLS endpoint the stack publishes, at its bind address (loopback for 0.0.0.0)."""
    bind = ipaddress.ip_address(config.network.bind_ipv4)
    address = "127.0.0.1" if bind.is_unspecified else str(bind)
    endpoints = []
    published = published_ports(config)
    for key, starttls in _SERVICES:
        if key not in published:
            continue
        names: tuple[str, ...] = (config.hostname,)
        if key == "https":
            names += tuple(name for domain in domains for name in web_names(domain))
        endpoints.append(Endpoint(key, address, published[key], starttls, names))
    return tuple(endpoints)


# --- the check ------------------------------------------------------------------------------------


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
    tlsa: Callable[[], TlsaAnswer] | None = None,
    next_key: str | None = None,
) -> TlsCheckReport:
    """Every endpoint judged; in tls.mode acme (acme_root: the stack directory) the last
    renewal's outcome; given `tlsa`, port 25's key against DANE's records."""
    probes = probe(endpoints)
    reports = tuple(
        evaluate_endpoint(endpoint, probes[endpoint.name], now, own_cas, public_roots)
        for endpoint in endpoints
    )
    acme, findings = read_acme_state(acme_root) if acme_root else (None, [])
    for endpoint, report in zip(endpoints, reports, strict=True):
        if endpoint.name == "smtp" and report.leaf is not None and tlsa is not None:
            findings += dane_findings(report.leaf.tlsa, endpoint.names[0], tlsa, next_key)
    return TlsCheckReport(reports, acme, tuple(findings))


def dane_findings(
    served: str, hostname: str, tlsa: Callable[[], TlsaAnswer], next_key: str | None
) -> list[Finding]:
    """A warning when the key served on port 25 has no TLSA record where DANE applies (or a
    failure when validated records all name other keys); nothing in an unsigned zone."""
    try:
        published, validated, zone_signed = tlsa()
    except MailstackError as failed:
        return [Finding(WARN, f"DANE: TLSA records not checked ({failed.message})", "")]
    keys = dane.DaneKeys(dane.normalised(served).split()[-1], next_key)
    judged = dane.judge(
        published, validated=validated, zone_signed=zone_signed, keys=keys, hostname=hostname
    )
    if judged.verdict == PASS:
        return []
    what = f"DANE: {dane.tlsa_name(hostname)}: {judged.found}"
    return [Finding(judged.verdict, what, judged.fix)]


# --- the roots a chain may end at -----------------------------------------------------------------


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
    hostname = stack.config.hostname

    def tlsa() -> TlsaAnswer:
        return tlsa_answer(stack_lookup(stack, None, [hostname]), hostname)

    keys = dane.load_keys(root)
    return check(
        stack_endpoints(stack.config, domains),
        openssl_probe,
        datetime.datetime.now(datetime.UTC),
        load_own_cas(root),
        system_roots(),
        root if stack.config.tls.mode == "acme" else None,  # another mode's old state is moot
        tlsa,
        keys.next if keys else None,
    )
