"""Daemons take a new certificate by a reload, not a restart: postfix, dovecot and nginx
each keep their open connections and serve new ones with the files now in tls/.

Whatever changed tls/cert.pem (an ACME renewal, `render` in another tls.mode, the
operator's new files in mode manual), the running daemons learn of it here: after a renewal,
and on every `up` whose certificate is not the one they were last told about.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from mailstack.stackdir import STATE_DIR, atomic_write
from mailstack.tls import TLS_DIR

if TYPE_CHECKING:
    from mailstack.lifecycle import Stack

SERVED_STAMP = "tls-served.sha256"  # .mailstack/: the certificate the daemons were given
FRONT_RELOAD = ["nginx", "-s", "reload", "-c", "/etc/mailstack/front/nginx.conf"]
RELOADS = (
    ("postfix", ["postfix", "reload"]),
    ("dovecot", ["doveadm", "reload"]),
    ("front", FRONT_RELOAD),
)


def certificate_digest(stack: Stack) -> str:
    chain = stack.dir.root / TLS_DIR / "cert.pem"
    key = stack.dir.root / TLS_DIR / "key.pem"
    return hashlib.sha256(chain.read_bytes() + key.read_bytes()).hexdigest()


def reload_daemons(stack: Stack) -> list[str]:
    """Reload every running TLS daemon; record which certificate they now serve."""
    running = {state.service for state in stack.compose.ps() if state.state == "running"}
    reloaded: list[str] = []
    for service, command in RELOADS:
        if service in running:
            stack.compose.exec(service, command)
            reloaded.append(service)
    stamp = stack.dir.root / STATE_DIR / SERVED_STAMP
    atomic_write(stamp, certificate_digest(stack).encode() + b"\n")
    return reloaded


def reload_if_changed(stack: Stack) -> list[str]:
    """After `up`: reload when tls/ holds another certificate than the daemons were given."""
    stamp = stack.dir.root / STATE_DIR / SERVED_STAMP
    try:
        served = stamp.read_text().strip()
    except OSError:
        served = ""
    if served == certificate_digest(stack):
        return []
    reloaded = reload_daemons(stack)
    # No stamp yet (a stack's first `up`): the daemons have just read the files anyway.
    return reloaded if served else []
