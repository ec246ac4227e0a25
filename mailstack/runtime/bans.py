"""Brute-force bans: what the stack's bans service (bansd, Dovecot's auth policy server) holds.

bansd counts failed logins per client address (IMAP, ManageSieve and SMTP AUTH all
authenticate through Dovecot), delays the next attempts and bans an address for a while
after too many failures (policy.bans in mailstack.yaml). Its admin API listens only on the
container's loopback, so it is reached with `docker compose exec bans bansd …`.

`bans_report` is the `bans` host report (mailstack.runtime.reports) the admin service's
Bans page and GET /api/v1/bans read; `client_address` is the one rule for an address to
clear, which the CLI, the API (before it queues a ban.clear host job) and the job's runner
all use. This module imports nothing of pydantic, typer or rich at run time (the admin
service loads it for that rule).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mailstack import services
from mailstack.adapters.psql import Executor
from mailstack.errors import ExternalCommandFailed, MailstackError, UsageError

if TYPE_CHECKING:  # types only: the admin service loads this module without pydantic
    from mailstack.stack.config import Config
    from mailstack.stack.stackdir import Stack

SERVICE = services.BANS.name
PROGRAM = "/usr/local/bin/bansd"
# The report's lists share what one host report may hold (hostreports.MAX_REPORT_BYTES),
# with room for the rest of its body: a ban is ~200 bytes, ~2 KiB with the longest logins.
REPORT_LIST_BYTES = 90_000


@dataclass(frozen=True)
class Ban:
    address: str  # an IPv4 address, or an IPv6 /64
    since: str  # ISO 8601, UTC
    until: str
    seconds_left: int
    failures: int
    protocols: tuple[str, ...]  # imap, smtp, sieve
    logins: tuple[str, ...]  # a few of the logins tried

    def __str__(self) -> str:
        return (
            f"{self.address}  banned until {self.until} ({_minutes(self.seconds_left)} left) "
            f"after {self.failures} failed logins ({', '.join(self.protocols)}; tried: "
            f"{', '.join(self.logins) or '-'})"
        )


@dataclass(frozen=True)
class Delayed:
    address: str
    failures: int
    delay: int  # seconds its next login waits

    def __str__(self) -> str:
        return (
            f"{self.address}  {self.failures} recent failed login(s), "
            f"next login waits {self.delay}s"
        )


@dataclass(frozen=True)
class BansReport:
    bans: tuple[Ban, ...]
    delayed: tuple[Delayed, ...]
    max_failures: int
    window: int
    ban_time: int
    exempt: tuple[str, ...]

    def __str__(self) -> str:
        lines = [str(ban) for ban in self.bans] or ["no address is banned"]
        lines += [str(client) for client in self.delayed]
        lines.append(
            f"(ban after {self.max_failures} failed logins within {_minutes(self.window)} for "
            f"{_minutes(self.ban_time)}; exempt: {', '.join(self.exempt) or 'none'})"
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class ClearResult:
    cleared: tuple[str, ...]  # addresses whose ban or failures were dropped
    not_found: tuple[str, ...]  # addresses that were neither banned nor failing
    all_bans: int | None = None  # --clear-all: how many bans were lifted

    def __str__(self) -> str:
        lines = [f"cleared {address}: it may log in again" for address in self.cleared]
        lines += [f"{address} was not banned (nothing to clear)" for address in self.not_found]
        if self.all_bans is not None:
            lines.append(f"lifted every ban ({self.all_bans}) and forgot every failed login")
        return "\n".join(lines)


def client_address(text: str) -> str:
    """An IP address as the operator typed it (IPv4 or IPv6), normalised; UsageError if not."""
    value = text.strip()
    try:
        address = ipaddress.ip_address(value.split("/", 1)[0] if "/" in value else value)
    except ValueError:
        raise UsageError(
            f"ADDRESS: {text[:80]!r} is not an IP address (e.g. 192.0.2.10 or 2001:db8::1)"
        ) from None
    if "/" in value and not (address.version == 6 and value.endswith("/64")):
        raise UsageError(
            f"ADDRESS: {text[:80]!r} is not accepted: give one address (IPv6 bans cover its /64)"
        )
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        # fe80::1%eth0: a zone names an interface of this host, never a client's address.
        raise UsageError(f"ADDRESS: {text[:80]!r} is not accepted: give it without the %zone")
    return str(address)


def report(compose: Executor, config: Config) -> BansReport:
    """The bans in force and the addresses being delayed, from the running bans service."""
    data = _call(compose, config, ["list"])
    settings = data.get("settings") or {}
    return BansReport(
        bans=tuple(
            Ban(
                address=str(item["address"]),
                since=str(item["since"]),
                until=str(item["until"]),
                seconds_left=int(item["seconds_left"]),
                failures=int(item["failures"]),
                protocols=tuple(str(p) for p in item.get("protocols") or ()),
                logins=tuple(str(login) for login in item.get("logins") or ()),
            )
            for item in data.get("bans") or ()
        ),
        delayed=tuple(
            Delayed(str(item["address"]), int(item["failures"]), int(item["delay"]))
            for item in data.get("delayed") or ()
        ),
        max_failures=int(settings.get("max_failures", 0)),
        window=int(settings.get("window", 0)),
        ban_time=int(settings.get("ban_time", 0)),
        exempt=tuple(str(network) for network in settings.get("exempt") or ()),
    )


def bans_report(stack: Stack) -> dict[str, Any]:
    """The `bans` host report: the bans in force and the delayed addresses, each list cut to
    fit one report (how many were left out said), and the policy they follow."""
    found = report(stack.compose, stack.config)
    bans, bans_left_out = bounded([asdict(ban) for ban in found.bans], REPORT_LIST_BYTES)
    room = REPORT_LIST_BYTES - _json_bytes(bans)
    delayed, delayed_left_out = bounded([asdict(client) for client in found.delayed], room)
    return {
        "bans": bans,
        "bans_left_out": bans_left_out,
        "delayed": delayed,
        "delayed_left_out": delayed_left_out,
        "settings": {
            "max_failures": found.max_failures,
            "window": found.window,
            "ban_time": found.ban_time,
            "exempt": list(found.exempt),
        },
    }


def bounded(items: Sequence[dict[str, Any]], budget: int) -> tuple[list[dict[str, Any]], int]:
    """The first items whose JSON fits in `budget` bytes, and how many were left out."""
    kept: list[dict[str, Any]] = []
    used = 0
    for item in items:
        used += _json_bytes(item) + 1  # and its comma
        if used > budget:
            break
        kept.append(item)
    return kept, len(items) - len(kept)


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8"))


def clear(compose: Executor, config: Config, addresses: list[str]) -> ClearResult:
    """Lift the bans of these addresses and forget their failed logins."""
    normalised = [client_address(address) for address in addresses]
    cleared: list[str] = []
    not_found: list[str] = []
    for address in normalised:
        answer = _call(compose, config, ["clear", address])
        shown = str(answer.get("address") or address)
        (cleared if answer.get("cleared") else not_found).append(shown)
    return ClearResult(tuple(cleared), tuple(not_found))


def clear_all(compose: Executor, config: Config) -> ClearResult:
    answer = _call(compose, config, ["clear-all"])
    return ClearResult((), (), all_bans=int(answer.get("cleared", 0)))


def _call(compose: Executor, config: Config, argv: list[str]) -> dict[str, Any]:
    if not config.policy.bans.enabled:
        raise UsageError(
            "brute-force bans are off (policy.bans.enabled is false in mailstack.yaml)",
            hint="set policy.bans.enabled: true, then `mailstack render` and `mailstack up`",
        )
    try:
        output = compose.exec(SERVICE, [PROGRAM, *argv], timeout=30)
    except ExternalCommandFailed as e:
        if "not running" in e.output or "No such service" in e.output:
            raise MailstackError(
                "the bans service is not running", hint="start the stack: `mailstack up`"
            ) from None
        raise
    try:
        data = json.loads(output)
    except ValueError:
        raise MailstackError(
            f"the bans service gave an answer that is not JSON: {output[:200]!r}"
        ) from None
    if not isinstance(data, dict):
        raise MailstackError("the bans service gave an unexpected answer")
    return data


def _minutes(seconds: int) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds >= 60:
        return f"{seconds // 60}m" + (f"{seconds % 60}s" if seconds % 60 else "")
    return f"{seconds}s"
