#!/usr/bin/python3
"""bansd: brute-force defence for the stack, as Dovecot's auth policy server.

Dovecot asks before every password check (IMAP logins and Postfix's SMTP AUTH, which Postfix
hands to Dovecot's SASL) and reports every result afterwards, with the client's address.
bansd answers with a delay that doubles with each recent failure from that address and, after
`max_failures` failures within `window`, refuses the address for `ban_time`. Only distinct
(login, password) pairs count: a phone retrying one stale password counts once. IPv6 clients
are counted per /64 (one host usually holds the whole /64). Bans survive a restart (a file
on the `bans` volume); failures that did not lead to a ban are kept in memory only.

Two listeners: the policy API for Dovecot on the back-end network (POST /?command=allow and
/?command=report, X-API-Key required), and an admin API on 127.0.0.1 inside the container
only, which `mailstack security bans` reaches through `docker compose exec`.

Everything it holds is bounded, so that nothing else on the back-end network can exhaust the
container (64 MiB, 50 pids) and so switch the defence off: one thread serves every
connection; a request's key is checked from its head before any body byte is read; bodies,
heads, connections, time per request and the number of tracked addresses have fixed limits
(the constants and `Limits` below).

Python standard library only (Debian's python3). Commands:
    bansd serve            run the daemon (the container's entrypoint; starts as root,
                           reads the API key, drops to the bans user)
    bansd list             print bans and delayed addresses as JSON (admin API)
    bansd clear ADDRESS    lift a ban and forget the failures of an address or /64
    bansd clear-all        lift every ban
    bansd check-config     validate the settings file(s); exit 1 with FILE:LINE on error
    bansd health           exit 0 when the daemon answers (the healthcheck)
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import hmac
import http
import ipaddress
import json
import os
import re
import selectors
import signal
import socket
import sys
import threading
import time
import typing
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

SETTINGS_FILE = Path("/etc/mailstack/bans/bans.conf")
OVERRIDE_FILE = Path("/etc/mailstack/overrides/bans.conf")
STATE_FILE = Path("/var/lib/bans/bans.json")
API_KEY_FILE = Path("/run/secrets/bans_api_key")
POLICY_PORT = 12350
ADMIN_PORT = 12351
SERVICE_USER = "bans"
IPV6_PREFIX = 64

# What the ban book may hold, sized for the container's 64 MiB beside Python's ~24 MiB: full
# to these limits with the longest logins it takes about 13 MiB, and a save or a listing
# about 8 MiB more for a moment (measured by the unit tests).
# Addresses with recent failures; beyond this the one whose last failure is oldest is
# forgotten (its failures would expire first anyway).
MAX_TRACKED_CLIENTS = 5_000
# (login, password) fingerprints over all tracked addresses: an address keeps its newest
# max_failures, so with max_failures above 10 fewer addresses are tracked.
MAX_FINGERPRINTS = 50_000
# Bans in force. A ban is never dropped before it expires: when this many are in force, a
# further offender is not banned but delayed (as its failures say: usually max_delay) until
# bans expire, and the log says so once a minute at most.
MAX_BANS = 5_000
MAX_LOGINS_SHOWN = 5  # per address, in the ban's log line and `mailstack security bans`
LOGIN_CHARS_SHOWN = 64
MAX_PROTOCOLS = 8
SAVE_INTERVAL = 1.0  # seconds: a burst of bans writes the state file once a second

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(Exception):
    """A bad line in a settings file; the message starts with FILE:LINE."""


@dataclasses.dataclass(frozen=True)
class Settings:
    max_failures: int = 10
    window: int = 600  # seconds
    ban_time: int = 3600  # seconds
    max_delay: int = 15  # seconds
    # Loopback is not exempt by itself: an address is what Dovecot's auth client says (rip,
    # or the webmail's x-originating-ip), never proof of a local caller.
    exempt: tuple[Network, ...] = ()

    def is_exempt(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self.exempt)


_LIMITS = {
    "max_failures": (1, 1000),
    "window": (1, 86400),
    "ban_time": (1, 30 * 86400),
    "max_delay": (0, 30),
}


def parse_settings(texts: Iterable[tuple[str, str]]) -> Settings:
    """Settings from `key = value` lines of (file name, text) pairs; later files win."""
    values: dict[str, Any] = {}
    for name, text in texts:
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            key, sep, value = (part.strip() for part in line.partition("="))
            where = f"{name}:{number}"
            if not sep or not key:
                raise SettingsError(f"{where}: expected 'key = value'")
            if key == "exempt":
                values[key] = tuple(_network(item, where) for item in value.split())
            elif key in _LIMITS:
                low, high = _LIMITS[key]
                if not value.isdigit() or not low <= int(value) <= high:
                    raise SettingsError(f"{where}: {key} must be a whole number {low}–{high}")
                values[key] = int(value)
            else:
                known = ", ".join([*_LIMITS, "exempt"])
                raise SettingsError(f"{where}: unknown key {key!r} (known: {known})")
    return Settings(**values)


def _network(text: str, where: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise SettingsError(f"{where}: {text!r} is not a network (e.g. 192.0.2.0/24)") from None


def load_settings() -> Settings:
    texts = [(str(SETTINGS_FILE), SETTINGS_FILE.read_text(encoding="utf-8"))]
    if OVERRIDE_FILE.is_file():
        texts.append((str(OVERRIDE_FILE), OVERRIDE_FILE.read_text(encoding="utf-8")))
    return parse_settings(texts)


# --- the ban book: pure logic, time passed in ------------------------------------------------


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_address(text: str) -> Address | None:
    """The client's address as Dovecot reports it (IPv4-mapped IPv6 unwrapped); None if none."""
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def client_key(text: str) -> str | None:
    """The unit a client is counted in: its IPv4 address, or its IPv6 /64; None if no IP."""
    address = client_address(text)
    return None if address is None else _unit(address)


