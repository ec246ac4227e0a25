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

import contextlib
import dataclasses
import hmac
import ipaddress
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
MAX_BODY = 64 * 1024
# Bounds against memory exhaustion by a flood of distinct addresses or logins.
MAX_TRACKED_CLIENTS = 100_000
MAX_FINGERPRINTS = 64
IPV6_PREFIX = 64

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(Exception):
    """A bad line in a settings file; the message starts with FILE:LINE."""


@dataclasses.dataclass(frozen=True)
class Settings:
    max_failures: int = 10
    window: int = 600  # seconds
    ban_time: int = 3600  # seconds
    max_delay: int = 15  # seconds
    exempt: tuple[Network, ...] = ()

    def is_exempt(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return address.is_loopback or any(address in network for network in self.exempt)


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
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return None if address is None else str(address)


@dataclasses.dataclass
class Ban:
    since: float
    until: float
    failures: int
    protocols: list[str]
    logins: list[str]


@dataclasses.dataclass
class Failures:
    # (login, password hash) -> when it last failed
    seen: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)
    protocols: set[str] = dataclasses.field(default_factory=set)
    unique: int = 0  # numbers the failures that carry no password hash

    def recent(self, since: float) -> int:
        return sum(1 for when in self.seen.values() if when > since)


class BanBook:
    """Failures and bans per client; every method takes the current time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.failures: dict[str, Failures] = {}
        self.bans: dict[str, Ban] = {}
        self.lock = threading.Lock()

    def delay(self, key: str, now: float) -> int:
        """Seconds to hold a login from this client: 0, then 1, 2, 4, … up to max_delay."""
        record = self.failures.get(key)
        count = record.recent(now - self.settings.window) if record else 0
        if count == 0:
            return 0
        return min(self.settings.max_delay, 2 ** min(count - 1, 16))

    def allow(self, remote: str, now: float) -> tuple[int, str]:
        """Dovecot's `allow` question: (-1, why) refuses, (N, "") delays N s, (0, "") allows."""
        key = self._key(remote)
        if key is None:
            return 0, ""
        with self.lock:
            ban = self.bans.get(key)
            if ban is not None and ban.until > now:
                return -1, "Too many failed logins from your address; try again later"
            if ban is not None:
                del self.bans[key]
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
            if key in self.bans and self.bans[key].until > now:
                return None  # a login that was already under way when the ban began
            record = self.failures.get(key)
            if record is None:
                if len(self.failures) >= MAX_TRACKED_CLIENTS:
                    self._prune(now)
                record = self.failures.setdefault(key, Failures())
            if not password_hash:
                # No hash to tell passwords apart: every such failure counts.
                record.unique += 1
                password_hash = f"#{record.unique}"
            record.seen[(login[:256].lower(), password_hash)] = now
            record.protocols.add(protocol[:16] or "?")
            if len(record.seen) > MAX_FINGERPRINTS:
                oldest = min(record.seen, key=record.seen.__getitem__)
                del record.seen[oldest]
            count = record.recent(now - self.settings.window)
            if count < self.settings.max_failures:
                return None
            logins = sorted({login for login, _ in record.seen})
            ban = Ban(
                since=now,
                until=now + self.settings.ban_time,
                failures=count,
                protocols=sorted(record.protocols),
                logins=logins[:5],
            )
            self.bans[key] = ban
            del self.failures[key]
            return ban

    def _key(self, remote: str) -> str | None:
        """The client's key, or None when it is not policed (no address, or exempt)."""
        address = client_address(remote)
        if address is None or self.settings.is_exempt(address):
            return None
        return client_key(remote)

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
        for key, fields in (data.get("bans") or {}).items():
            if client_key(_host(key)) != key:
                continue
            ban = Ban(**fields)
            if ban.until > now:
                self.bans[key] = ban


def _host(key: str) -> str:
    return key.split("/", 1)[0]


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


# --- the daemon --------------------------------------------------------------------------------


def log(message: str) -> None:
    sys.stderr.write(f"bansd: {message}\n")
    sys.stderr.flush()


class Daemon:
    def __init__(self, book: BanBook, api_key: bytes, state_file: Path) -> None:
        self.book = book
        self.api_key = api_key
        self.state_file = state_file
        self.save_lock = threading.Lock()

    def save(self) -> None:
        """Write the bans for a restart; a full or broken volume must not stop the policy."""
        with self.save_lock:
            temporary = self.state_file.with_suffix(".tmp")
            try:
                temporary.write_bytes(self.book.dump())
                temporary.replace(self.state_file)
            except OSError as e:
                log(f"cannot save the bans to {self.state_file} ({e}); they last until a restart")

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
                self.save()
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
                self.save()
            return {"cleared": cleared, "address": client_key(_host(address))}
        if path == "/clear-all":
            count = self.book.clear_all()
            log(f"cleared every ban ({count}) (by the operator)")
            self.save()
            return {"cleared": count}
        if path == "/health":
            return {"ok": True}
        raise KeyError(path)


def handler(daemon: Daemon, *, admin: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "bansd"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per login would drown the log; bans are logged instead

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _handle(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._answer(413, {"error": "request too large"})
                    return
                body = self.rfile.read(length) if length else b""
                request = json.loads(body) if body else {}
                if not isinstance(request, dict):
                    raise ValueError("not a JSON object")
                url = urlsplit(self.path)
                if admin:
                    self._answer(200, daemon.admin(url.path, request))
                    return
                given = (self.headers.get("X-API-Key") or "").strip().encode()
                if not hmac.compare_digest(given, daemon.api_key):
                    self._answer(403, {"error": "wrong or missing X-API-Key"})
                    return
                command = (parse_qs(url.query).get("command") or [""])[0]
                self._answer(200, daemon.policy(command, request))
            except KeyError:
                self._answer(404, {"error": "unknown command"})
            except ValueError as e:
                self._answer(400, {"error": str(e)[:200]})

        def _answer(self, code: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


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
    policy_server = ThreadingHTTPServer(("0.0.0.0", POLICY_PORT), handler(daemon, admin=False))  # noqa: S104  # the back-end network; X-API-Key required
    admin_server = ThreadingHTTPServer(("127.0.0.1", ADMIN_PORT), handler(daemon, admin=True))
    policy_server.daemon_threads = admin_server.daemon_threads = True
    threading.Thread(target=admin_server.serve_forever, daemon=True).start()
    exempt = " ".join(str(network) for network in settings.exempt) or "none"
    log(
        f"policy server on :{POLICY_PORT}: ban after {settings.max_failures} failed logins "
        f"within {settings.window}s for {settings.ban_time}s, delay up to "
        f"{settings.max_delay}s; exempt: loopback, {exempt}; {len(book.bans)} ban(s) restored"
    )
    with contextlib.suppress(KeyboardInterrupt):
        policy_server.serve_forever()
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
