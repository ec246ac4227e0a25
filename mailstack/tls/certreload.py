"""Daemons take a new certificate by a reload, not a restart: postfix, dovecot and nginx
each keep their open connections and serve new ones with the files now in tls/.

Whatever changed tls/cert.pem (an ACME renewal, `render` in another tls.mode, the
operator's new files in mode manual), the running daemons learn of it here: after a renewal,
and on every `up` whose certificate is not the one they were last told about.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from mailstack import services
from mailstack.stack.stackdir import STATE_DIR, Stack, atomic_write
from mailstack.tls.certs import TLS_DIR

SERVED_STAMP = "tls-served.sha256"  # .mailstack/: the certificate the daemons were given
CA_STAMP = "tls-ca-served.sha256"  # .mailstack/: the CA the CA holders were started with
TRUST_FILES = ("ca.pem", "trusted.pem")


def certificate_digest(stack: Stack) -> str:
    chain = stack.dir.root / TLS_DIR / "cert.pem"
    key = stack.dir.root / TLS_DIR / "key.pem"
    return hashlib.sha256(chain.read_bytes() + key.read_bytes()).hexdigest()


def reload_daemons(stack: Stack, running: set[str]) -> list[str]:
    """Reload every running TLS daemon; record which certificate they now serve."""
    reloaded: list[str] = []
    for service in services.SERVICES:
        if service.tls_reload is not None and service.name in running:
            stack.compose.exec(service.name, list(service.tls_reload))
            reloaded.append(service.name)
    stamp = stack.dir.root / STATE_DIR / SERVED_STAMP
    atomic_write(stamp, certificate_digest(stack).encode() + b"\n")
    return reloaded


def reload_if_changed(
    stack: Stack, running: set[str], wait_healthy: Callable[[list[str]], None]
) -> list[str]:
    """After `up` or `domain add`: reload the running daemons when tls/ holds another
    certificate than they were given, and restart the CA holders (then wait for them) when
    the CA changed."""
    served = _stamp(stack, SERVED_STAMP)
    reloaded: list[str] = []
    if served != certificate_digest(stack):
        reloaded = reload_daemons(stack, running)
        # No stamp yet (a stack's first `up`): the daemons have just read the files anyway.
        reloaded = reloaded if served else []
    trusted = trust_digest(stack)
    started_with = _stamp(stack, CA_STAMP)
    if started_with != trusted:
        # A single-file mount keeps the file it was started with when ca.pem is replaced
        # (a new domain widens the CA's name constraints): a restart reads the new one.
        holders = [s.name for s in services.SERVICES if s.holds_ca and s.name in running]
        if started_with and holders:
            stack.compose.run(["restart", *holders], timeout=300)
            wait_healthy(holders)
            reloaded += holders
        atomic_write(stack.dir.root / STATE_DIR / CA_STAMP, trusted.encode() + b"\n")
    return reloaded


def trust_digest(stack: Stack) -> str:
    tls_dir = stack.dir.root / TLS_DIR
    digest = hashlib.sha256()
    for name in TRUST_FILES:
        path = tls_dir / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b""))
    return digest.hexdigest()


def _stamp(stack: Stack, name: str) -> str:
    try:
        return (stack.dir.root / STATE_DIR / name).read_text().strip()
    except OSError:
        return ""
