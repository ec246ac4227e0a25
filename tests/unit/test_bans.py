"""Brute-force bans: policy.bans validation, what reaches Dovecot, Compose and bansd, bansd's
counting (pure logic, time passed in) and its limits, its policy API served on loopback and
what an attacker on its network can do to it, and the CLI's error lines."""

from __future__ import annotations

import contextlib
import gc
import http.client
import importlib.util
import ipaddress
import json
import socket
import sys
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mailstack.cli.main import app
from mailstack.errors import ConfigError, UsageError
from mailstack.resources import build_contexts_dir
from mailstack.runtime import bans
from mailstack.stack.config import validate_config
from mailstack.stack.render import RenderInputs, render_stack
from tests.conftest import REFERENCE


def _load_bansd() -> ModuleType:
    path = build_contexts_dir() / "bans" / "bansd.py"
    spec = importlib.util.spec_from_file_location("bansd", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bansd"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bansd = _load_bansd()


def with_bans(**values: Any) -> dict[str, Any]:
    return {**REFERENCE, "policy": {"bans": values}}


def rendered(data: dict[str, Any]) -> dict[str, str]:
    files = render_stack(RenderInputs(validate_config(data), "1"))
    return {path: content.decode() for path, content in files.items()}


def book(**settings: Any) -> Any:
    defaults: dict[str, Any] = {"max_failures": 3, "window": 600, "ban_time": 60, "max_delay": 8}
    return bansd.BanBook(bansd.Settings(**{**defaults, **settings}))


def fail(ledger: Any, remote: str, now: float, password: str = "", login: str = "a@x") -> Any:
    return ledger.report(remote, login, password, "imap", success=False, refused=False, now=now)


# --- policy.bans in mailstack.yaml ----------------------------------------------------------


def test_defaults_ban_after_ten_failures_for_an_hour() -> None:
    policy = validate_config(REFERENCE).policy.bans
    assert policy.enabled is True
    assert (policy.max_failures, policy.window, policy.ban_time) == (10, "10m", "1h")
    assert policy.max_delay == "15s" and policy.exempt_networks == []
    assert policy.fail_closed is False


def test_durations_are_read_as_operators_write_them() -> None:
    policy = validate_config(with_bans(window=900, ban_time="2H", max_delay="0")).policy.bans
    assert (policy.window, policy.ban_time, policy.max_delay) == ("900s", "2h", "0")


def test_exempt_networks_take_addresses_and_networks() -> None:
    networks = ["192.0.2.10", "198.51.100.0/24", "2001:db8::/48"]
    policy = validate_config(with_bans(exempt_networks=networks)).policy.bans
    assert policy.exempt_networks == ["192.0.2.10/32", "198.51.100.0/24", "2001:db8::/48"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"window": "10 minutes"}, "policy.bans.window: '10 minutes' is not a duration"),
        ({"window": 30}, "policy.bans.window: 30 is out of range (1m–1d)"),
        ({"ban_time": "31d"}, "policy.bans.ban_time: '31d' is out of range (1s–30d)"),
        ({"max_delay": "1m"}, "policy.bans.max_delay: '1m' is out of range (0s–30s)"),
        ({"max_failures": 1}, "policy.bans.max_failures: 1 is too small (at least 2)"),
        ({"max_failures": "5"}, "policy.bans.max_failures: '5' is not a whole number"),
        ({"exempt_networks": ["10.0.0.1/8"]}, "'10.0.0.1/8' is not an address or a network"),
        ({"exempt_networks": ["10.0.0.0/8\nx"]}, "contains a control character"),
        ({"exempt_networks": "10.0.0.0/8"}, "policy.bans.exempt_networks"),
        ({"ban_tim": "1h"}, "policy.bans.ban_tim: is not a known key (did you mean ban_time?)"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config(with_bans(**values))
    assert message in caught.value.message
    assert "\n" not in caught.value.message


# --- what the render hands to Dovecot, Compose and bansd ---------------------------------------


def test_dovecot_asks_the_bans_service_about_every_login() -> None:
    dovecot = rendered(REFERENCE)["config/dovecot/dovecot.conf"]
    assert "auth_policy_server_url = http://bans:12350/" in dovecot
    assert "remote=%{rip}" in dovecot and "pwhash=%{hashed_password}" in dovecot
    assert "auth_policy_report_after_auth = yes" in dovecot
    assert "auth_policy_reject_on_fail = no" in dovecot  # fail open: mail goes on without bansd
    # The key and nonce come from a secret at start, never from a generated file.
    assert "!include_try /run/mailstack/auth-policy.conf" in dovecot
    assert "auth_policy_server_api_header" not in dovecot
    assert "auth_policy_hash_nonce" not in dovecot


def test_the_bans_service_is_hardened_and_on_the_back_end_only() -> None:
    compose = yaml.safe_load(rendered(REFERENCE)["compose.yaml"])
    service = compose["services"]["bans"]
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert service["cap_add"] == ["SETGID", "SETUID"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert set(service["networks"]) == {"backend"} and "ports" not in service
    assert service["mem_limit"] and service["pids_limit"] and service["healthcheck"]
    assert "bans_api_key" in compose["services"]["dovecot"]["secrets"]
    assert compose["services"]["dovecot"]["depends_on"]["bans"]["condition"] == "service_healthy"


def test_fail_closed_makes_dovecot_refuse_logins_while_bansd_does_not_answer() -> None:
    dovecot = rendered(with_bans(fail_closed=True))["config/dovecot/dovecot.conf"]
    assert "auth_policy_reject_on_fail = yes" in dovecot
    assert "auth_policy_reject_on_fail = no" not in dovecot
    with pytest.raises(ConfigError, match=r"policy\.bans\.fail_closed"):
        validate_config(with_bans(fail_closed="sometimes"))


def test_bans_off_removes_the_service_and_the_policy() -> None:
    files = rendered(with_bans(enabled=False))
    compose = yaml.safe_load(files["compose.yaml"])
    assert "bans" not in compose["services"]
    assert "bans" not in compose["services"]["dovecot"].get("depends_on", {})
    assert "bans_api_key" not in compose["services"]["dovecot"]["secrets"]
    assert "auth_policy" not in files["config/dovecot/dovecot.conf"]
    assert not any(path.startswith("config/bans/") for path in files)


def test_the_rendered_settings_are_what_bansd_reads() -> None:
    data = with_bans(
        max_failures=7,
        window="15m",
        ban_time="2h",
        max_delay="10s",
        exempt_networks=["10.1.0.0/16"],
    )
    text = rendered(data)["config/bans/bans.conf"]
    settings = bansd.parse_settings([("bans.conf", text)])
    assert (settings.max_failures, settings.window, settings.ban_time) == (7, 900, 7200)
    assert settings.max_delay == 10
    assert [str(network) for network in settings.exempt] == ["10.1.0.0/16"]


# --- bansd: its settings file ------------------------------------------------------------------


def test_an_override_file_wins_and_errors_name_file_and_line() -> None:
    settings = bansd.parse_settings(
        [("a.conf", "max_failures = 5\n"), ("b.conf", "max_failures = 9")]
    )
    assert settings.max_failures == 9
    with pytest.raises(bansd.SettingsError, match=r"^b.conf:2: unknown key 'ban_tme'"):
        bansd.parse_settings([("b.conf", "# comment\nban_tme = 5\n")])
    with pytest.raises(bansd.SettingsError, match=r"^a.conf:1: window must be a whole number"):
        bansd.parse_settings([("a.conf", "window = 0\n")])
    with pytest.raises(bansd.SettingsError, match=r"'10.0.0.1/8' is not a network"):
        bansd.parse_settings([("a.conf", "exempt = 10.0.0.1/8\n")])


# --- bansd: counting, delaying, banning ----------------------------------------------------------


def test_the_delay_doubles_with_each_failure_up_to_max_delay() -> None:
    ledger = book(max_failures=10, max_delay=8)
    delays = []
    for n in range(6):
        delays.append(ledger.allow("192.0.2.1", now=100 + n)[0])
        fail(ledger, "192.0.2.1", now=100 + n, password=f"p{n}")
    assert delays == [0, 1, 2, 4, 8, 8]


def test_enough_distinct_failures_ban_only_that_address() -> None:
    ledger = book()
    assert fail(ledger, "192.0.2.1", 10, "p1") is None
    assert fail(ledger, "192.0.2.1", 11, "p2") is None
    ban = fail(ledger, "192.0.2.1", 12, "p3")
    assert ban is not None and ban.until == 72 and ban.failures == 3
    status, message = ledger.allow("192.0.2.1", now=13)
    assert status == -1 and "Too many failed logins" in message
    assert ledger.allow("192.0.2.2", now=13) == (0, "")


def test_one_password_retried_counts_once_but_unhashed_failures_each_count() -> None:
    ledger = book()
    for second in range(10):
        assert fail(ledger, "192.0.2.1", second, "samehash") is None
    assert ledger.allow("192.0.2.1", now=11)[0] == 1  # one failure: a 1 s delay
    # No password hash (another mechanism): nothing tells the tries apart, each counts.
    assert fail(ledger, "192.0.2.9", 1) is None
    assert fail(ledger, "192.0.2.9", 2) is None
    assert fail(ledger, "192.0.2.9", 3) is not None


def test_bans_and_failures_expire() -> None:
    ledger = book(window=100, ban_time=60)
    fail(ledger, "192.0.2.1", 0, "p1")
    fail(ledger, "192.0.2.1", 1, "p2")
    assert ledger.allow("192.0.2.1", now=50)[0] == 2
    assert ledger.allow("192.0.2.1", now=102)[0] == 0  # outside the window
    for n in range(3):
        fail(ledger, "192.0.2.3", 200 + n, f"p{n}")
    assert ledger.allow("192.0.2.3", now=261)[0] == -1
    assert ledger.allow("192.0.2.3", now=263) == (0, "")
    assert ledger.snapshot(263)["bans"] == []


def test_successes_refusals_and_exempt_networks_never_count() -> None:
    ledger = book(exempt=(bansd._network("198.51.100.0/24", "test"),))
    for n in range(5):
        ledger.report("192.0.2.1", "a@x", f"p{n}", "imap", success=True, refused=False, now=n)
        ledger.report("192.0.2.1", "a@x", f"q{n}", "imap", success=False, refused=True, now=n)
        fail(ledger, "198.51.100.7", n, f"p{n}")
    assert ledger.allow("192.0.2.1", now=9) == (0, "")
    assert ledger.allow("198.51.100.7", now=9) == (0, "")
    assert ledger.snapshot(9)["delayed"] == []
    assert ledger.allow("", now=9) == (0, "")  # no address (a local process): not policed


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_a_loopback_address_is_counted_and_banned_like_any_other(address: str) -> None:
    """An auth client names the address itself (rip, x-originating-ip): claiming loopback
    must not switch the defence off."""
    ledger = book()
    for n in range(2):
        assert fail(ledger, address, n, f"p{n}") is None
    assert ledger.allow(address, now=2)[0] == 2
    assert fail(ledger, address, 3, "p3") is not None
    assert ledger.allow(address, now=4)[0] == -1


def test_loopback_is_exempt_when_listed() -> None:
    settings = bansd.parse_settings([("bans.conf", "exempt = 127.0.0.0/8 ::1/128\n")])
    ledger = book(exempt=settings.exempt)
    for n in range(5):
        fail(ledger, "127.0.0.1", n, f"p{n}")
        fail(ledger, "::1", n, f"p{n}")
    assert ledger.allow("127.0.0.1", now=9) == (0, "")
    assert ledger.allow("::1", now=9) == (0, "")
    assert ledger.snapshot(9)["delayed"] == []


def test_ipv6_clients_count_per_slash_64_and_mapped_ipv4_as_ipv4() -> None:
    ledger = book()
    fail(ledger, "2001:db8:1:2::1", 1, "p1")
    fail(ledger, "2001:db8:1:2::ffff", 2, "p2")
    assert fail(ledger, "2001:db8:1:2:aaaa::3", 3, "p3") is not None
    assert ledger.allow("2001:db8:1:2::77", now=4)[0] == -1
    assert ledger.allow("2001:db8:1:3::1", now=4)[0] == 0
    assert bansd.client_key("::ffff:192.0.2.4") == "192.0.2.4"
    assert [ban["address"] for ban in ledger.snapshot(4)["bans"]] == ["2001:db8:1:2::/64"]


def test_clear_forgets_one_address_and_clear_all_every_one() -> None:
    ledger = book()
    for address in ("192.0.2.1", "192.0.2.2"):
        for n in range(3):
            fail(ledger, address, n, f"p{n}")
    assert ledger.clear("192.0.2.1") is True
    assert ledger.clear("192.0.2.1") is False
    assert ledger.allow("192.0.2.1", now=5) == (0, "")
    assert ledger.clear_all() == 1
    assert ledger.allow("192.0.2.2", now=5) == (0, "")


def test_bans_survive_a_restart_until_they_expire() -> None:
    ledger = book(ban_time=60)
    for address in ("192.0.2.1", "192.0.2.2"):
        for n in range(3):
            fail(ledger, address, 100 * (address == "192.0.2.2") + n, f"p{n}")
    restarted = book(ban_time=60)
    restarted.load(ledger.dump(), now=120)
    assert restarted.allow("192.0.2.1", now=120)[0] == 0  # banned 2..62: over
    assert restarted.allow("192.0.2.2", now=120)[0] == -1  # banned 102..162: still on


# --- bansd: what the ban book may hold ----------------------------------------------------------


def _deep_size(root: object) -> int:
    """Bytes held by root and everything it references (each object counted once)."""
    seen: set[int] = set()
    stack, total = [root], 0
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, type):
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        stack.extend(gc.get_referents(item))
    return total


def _address(n: int) -> str:
    return str(ipaddress.IPv4Address("10.0.0.0") + n)


def test_tracked_addresses_are_bounded_and_the_least_recently_failing_goes_first() -> None:
    ledger = book(max_failures=10)
    assert ledger.capacity == bansd.MAX_TRACKED_CLIENTS
    fail(ledger, "198.51.100.1", 1, "p1")  # stops failing: forgotten when room is needed
    for n in range(bansd.MAX_TRACKED_CLIENTS + 100):
        fail(ledger, _address(n), 1, "p1")
        if n % 1000 == 0:  # goes on failing (one stale password: counts once)
            fail(ledger, "198.51.100.2", 1, "p1")
    assert len(ledger.failures) == bansd.MAX_TRACKED_CLIENTS
    assert ledger.allow("198.51.100.1", now=2) == (0, "")
    assert ledger.allow("198.51.100.2", now=2) == (1, "")


def test_more_failures_per_address_mean_fewer_addresses_tracked() -> None:
    slow = book(max_failures=100, window=50)
    assert slow.capacity == bansd.MAX_FINGERPRINTS // 100
    for n in range(120):  # never 100 within the window: only the newest 100 are kept
        assert fail(slow, "192.0.2.1", n, f"p{n}") is None
    assert len(slow.failures["192.0.2.1"].seen) == 100
    fast = book(max_failures=100)
    assert [fail(fast, "192.0.2.1", 1, f"p{n}") is None for n in range(100)] == [True] * 99 + [
        False
    ]


def test_a_full_ban_table_keeps_every_ban_until_it_expires_and_delays_the_next_offender() -> None:
    ledger = book(max_failures=2, ban_time=60, max_delay=2)
    for n in range(bansd.MAX_BANS):
        fail(ledger, _address(n), 1, "p1")
        assert fail(ledger, _address(n), 1, "p2") is not None
    late = "198.51.100.9"
    for n in range(3):
        assert fail(ledger, late, 10, f"p{n}") is None
    assert ledger.bans_withheld >= 1
    assert ledger.allow(late, now=11) == (2, "")  # not banned, but held max_delay
    assert ledger.allow(_address(0), now=60) == ledger.allow(_address(4999), now=60)
    assert ledger.allow(_address(0), now=60)[0] == -1  # no ban went early
    assert fail(ledger, late, 62, "p9") is not None  # the bans expired: room again


def test_offenders_left_unbanned_by_a_full_table_are_logged_once_a_minute(
    state_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = bansd.Daemon(book(), KEY.encode(), state_file)
    daemon.book.bans_withheld = 3
    daemon.tick(100)
    daemon.tick(101)
    daemon.book.bans_withheld = 5
    daemon.tick(130)
    daemon.tick(161)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert "3 more offender(s) only delayed" in lines[0]
    assert "2 more offender(s) only delayed" in lines[1]


def test_a_book_full_of_the_longest_logins_stays_within_its_memory_budget() -> None:
    ledger = book(max_failures=10, window=86400, ban_time=86400)
    login = "x" * 300 + "@example.test"
    protocols = ["imap", "smtp", "sieve", "pop3", "submission", "lmtp", "doveadm", "a", "b", "c"]
    for n in range(bansd.MAX_BANS + 10):  # banned
        remote = _address(1 << 20 | n)
        for f in range(10):
            ledger.report(
                remote, f"{f}{login}", f"{f:04x}", protocols[f], success=False, refused=False, now=1
            )
    for n in range(ledger.capacity + 10):  # failing, one short of a ban
        for f in range(9):
            fail(ledger, _address(n), 2, password=f"{f:04x}", login=f"{n}.{f}{login}")
    assert len(ledger.bans) == bansd.MAX_BANS
    assert len(ledger.failures) == ledger.capacity
    held = _deep_size((ledger.failures, ledger.bans))
    tracemalloc.start()
    try:
        ledger.dump()  # a save, and a listing for `mailstack security bans`
        ledger.snapshot(now=3)
        passing = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Beside Python's ~24 MiB and the connections' at most 5 MiB, within the 64 MiB limit:
    assert held + passing < 24 << 20, f"held {held >> 20} MiB, {passing >> 20} MiB more at peak"


# --- bansd: the policy API Dovecot talks to, and what an attacker on its network can do --------

KEY = "k" * 32
# Short times so the tests wait little, and fewer places than the attacks below take.
TEST_LIMITS = bansd.Limits(
    max_connections=16, head_timeout=1.0, body_timeout=1.0, idle_timeout=1.0, linger_time=0.5
)


@dataclass(frozen=True)
class PolicyApi:
    port: int
    admin_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "bans.json"


@pytest.fixture
def policy_api(state_file: Path) -> Iterator[PolicyApi]:
    """The real server (both APIs, one thread) on loopback ports, as the daemon runs it."""
    daemon = bansd.Daemon(book(), KEY.encode(), state_file)
    server = bansd.Server.bind(
        daemon, policy=("127.0.0.1", 0), admin=("127.0.0.1", 0), limits=TEST_LIMITS
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield PolicyApi(server.port(), server.port(admin=True))
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.close()


def _post(url: str, body: dict[str, Any], key: str | None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")  # noqa: S310  # a local test server
    if key is not None:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310  # as above
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes and read until the server closes (a timeout fails the test)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        return answer


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _rss() -> int:
    """This process's resident memory in bytes (the server runs in it)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


def _bans_after_three_failures(api: PolicyApi, remote: str) -> bool:
    failure = {"remote": remote, "login": "a@x", "protocol": "imap", "success": False}
    for n in range(3):
        status, _ = _post(f"{api.url}?command=report", {**failure, "pwhash": f"{n:04x}"}, KEY)
        assert status == 200
    status, answer = _post(f"{api.url}?command=allow", {"remote": remote}, KEY)
    return status == 200 and answer["status"] == -1


def test_the_policy_api_answers_dovecot_and_refuses_a_wrong_key(
    policy_api: PolicyApi, state_file: Path
) -> None:
    allow = f"{policy_api.url}?command=allow"
    # A wrong key with a small body: the answer arrives whole (not lost to a reset).
    assert _post(allow, {"remote": "192.0.2.1"}, None)[0] == 403
    assert _post(allow, {"remote": "192.0.2.1"}, "k" * 31 + "x")[0] == 403
    assert _post(allow, {"remote": "192.0.2.1"}, " " + KEY) == (200, {"status": 0, "msg": ""})
    assert _bans_after_three_failures(policy_api, "192.0.2.1")
    assert "192.0.2.1" in json.loads(state_file.read_text())["bans"]  # kept for a restart
    assert _post(f"{policy_api.url}?command=nonsense", {}, KEY)[0] == 404


def test_dovecot_keeps_one_connection_for_many_requests_until_it_idles(
    policy_api: PolicyApi,
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", policy_api.port, timeout=5)
    body = json.dumps({"remote": "192.0.2.1"})
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    sockets = []
    for _ in range(3):
        connection.request("POST", "/?command=allow", body=body, headers=headers)
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"status": 0, "msg": ""})
        sockets.append(connection.sock)
    assert sockets[0] is not None and sockets.count(sockets[0]) == 3
    started = time.monotonic()
    sockets[0].settimeout(TEST_LIMITS.idle_timeout + 2)
    assert sockets[0].recv(1) == b""  # the server closed it, after idle_timeout
    assert time.monotonic() - started >= TEST_LIMITS.idle_timeout - 0.2
    connection.close()


def test_the_admin_api_needs_no_key_and_lists_the_bans(policy_api: PolicyApi) -> None:
    assert _bans_after_three_failures(policy_api, "192.0.2.7")
    status, listing = _post(f"http://127.0.0.1:{policy_api.admin_port}/bans", {}, None)
    assert status == 200 and [ban["address"] for ban in listing["bans"]] == ["192.0.2.7"]


@pytest.mark.parametrize("length", ["200000000", "-1", None], ids=["200MB", "minus-1", "none"])
@pytest.mark.parametrize("key", [None, "k" * 31 + "x"], ids=["no-key", "wrong-key"])
def test_a_wrong_key_is_answered_from_the_head_alone_and_the_connection_closed(
    policy_api: PolicyApi, key: str | None, length: str | None
) -> None:
    head = (
        "POST /?command=allow HTTP/1.1\r\nHost: bans\r\n"
        + (f"X-API-Key: {key}\r\n" if key else "")
        + (f"Content-Length: {length}\r\n" if length else "")
        + "\r\n"
    )
    started = time.monotonic()
    # Not one body byte is sent: an answer proves the server did not wait to read one, and
    # _exchange returning proves it closed the connection.
    answer = _exchange(policy_api.port, head.encode())
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer
    assert b"wrong or missing X-API-Key" in answer
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ("Content-Length: -1", 400),
        ("Content-Length: 65537", 413),
        ("Content-Length: 99999999999999999999", 400),
        ("Content-Length: 5\r\nContent-Length: 7", 400),
        ("Transfer-Encoding: chunked", 411),
        ("", 411),
    ],
    ids=["negative", "over-64KiB", "huge", "two-lengths", "chunked", "no-length"],
)
def test_a_body_of_unknown_or_excessive_length_is_refused_before_it_is_read(
    policy_api: PolicyApi, fields: str, status: int
) -> None:
    head = f"POST /?command=allow HTTP/1.1\r\nX-API-Key: {KEY}\r\n" + (
        f"{fields}\r\n\r\n" if fields else "\r\n"
    )
    answer = _exchange(policy_api.port, head.encode())  # no body sent: answered and closed
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer


@pytest.mark.parametrize("key", [KEY, None], ids=["right-key", "no-key"])
def test_a_200_mb_flood_with_content_length_minus_one_is_refused_and_memory_stays_small(
    policy_api: PolicyApi, key: str | None
) -> None:
    before = _rss()
    peak = [before]
    flooding = threading.Event()

    def sample() -> None:
        while flooding.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.005)

    head = "POST /?command=allow HTTP/1.1\r\n" + (f"X-API-Key: {key}\r\n" if key else "")
    chunk = bytes(1 << 20)
    sent = 0
    flooding.set()
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with socket.create_connection(("127.0.0.1", policy_api.port), timeout=5) as sock:
            sock.sendall(f"{head}Content-Length: -1\r\n\r\n".encode())
            # The server answers and closes at once: the send fails with the buffers full.
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                while sent < 200 << 20:
                    sock.sendall(chunk)
                    sent += len(chunk)
    finally:
        flooding.clear()
        sampler.join()
    assert sent < 32 << 20, f"the server took {sent >> 20} MiB"
    assert peak[0] - before < 16 << 20, f"memory grew by {(peak[0] - before) >> 20} MiB"
    assert _bans_after_three_failures(policy_api, "192.0.2.9")


def test_idle_and_trickling_sockets_hold_no_thread_and_do_not_delay_a_good_request(
    policy_api: PolicyApi,
) -> None:
    threads = threading.active_count()
    address = ("127.0.0.1", policy_api.port)
    # 60 sockets, more than the server's 16 places: 30 silent, 30 sending a head byte by byte.
    silent = [socket.create_connection(address) for _ in range(30)]
    trickling = [socket.create_connection(address) for _ in range(30)]
    try:
        started = time.monotonic()
        status, answer = _post(f"{policy_api.url}?command=allow", {"remote": "192.0.2.1"}, KEY)
        assert (status, answer) == (200, {"status": 0, "msg": ""})
        assert time.monotonic() - started < 1.0
        # However slowly a head trickles in, it has head_timeout in all.
        until = time.monotonic() + TEST_LIMITS.head_timeout + 1.0
        while time.monotonic() < until:
            for sock in trickling:
                with contextlib.suppress(OSError):  # dropped already
                    sock.send(b"X")
            assert threading.active_count() == threads
            time.sleep(0.2)
        assert [_closed_by_server(sock) for sock in silent + trickling] == [True] * 60
        assert _bans_after_three_failures(policy_api, "192.0.2.10")
    finally:
        for sock in silent + trickling:
            sock.close()


# --- the command line --------------------------------------------------------------------------


def test_client_addresses_are_checked_before_the_stack_is_touched(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["security", "bans", "--clear", "192.0.2", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "ADDRESS: '192.0.2' is not an IP address" in result.output
    both = runner.invoke(
        app, ["security", "bans", "--clear", "192.0.2.1", "--clear-all", "--dir", str(tmp_path)]
    )
    assert both.exit_code == 2 and "--clear and --clear-all" in both.output
    assert bans.client_address(" 2001:DB8::1 ") == "2001:db8::1"
    assert bans.client_address("2001:db8::1/64") == "2001:db8::1"
    with pytest.raises(UsageError, match="give one address"):
        bans.client_address("192.0.2.0/24")
