"""What one TLS listener served, judged: the protocols it accepts, its certificate chain
(complete? trusted? in date? strong enough?) and the names it covers, as findings with a
verdict and a one-line fix.

Pure: `evaluate_endpoint` takes a listener's handshakes (mailstack.tls.handshakes) and the
known roots, and returns an `EndpointReport`, so it is tested with certificates made in the
test.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from mailstack.tls.chains import (
    ANCHOR_BROKEN,
    ANCHOR_INCOMPLETE,
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
from mailstack.tls.handshakes import PROTOCOLS, Endpoint, Handshake, Probe
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


# --- the judging ----------------------------------------------------------------------------------


RENEW = (
    "renew the certificate (selfsigned: `mailstack render`; manual: a new cert_file, then "
    "`mailstack render`), then `mailstack restart`"
)

_NO_HANDSHAKE = Handshake(None, "", False, "not tried")  # what the probe did not try


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
