"""Radicale's sign-in for mailstack (features.dav): Dovecot checks every password.

Radicale loads this module as its auth type (radicale.conf: `[auth] type =
mailstack_dav_auth`). For each sign-in it speaks Dovecot's authentication client protocol
over the Unix socket Dovecot makes for this container alone, with service=dav and the
browser's or client's address (rip, from the front's X-Real-IP). So a DAV sign-in follows
the mail rules exactly: the same passwords, app passwords only under MFA, the bans service
counting failures per client address, Dovecot's failure delay, its log.

A success is remembered for CACHE_SECONDS (a phone's sync is dozens of requests, each
signed in, and a password hash costs tens of milliseconds); a changed or removed password
stops working on DAV at the latest then. Failures are never remembered.

Python's standard library and Radicale only (Debian's python3-radicale).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import secrets
import socket
import threading
import time
from typing import Any

from radicale import auth

# Dovecot's auth listener for this container: a Unix socket on one host; on a cluster
# HOST:PORT, the dav-to-dovecot link (docs/cluster.md), which only the two join.
SOCKET = os.environ.get("MAILSTACK_DOVECOT_AUTH", "/run/mailstack-dav/auth")
CACHE_SECONDS = 60.0
TIMEOUT = 20.0  # Dovecot delays a failure (auth_failure_delay) and may ask the bans service
MAX_LOGIN = 320  # an address: 64 + @ + 255
MAX_PASSWORD = 1024


class AuthError(Exception):
    """Dovecot could not be asked (no socket, a protocol error): the sign-in fails."""


def tab_escaped(value: str) -> str:
    """A value as Dovecot's protocol writes it (its tabescape)."""
    return (
        value.replace("\x01", "\x011")
        .replace("\t", "\x01t")
        .replace("\r", "\x01r")
        .replace("\n", "\x01n")
    )


def auth_request(request_id: int, login: str, password: str, client: str | None) -> bytes:
    """The AUTH line for a PLAIN sign-in (the front terminated TLS: secured)."""
    initial = base64.b64encode(b"\0" + login.encode() + b"\0" + password.encode()).decode()
    fields = ["AUTH", str(request_id), "PLAIN", "service=dav", "secured"]
    if client:
        fields.append(f"rip={client}")
    fields.append(f"resp={initial}")
    return ("\t".join(tab_escaped(field) for field in fields) + "\n").encode()


def parse_reply(line: str, request_id: int) -> str | None:
    """The user Dovecot signed in (OK), or None (FAIL); AuthError for anything else."""
    fields = line.rstrip("\n").split("\t")
    if len(fields) < 2 or fields[1] != str(request_id):
        raise AuthError(f"unexpected reply: {line[:80]!r}")
    if fields[0] == "FAIL":
        return None
    if fields[0] != "OK":
        raise AuthError(f"unexpected reply: {fields[0][:20]!r}")
    for field in fields[2:]:
        if field.startswith("user="):
            return field.removeprefix("user=")
    raise AuthError("OK without a user")


def client_address(value: str | None) -> str | None:
    """The client's address as the front passed it, when it is one."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def acceptable(login: str, password: str) -> bool:
    """Whether a sign-in is worth asking Dovecot (PLAIN cannot carry NUL; no control bytes)."""
    if not login or not password or len(login) > MAX_LOGIN or len(password) > MAX_PASSWORD:
        return False
    return "\0" not in password and login.isprintable() and " " not in login


def ask_dovecot(login: str, password: str, client: str | None, path: str = SOCKET) -> str | None:
    """One sign-in through Dovecot's auth socket (a path, or HOST:PORT on a cluster): the
    user, or None when refused."""
    request_id = 1
    inet = not path.startswith("/")
    host, _, port = path.rpartition(":")
    with socket.socket(
        socket.AF_INET if inet else socket.AF_UNIX, socket.SOCK_STREAM
    ) as connection:
        connection.settimeout(TIMEOUT)
        try:
            connection.connect((host, int(port)) if inet else path)
            connection.sendall(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n".encode())
            reader = connection.makefile("r", encoding="utf-8", newline="\n")
            for line in reader:  # the handshake: VERSION, MECH…, SPID, CUID, COOKIE, DONE
                if line.startswith("VERSION\t") and not line.startswith("VERSION\t1\t"):
                    raise AuthError(f"Dovecot's auth protocol {line.strip()!r}")
                if line == "DONE\n":
                    break
            else:
                raise AuthError("the auth socket closed during the handshake")
            connection.sendall(auth_request(request_id, login, password, client))
            reply = reader.readline()
        except OSError as error:
            raise AuthError(f"{path}: {error}") from None
    if not reply:
        raise AuthError("the auth socket closed without an answer")
    return parse_reply(reply, request_id)


class Auth(auth.BaseAuth):  # type: ignore[misc]  # Radicale's plugin base (untyped here)
    def __init__(self, configuration: Any) -> None:
        super().__init__(configuration)
        self._request = threading.local()
        self._salt = secrets.token_bytes(16)
        self._cache: dict[tuple[str, bytes], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get_external_login(self, environ: dict[str, Any]) -> tuple[()]:
        # Radicale calls this first, in the request's thread: keep the client's address for
        # login(), which is not given the request. Radicale still reads the Basic credentials.
        self._request.client = client_address(environ.get("HTTP_X_REAL_IP"))
        return ()

    def login(self, login: str, password: str) -> str:
        if not acceptable(login, password):
            return ""
        key = (login, hashlib.sha256(self._salt + password.encode()).digest())
        now = time.monotonic()
        with self._lock:
            remembered = self._cache.get(key)
            if remembered and remembered[1] > now:
                return remembered[0]
        try:
            user = ask_dovecot(login, password, getattr(self._request, "client", None))
        except AuthError as error:
            print(f"mailstack_dav_auth: {error}", flush=True)
            return ""
        if user is None:
            return ""
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            self._cache[key] = (user, now + CACHE_SECONDS)
        return user