def _unit(address: Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


@dataclasses.dataclass(slots=True)
class Ban:
    since: float
    until: float
    failures: int
    protocols: list[str]
    logins: list[str]


@dataclasses.dataclass(slots=True)
class Failures:
    # A fingerprint of (login, password hash) -> when it last failed, oldest first; only the
    # newest max_failures are kept: they alone decide whether max_failures fell in the window.
    seen: dict[int, float] = dataclasses.field(default_factory=dict)
    logins: list[str] = dataclasses.field(default_factory=list)  # the last few, shortened
    protocols: set[str] = dataclasses.field(default_factory=set)
    unique: int = 0  # numbers the failures that carry no password hash

    def recent(self, since: float) -> int:
        return sum(1 for when in self.seen.values() if when > since)

    def add(self, login: str, password_hash: str, protocol: str, now: float, keep: int) -> None:
        if not password_hash:
            # No hash to tell passwords apart: every such failure counts.
            self.unique += 1
            password_hash = f"#{self.unique}"
        # Python's string hash is keyed per process: nobody can aim for a collision.
        fingerprint = hash((login.lower(), password_hash))
        self.seen.pop(fingerprint, None)
        self.seen[fingerprint] = now
        while len(self.seen) > keep:
            del self.seen[next(iter(self.seen))]
        shown = login[:LOGIN_CHARS_SHOWN].lower()
        if shown in self.logins:
            self.logins.remove(shown)
        self.logins.append(shown)
        del self.logins[:-MAX_LOGINS_SHOWN]
        if len(self.protocols) < MAX_PROTOCOLS:
            self.protocols.add(protocol[:16] or "?")


class BanBook:
    """Failures and bans per client; every method takes the current time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Both in the order that eviction and expiry need: failures by last failure, bans by
        # when they end (every ban lasts ban_time, so the order they were made in).
        self.failures: collections.OrderedDict[str, Failures] = collections.OrderedDict()
        self.bans: collections.OrderedDict[str, Ban] = collections.OrderedDict()
        self.capacity = max(1, min(MAX_TRACKED_CLIENTS, MAX_FINGERPRINTS // settings.max_failures))
        self.bans_withheld = 0  # offenders not banned because MAX_BANS were in force
        self.lock = threading.Lock()

    def delay(self, key: str, now: float) -> int:
        """Seconds to hold a login from this client: 0, then 1, 2, 4, … up to max_delay."""
        record = self.failures.get(key)
        count = record.recent(now - self.settings.window) if record else 0
        if count == 0:
            return 0
        return min(self.settings.max_delay, 1 << min(count - 1, 16))

    def allow(self, remote: str, now: float) -> tuple[int, str]:
        """Dovecot's `allow` question: (-1, why) refuses, (N, "") delays N s, (0, "") allows."""
        key = self._key(remote)
        if key is None:
            return 0, ""
        with self.lock:
            if self._banned(key, now):
                return -1, "Too many failed logins from your address; try again later"
            return self.delay(key, now), ""

    def report(
        self,
        remote: str,
        login: str,
        password_hash: str,
        protocol: str,
        *,
        success: bool,
        refused: bool,
        now: float,
    ) -> Ban | None:
        """Dovecot's `report` after a login; returns the ban this failure caused, if any."""
        key = self._key(remote)
        if success or refused or key is None:
            return None
        with self.lock:
            if self._banned(key, now):
                return None  # a login that was already under way when the ban began
            record = self._track(key)
            record.add(login, password_hash, protocol, now, keep=self.settings.max_failures)
            count = record.recent(now - self.settings.window)
            if count < self.settings.max_failures:
                return None
            if len(self.bans) >= MAX_BANS:
                self.bans_withheld += 1
                return None
            ban = Ban(
                since=now,
                until=now + self.settings.ban_time,
                failures=count,
                protocols=sorted(record.protocols),
                logins=sorted(record.logins),
            )
            self.bans[key] = ban
            del self.failures[key]
            return ban

    def _banned(self, key: str, now: float) -> bool:
        """Whether a ban on the key is in force; expired bans are dropped on the way."""
        while self.bans:
            first = next(iter(self.bans.values()))
            if first.until > now:
                break
            self.bans.popitem(last=False)
        ban = self.bans.get(key)
        if ban is not None and ban.until <= now:  # the clock went back: order is approximate
            del self.bans[key]
            ban = None
        return ban is not None

    def _track(self, key: str) -> Failures:
        """The key's failure record, made the most recent; the least recent goes when full."""
        record = self.failures.get(key)
        if record is not None:
            self.failures.move_to_end(key)
            return record
        while len(self.failures) >= self.capacity:
            self.failures.popitem(last=False)
        record = self.failures[key] = Failures()
        return record

    def _key(self, remote: str) -> str | None:
        """The client's key, or None when it is not policed (no address, or exempt)."""
        address = client_address(remote)
        if address is None or self.settings.is_exempt(address):
            return None
        return _unit(address)

    def clear(self, text: str) -> bool:
        """Lift the ban and forget the failures of an address (or its /64); True if any."""
        key = client_key(text.split("/", 1)[0]) if text else None
        if key is None:
            raise ValueError(f"{text[:80]!r} is not an IP address")
        with self.lock:
            had_ban = self.bans.pop(key, None) is not None
            had_failures = self.failures.pop(key, None) is not None
            return had_ban or had_failures

    def clear_all(self) -> int:
        with self.lock:
            count = len(self.bans)
            self.bans.clear()
            self.failures.clear()
            return count

    def snapshot(self, now: float) -> dict[str, Any]:
        """Bans in force and delayed clients, as the admin API shows them."""
        with self.lock:
            self._prune(now)
            bans = [
                {
                    "address": key,
                    "since": _iso(ban.since),
                    "until": _iso(ban.until),
                    "seconds_left": max(0, round(ban.until - now)),
                    "failures": ban.failures,
                    "protocols": ban.protocols,
                    "logins": ban.logins,
                }
                for key, ban in sorted(self.bans.items(), key=lambda item: item[1].until)
            ]
            delayed = [
                {
                    "address": key,
                    "failures": record.recent(now - self.settings.window),
                    "delay": self.delay(key, now),
                    "protocols": sorted(record.protocols),
                }
                for key, record in sorted(self.failures.items())
            ]
        return {
            "bans": bans,
            "delayed": delayed,
            "settings": {
                "max_failures": self.settings.max_failures,
                "window": self.settings.window,
                "ban_time": self.settings.ban_time,
                "max_delay": self.settings.max_delay,
                "exempt": [str(network) for network in self.settings.exempt],
            },
        }

    def _prune(self, now: float) -> None:
        since = now - self.settings.window
        for key in [key for key, ban in self.bans.items() if ban.until <= now]:
            del self.bans[key]
        for key, record in list(self.failures.items()):
            record.seen = {fp: when for fp, when in record.seen.items() if when > since}
            if not record.seen:
                del self.failures[key]

    # --- persistence of the bans (failures are short-lived and stay in memory) ---------------

    def dump(self) -> bytes:
        with self.lock:
            data = {key: dataclasses.asdict(ban) for key, ban in self.bans.items()}
        return json.dumps({"version": 1, "bans": data}, sort_keys=True).encode()

    def load(self, raw: bytes, now: float) -> None:
        data = json.loads(raw)
        bans = []
        for key, fields in (data.get("bans") or {}).items():
            if client_key(_host(key)) != key:
                continue
            ban = Ban(**fields)
            if ban.until > now:
                bans.append((key, ban))
        # In the order they end, as expiry expects; the longest-lasting if there are too many.
        bans.sort(key=lambda item: item[1].until)
        self.bans.update(bans[-MAX_BANS:])


def _host(key: str) -> str:
    return key.split("/", 1)[0]


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


# --- the daemon --------------------------------------------------------------------------------


def log(message: str) -> None:
    sys.stderr.write(f"bansd: {message}\n")
    sys.stderr.flush()


class Daemon:
    """What the two APIs do, over the ban book and its state file."""

    def __init__(self, book: BanBook, api_key: bytes, state_file: Path) -> None:
        self.book = book
        self.api_key = api_key
        self.state_file = state_file
        self.save_lock = threading.Lock()
        self.saved_at = float("-inf")
        self.unsaved = False
        self.withheld_logged = 0
        self.withheld_logged_at = float("-inf")

    def save(self, now: float, *, force: bool = False) -> None:
        """Write the bans for a restart, at most once per SAVE_INTERVAL unless forced."""
        if not force and now - self.saved_at < SAVE_INTERVAL:
            self.unsaved = True  # tick() writes it
            return
        with self.save_lock:
            self.saved_at, self.unsaved = now, False
            temporary = self.state_file.with_suffix(".tmp")
            try:
                temporary.write_bytes(self.book.dump())
                temporary.replace(self.state_file)
            except OSError as e:
                # A full or broken volume must not stop the policy.
                log(f"cannot save the bans to {self.state_file} ({e}); they last until a restart")

    def tick(self, now: float) -> None:
        """Deferred saves and warnings; the server calls it every turn (at least once a second)."""
        if self.unsaved:
            self.save(now)
        withheld = self.book.bans_withheld
        if withheld > self.withheld_logged and now - self.withheld_logged_at >= 60:
            more = withheld - self.withheld_logged
            log(
                f"{MAX_BANS} bans in force (the most bansd keeps): {more} more offender(s) "
                "only delayed until bans expire"
            )
            self.withheld_logged, self.withheld_logged_at = withheld, now

    def policy(self, command: str, request: dict[str, Any]) -> dict[str, Any]:
        remote = str(request.get("remote") or "")
        now = time.time()
        if command == "allow":
            status, message = self.book.allow(remote, now)
            return {"status": status, "msg": message}
        if command == "report":
            ban = self.book.report(
                remote,
                str(request.get("login") or ""),
                str(request.get("pwhash") or ""),
                str(request.get("protocol") or ""),
                success=request.get("success") is True,
                refused=request.get("policy_reject") is True,
                now=now,
            )
            if ban is not None:
                key = client_key(remote)
                log(
                    f"banned {key} until {_iso(ban.until)} after {ban.failures} failed logins "
                    f"({', '.join(ban.protocols)}; logins tried: {', '.join(ban.logins)})"
                )
                self.save(now)
            return {"status": 0}
        raise KeyError(command)

    def admin(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        if path == "/bans":
            return self.book.snapshot(time.time())
        if path == "/clear":
            address = str(request.get("address") or "")
            cleared = self.book.clear(address)
            if cleared:
                log(f"cleared {client_key(_host(address))} (by the operator)")
                self.save(time.time(), force=True)
            return {"cleared": cleared, "address": client_key(_host(address))}
        if path == "/clear-all":
            count = self.book.clear_all()
            log(f"cleared every ban ({count}) (by the operator)")
            self.save(time.time(), force=True)
            return {"cleared": count}
        if path == "/health":
            return {"ok": True}
        raise KeyError(path)


# --- HTTP: one thread, and a limit on everything a client can hold ------------------------------
#
# Dovecot's auth process sends small JSON requests over keep-alive HTTP/1.1 connections, with
# Content-Length, and gives up after auth_policy_server_timeout_msecs (2 s). That is all this
# server accepts. One selector loop serves every connection, so a client costs a socket and a
# few KiB, never a thread; each phase of a request has a deadline; and when the connections
# are all taken, the one least likely to be Dovecot's makes room (see Server._make_room).

MAX_HEAD = 8 * 1024  # request line and headers; Dovecot's are about 300 bytes
MAX_BODY = 64 * 1024  # Dovecot's policy JSON is a few hundred bytes
_CONTENT_LENGTH = re.compile(r"[0-9]{1,10}")
_END_OF_HEAD = b"\r\n\r\n"


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one connection may take; the defaults are the daemon's, tests shorten the times."""

    max_connections: int = 64  # open at once, both APIs; each holds at most one head + body
    head_timeout: float = 5.0  # request line and headers, from connect or their first byte
    body_timeout: float = 5.0  # the body, from the end of the head
    idle_timeout: float = 15.0  # between requests: over Dovecot's 10 s, so it closes first
    write_timeout: float = 10.0  # the answer (an admin listing can be a few MiB)
    linger_time: float = 1.0  # after an error answer, see Server._finish


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Head:
    """A parsed request line and header fields (names lower-cased, repeats kept)."""

    method: str
    target: str
    version: str
    fields: dict[str, list[str]]

    def keep_alive(self) -> bool:
        values = ",".join(self.fields.get("connection", [])).lower().split(",")
        return self.version == "HTTP/1.1" and "close" not in {value.strip() for value in values}


def parse_head(raw: bytes) -> Head:
    """The request line and headers of `raw` (which ends with an empty line); 400 if malformed."""
    lines = raw.decode("latin-1").split("\r\n")[:-2]
    parts = lines[0].split(" ") if lines else []
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not parts[0].isalpha():
        raise HttpError(400, "malformed request line")
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        if "\r" in line or "\n" in line:
            raise HttpError(400, "malformed header line")
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or " " in name:
            raise HttpError(400, "malformed header line")
        fields.setdefault(name.lower(), []).append(value.strip(" \t"))
    return Head(parts[0], parts[1], parts[2], fields)


def body_length(head: Head, api_key: bytes | None) -> int:
    """How many body bytes to read, checked from the head alone: the key first, then the
    method and the length. Raises HttpError for a request that gets no further."""
    if api_key is not None:
        given = head.fields.get("x-api-key", [])
        # Dovecot sends the value of `X-API-Key: value` with its space; strip() takes it.
        if len(given) != 1 or not hmac.compare_digest(given[0].strip().encode(), api_key):
            raise HttpError(403, "wrong or missing X-API-Key")
    if head.method not in ("GET", "POST"):
        raise HttpError(405, "only GET and POST")
    if "transfer-encoding" in head.fields:
        raise HttpError(411, "send the body with Content-Length (no chunked encoding)")
    lengths = set(head.fields.get("content-length", []))
    if not lengths:
        if head.method == "POST":
            raise HttpError(411, "Content-Length required")
        return 0
    text = lengths.pop()
    if lengths or not _CONTENT_LENGTH.fullmatch(text):
        raise HttpError(400, "Content-Length must be one whole number of bytes")
    if int(text) > MAX_BODY:
        raise HttpError(413, f"request body over {MAX_BODY} bytes")
    return int(text)


def answer(status: int, payload: dict[str, Any], *, close: bool) -> bytes:
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        "Server: bansd\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode("latin-1") + body


def respond(daemon: Daemon, admin: bool, head: Head, body: bytes) -> tuple[int, dict[str, Any]]:
    """The status and JSON answer to one complete request."""
    try:
        request = json.loads(body) if body else {}
        if not isinstance(request, dict):
            raise ValueError("not a JSON object")
        url = urlsplit(head.target)
        if admin:
            return 200, daemon.admin(url.path, request)
        command = (parse_qs(url.query).get("command") or [""])[0]
        return 200, daemon.policy(command, request)
    except KeyError:
        return 404, {"error": "unknown command"}
    except (ValueError, RecursionError) as e:  # RecursionError: deeply nested JSON
        return 400, {"error": str(e)[:200]}


class Phase(enum.Enum):
    HEAD = "head"  # waiting for (the rest of) a request line and headers
    BODY = "body"
    ANSWER = "answer"  # writing the answer
    LINGER = "linger"  # answered with an error; closing


@dataclasses.dataclass(eq=False)
class Connection:
    sock: socket.socket
    admin: bool
    since: float  # when its current wait began: connect, or the end of its last answer
    deadline: float
    trusted: bool  # made a request with the right key (admin: loopback in the container)
    phase: Phase = Phase.HEAD
    idle: bool = False  # between requests on a kept-alive connection
    head: bytearray = dataclasses.field(default_factory=bytearray)
    request: Head | None = None
    expected: int = 0
    body: bytearray = dataclasses.field(default_factory=bytearray)
    out: bytes = b""
    close_after: bool = False
    unread: int = 0  # body bytes to throw away after an error answer


class Server:
    """The policy and admin APIs on one thread: a selector loop over bounded connections."""

    def __init__(
        self, daemon: Daemon, listeners: Iterable[tuple[socket.socket, bool]], limits: Limits
    ) -> None:
        self.daemon = daemon
        self.limits = limits
        self.selector = selectors.DefaultSelector()
        self.listeners: dict[socket.socket, bool] = {}
        self.connections: dict[socket.socket, Connection] = {}
        self._waker, self._wake = socket.socketpair()
        self._waker.setblocking(False)
        self.selector.register(self._waker, selectors.EVENT_READ)
        self._stopping = False
        for listener, admin in listeners:
            listener.setblocking(False)
            self.listeners[listener] = admin
            self.selector.register(listener, selectors.EVENT_READ)

    @classmethod
    def bind(
        cls,
        daemon: Daemon,
        *,
        policy: tuple[str, int] | None,
        admin: tuple[str, int] | None,
        limits: Limits | None = None,
    ) -> Server:
        listeners = [
            (socket.create_server(address, backlog=64), is_admin)
            for address, is_admin in ((policy, False), (admin, True))
            if address is not None
        ]
        return cls(daemon, listeners, limits or Limits())

    def port(self, *, admin: bool = False) -> int:
        listener = next(sock for sock, is_admin in self.listeners.items() if is_admin == admin)
        port: int = listener.getsockname()[1]
        return port

    def serve_forever(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            deadlines = [connection.deadline for connection in self.connections.values()]
            timeout = min([1.0, *(deadline - now for deadline in deadlines)])
            for key, events in self.selector.select(max(0.0, timeout)):
                self._dispatch(typing.cast(socket.socket, key.fileobj), events)
            now = time.monotonic()
            for connection in list(self.connections.values()):
                if connection.deadline <= now:
                    self._close(connection)  # too slow, or idle too long: no answer
            self.daemon.tick(time.time())

    def shutdown(self) -> None:
        """Stop serve_forever (from another thread or a signal handler)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake.send(b"\0")

    def close(self) -> None:
        for connection in list(self.connections.values()):
            self._close(connection)
        for sock in [*self.listeners, self._waker, self._wake]:
            sock.close()
        self.selector.close()

    def _dispatch(self, sock: socket.socket, events: int) -> None:
        if sock is self._waker:
            with contextlib.suppress(OSError):
                self._waker.recv(64)
        elif sock in self.listeners:
            self._accept(sock, admin=self.listeners[sock])
        elif (connection := self.connections.get(sock)) is not None:
            try:
                self._step(connection, writable=bool(events & selectors.EVENT_WRITE))
            except (BlockingIOError, InterruptedError):
                pass  # nothing more to read or room to write yet: the next event goes on
            except OSError:
                self._close(connection)  # reset by the client, or the like

    def _accept(self, listener: socket.socket, *, admin: bool) -> None:
        for _ in range(self.limits.max_connections):  # drain the backlog, a bounded amount
            try:
                sock, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of descriptors, say: the loop must go on
                log(f"cannot accept a connection ({e})")
                return
            if not self._make_room():
                sock.close()
                continue
            sock.setblocking(False)
            now = time.monotonic()
            self.connections[sock] = Connection(
                sock, admin, since=now, deadline=now + self.limits.head_timeout, trusted=admin
            )
            self.selector.register(sock, selectors.EVENT_READ)

    def _make_room(self) -> bool:
        """Free a place for a new connection if all are taken; False if none can go.

        First to go: one already closing, then the oldest that has not shown the key (an
        attacker's, most likely), then the longest idle kept-alive one. A connection that
        has shown the key and is in the middle of a request is never dropped.
        """
        if len(self.connections) < self.limits.max_connections:
            return True
        ranked = [
            (0 if c.phase is Phase.LINGER else 1 if not c.trusted else 2, c.since, id(c), c)
            for c in self.connections.values()
            if not c.trusted or c.idle or c.phase is Phase.LINGER
        ]
        if not ranked:
            return False
        self._close(min(ranked)[-1])
        return True

    def _step(self, connection: Connection, *, writable: bool) -> None:
        if connection.phase is Phase.HEAD:
            self._read_head(connection)
        elif connection.phase is Phase.BODY:
            self._read_body(connection)
        elif connection.phase is Phase.ANSWER and writable:
            self._write(connection)
        elif connection.phase is Phase.LINGER:
            self._discard(connection)

    def _read_head(self, connection: Connection) -> None:
        """Take the head off the socket and not one byte more: the body waits in the kernel
        until the key and the length are known to be good."""
        peeked = connection.sock.recv(MAX_HEAD - len(connection.head), socket.MSG_PEEK)
        if not peeked:
            self._close(connection)
            return
        if connection.idle:  # the first byte of the next request: the head's time starts
            connection.idle = False
            connection.deadline = time.monotonic() + self.limits.head_timeout
        tail = bytes(connection.head[-3:])
        end = (tail + peeked).find(_END_OF_HEAD)
        take = len(peeked) if end < 0 else end + len(_END_OF_HEAD) - len(tail)
        taken = connection.sock.recv(take)
        connection.head += taken
        if end < 0 or len(taken) < take:
            if len(connection.head) >= MAX_HEAD:
                self._refuse(connection, HttpError(431, f"request head over {MAX_HEAD} bytes"))
            return
        try:
            connection.request = parse_head(bytes(connection.head))
            key = None if connection.admin else self.daemon.api_key
            connection.expected = body_length(connection.request, key)
        except HttpError as e:
            self._refuse(connection, e)
            return
        connection.trusted = True
        connection.phase = Phase.BODY
        connection.deadline = time.monotonic() + self.limits.body_timeout
        self._read_body(connection)  # usually already there, sent with the head

    def _read_body(self, connection: Connection) -> None:
        missing = connection.expected - len(connection.body)
        if missing > 0:
            chunk = connection.sock.recv(missing)
            if not chunk:
                self._close(connection)
                return
            connection.body += chunk
            if len(chunk) < missing:
                return
        assert connection.request is not None  # noqa: S101  # set before the BODY phase
        try:
            status, payload = respond(
                self.daemon, connection.admin, connection.request, bytes(connection.body)
            )
        except Exception as e:  # a bug met by one request must not stop every login
            log(f"error answering {connection.request.target[:80]!r}: {e!r}")
            status, payload = 500, {"error": "internal error"}
        close = status >= 400 or not connection.request.keep_alive()
        self._send(connection, answer(status, payload, close=close), close=close)

    def _refuse(self, connection: Connection, error: HttpError) -> None:
        """Answer an error from the head alone, and close."""
        request = connection.request
        length = (request.fields.get("content-length") or [""])[0] if request else ""
        # A well-formed small body the client sent along is thrown away after the answer;
        # anything else is never read at all.
        if _CONTENT_LENGTH.fullmatch(length) and int(length) <= MAX_BODY:
            connection.unread = int(length)
        self._send(connection, answer(error.status, {"error": str(error)}, close=True), close=True)

    def _send(self, connection: Connection, data: bytes, *, close: bool) -> None:
        connection.phase, connection.out, connection.close_after = Phase.ANSWER, data, close
        connection.deadline = time.monotonic() + self.limits.write_timeout
        self.selector.modify(connection.sock, selectors.EVENT_WRITE)
        self._write(connection)

    def _write(self, connection: Connection) -> None:
        sent = connection.sock.send(connection.out)
        connection.out = connection.out[sent:]
        if not connection.out:
            self._finish(connection)

    def _finish(self, connection: Connection) -> None:
        """After an answer: wait for the next request, or close.

        Closing a socket with unread data makes the kernel send a reset, which can destroy
        the answer before the client reads it; so after an error answer a declared body of
        at most MAX_BODY is read and thrown away for up to linger_time, then the socket
        closes. Nothing else is ever read after an error.
        """
        now = time.monotonic()
        self.selector.modify(connection.sock, selectors.EVENT_READ)
        if not connection.close_after:
            connection.phase, connection.idle, connection.since = Phase.HEAD, True, now
            connection.deadline = now + self.limits.idle_timeout
            connection.head, connection.body, connection.request = bytearray(), bytearray(), None
            return
        connection.sock.shutdown(socket.SHUT_WR)
        if connection.unread <= 0:
            self._close(connection)
            return
        connection.phase, connection.since = Phase.LINGER, now
        connection.deadline = now + self.limits.linger_time

    def _discard(self, connection: Connection) -> None:
        chunk = connection.sock.recv(min(connection.unread, 16 * 1024))
        connection.unread -= len(chunk)
        if not chunk or connection.unread <= 0:
            self._close(connection)

    def _close(self, connection: Connection) -> None:
        if self.connections.pop(connection.sock, None) is not None:
            self.selector.unregister(connection.sock)
        connection.sock.close()


# --- the process -------------------------------------------------------------------------------


def drop_privileges() -> None:
    """Root only reads the API key; the daemon runs as the bans user."""
    if os.getuid() != 0:
        return
    import pwd  # noqa: PLC0415  # only the daemon needs it

    entry = pwd.getpwnam(SERVICE_USER)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def serve() -> int:
    try:
        settings = load_settings()
    except (OSError, SettingsError) as e:
        log(f"cannot start: {e}")
        return 1
    api_key = API_KEY_FILE.read_bytes().strip()
    if len(api_key) < 16:
        log(f"cannot start: the secret bans_api_key ({API_KEY_FILE}) is missing or too short")
        return 1
    drop_privileges()
    book = BanBook(settings)
    if STATE_FILE.exists():
        try:
            book.load(STATE_FILE.read_bytes(), time.time())
        except (OSError, ValueError, TypeError) as e:
            log(f"ignoring unreadable {STATE_FILE} ({e}); starting with no bans")
    daemon = Daemon(book, api_key, STATE_FILE)
    server = Server.bind(
        daemon,
        policy=("0.0.0.0", POLICY_PORT),  # noqa: S104  # the back-end network; X-API-Key required
        admin=("127.0.0.1", ADMIN_PORT),
    )

    def stop(_signal: int, _frame: object) -> None:
        server.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exempt = " ".join(str(network) for network in settings.exempt) or "none"
    log(
        f"policy server on :{POLICY_PORT}: ban after {settings.max_failures} failed logins "
        f"within {settings.window}s for {settings.ban_time}s, delay up to "
        f"{settings.max_delay}s; exempt: {exempt}; {len(book.bans)} ban(s) restored"
    )
    server.serve_forever()
    server.close()
    if daemon.unsaved:  # a ban from the last second must survive `docker compose stop`
        daemon.save(time.time(), force=True)
    return 0


def call_admin(path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(payload or {}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{ADMIN_PORT}{path}", data=data, method="POST"
    )
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310  # fixed http://127.0.0.1 URL
        result: dict[str, Any] = json.loads(response.read())
        return result


def main(argv: list[str]) -> int:  # noqa: PLR0911  # one return per command
    name = Path(argv[0]).name
    command = name if name in ("check-config", "healthcheck") else (argv[1:2] or ["serve"])[0]
    try:
        if command == "serve":
            return serve()
        if command == "check-config":
            settings = load_settings()
            print(f"bans: the configuration is valid ({SETTINGS_FILE}): {settings}")
            return 0
        if command in ("health", "healthcheck"):
            call_admin("/health")
            return 0
        if command == "list":
            print(json.dumps(call_admin("/bans")))
            return 0
        if command == "clear" and len(argv) == 3:
            print(json.dumps(call_admin("/clear", {"address": argv[2]})))
            return 0
        if command == "clear-all":
            print(json.dumps(call_admin("/clear-all")))
            return 0
    except SettingsError as e:
        print(f"bans: {e}")
        return 1
    except (OSError, urllib.error.URLError, ValueError) as e:
        print(f"bans: {e}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
