"""Handshakes with the stack's TLS listeners, through one adapter: `openssl s_client`.

An `Endpoint` is one listener (address, port, STARTTLS protocol, the names it must serve);
`openssl_probe` runs every handshake `check tls` needs for it: one per SNI name, one per
TLS version. Python 3.11's ssl cannot hand back the served chain, and can no longer speak
TLS 1.0 to find out whether a server would; s_client does both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mailstack.adapters import process
from mailstack.errors import ExternalCommandFailed

PROTOCOLS = ("TLS1.0", "TLS1.1", "TLS1.2", "TLS1.3")
PROBE_TIMEOUT = 30.0
PROBE_WORKERS = 8


@dataclass(frozen=True)
class Endpoint:
    """One TLS listener of the stack, and the names its certificate must cover."""

    name: str  # the port's key in mailstack.yaml's network.ports
    address: str
    port: int
    starttls: str | None  # s_client's -starttls protocol; None for implicit TLS
    names: tuple[str, ...]  # the names the certificate must cover; the first is the main SNI


# --- what a handshake gives back ------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    """One `openssl s_client` run: the negotiated protocol (None: no handshake) and chain."""

    protocol: str | None
    chain_pem: str  # the certificates as served, leaf first
    stapled: bool  # an OCSP response came with the handshake
    error: str  # the client's last line when there was no handshake


@dataclass(frozen=True)
class Probe:
    """Every handshake of one endpoint: one per SNI name, one per protocol version."""

    by_name: dict[str, Handshake]
    by_protocol: dict[str, Handshake]


# --- the adapter: openssl s_client ----------------------------------------------------------------

_VERSION_FLAGS = {"TLS1.0": "-tls1", "TLS1.1": "-tls1_1", "TLS1.2": "-tls1_2", "TLS1.3": "-tls1_3"}
_NEGOTIATED = re.compile(r"^New, (\S+), Cipher is (\S+)", re.MULTILINE)
_SESSION_PROTOCOL = re.compile(r"^\s+Protocol\s*:\s*(\S+)", re.MULTILINE)
_OPENSSL_REASON = re.compile(r":error:[0-9A-F]+:[^:]*:[^:]*:([^:]+):")
_PROTOCOL_NAMES = {"TLSv1": "TLS1.0", "TLSv1.1": "TLS1.1", "TLSv1.2": "TLS1.2", "TLSv1.3": "TLS1.3"}
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def s_client_argv(endpoint: Endpoint, servername: str, version: str | None) -> list[str]:
    host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
    argv = [
        "openssl",
        "s_client",
        "-connect",
        f"{host}:{endpoint.port}",
        "-servername",
        servername,
        "-showcerts",
        "-status",
    ]
    if endpoint.starttls:
        argv += ["-starttls", endpoint.starttls]
    if version is not None:
        argv.append(_VERSION_FLAGS[version])
        if version in ("TLS1.0", "TLS1.1"):
            # OpenSSL 3 refuses these at its default security level: lower it so the
            # answer is what the *server* offers.
            argv += ["-cipher", "DEFAULT@SECLEVEL=0"]
    return argv


def parse_s_client(stdout: str, stderr: str, returncode: int) -> Handshake:
    """What `openssl s_client` printed, as a Handshake."""
    negotiated = _NEGOTIATED.search(stdout)
    protocol = None
    if returncode == 0 and negotiated and negotiated.group(2) != "(NONE)":
        # "New, TLSv1.0, Cipher is …" names the cipher's version, not the connection's: the
        # session's "Protocol :" line does (absent for TLS 1.3, whose ciphers are its own).
        session = _SESSION_PROTOCOL.search(stdout)
        version = session.group(1) if session else negotiated.group(1)
        protocol = _PROTOCOL_NAMES.get(version, version)
    chain = "\n".join(_PEM.findall(stdout))
    stapled = "OCSP Response Status: successful" in stdout
    error = ""
    if protocol is None:
        # OpenSSL's own reason ("Connection refused", "tlsv1 alert protocol version", …).
        reasons = _OPENSSL_REASON.findall(stderr)
        starttls = "Didn't find STARTTLS" in stderr + stdout
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        error = (
            "the server offered no STARTTLS"
            if starttls
            else reasons[0]
            if reasons
            else lines[-1]
            if lines
            else f"openssl exit {returncode}"
        )[:160]
    return Handshake(protocol, chain, stapled, error)


def handshake(endpoint: Endpoint, servername: str, version: str | None) -> Handshake:
    try:
        result = process.run(
            s_client_argv(endpoint, servername, version),
            input=b"",  # EOF on stdin: s_client closes once the handshake is done
            timeout=PROBE_TIMEOUT,
            check=False,
            what="openssl s_client",
        )
    except ExternalCommandFailed as e:  # a timeout: the server never finished the handshake
        return Handshake(None, "", False, e.message.splitlines()[0])
    return parse_s_client(
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
        result.returncode,
    )


def openssl_probe(endpoints: Sequence[Endpoint]) -> dict[str, Probe]:
    """Every handshake of every endpoint, a few at a time (STARTTLS servers greet slowly)."""
    jobs: list[tuple[Endpoint, str, str | None]] = [
        (endpoint, name, None) for endpoint in endpoints for name in endpoint.names
    ]
    jobs += [
        (endpoint, endpoint.names[0], version) for endpoint in endpoints for version in PROTOCOLS
    ]
    with ThreadPoolExecutor(max_workers=PROBE_WORKERS) as pool:
        results = list(pool.map(lambda job: handshake(*job), jobs))
    probes = {endpoint.name: Probe({}, {}) for endpoint in endpoints}
    for (endpoint, name, version), result in zip(jobs, results, strict=True):
        if version is None:
            probes[endpoint.name].by_name[name] = result
        else:
            probes[endpoint.name].by_protocol[version] = result
    return probes
