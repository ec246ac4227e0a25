"""Brute-force bans: policy.bans validation, what reaches Dovecot, Compose and bansd, bansd's
counting (pure logic, time passed in) and its policy API, and the CLI's error lines."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mailstack import bans
from mailstack.cli.main import app
from mailstack.config import validate_config
from mailstack.errors import ConfigError, UsageError
from mailstack.render import RenderInputs, render_stack
from mailstack.resources import build_contexts_dir
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


def test_successes_refusals_loopback_and_exempt_networks_never_count() -> None:
    ledger = book(exempt=(bansd._network("198.51.100.0/24", "test"),))
    for n in range(5):
        ledger.report("192.0.2.1", "a@x", f"p{n}", "imap", success=True, refused=False, now=n)
        ledger.report("192.0.2.1", "a@x", f"q{n}", "imap", success=False, refused=True, now=n)
        fail(ledger, "127.0.0.1", n, f"p{n}")
        fail(ledger, "198.51.100.7", n, f"p{n}")
    assert ledger.allow("192.0.2.1", now=9) == (0, "")
    assert ledger.allow("127.0.0.1", now=9) == (0, "")
    assert ledger.allow("198.51.100.7", now=9) == (0, "")
    assert ledger.snapshot(9)["delayed"] == []
    assert ledger.allow("", now=9) == (0, "")  # no address (a local process): not policed


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


# --- bansd: the policy API Dovecot talks to ------------------------------------------------------


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "bans.json"


@pytest.fixture
def policy_api(state_file: Path) -> Iterator[str]:
    daemon = bansd.Daemon(book(), b"k" * 32, state_file)
    server = ThreadingHTTPServer(("127.0.0.1", 0), bansd.handler(daemon, admin=False))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _post(url: str, body: dict[str, Any], key: str | None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")  # noqa: S310  # a local test server
    if key is not None:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310  # as above
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_policy_api_answers_dovecot_and_refuses_a_wrong_key(
    policy_api: str, state_file: Path
) -> None:
    allow = f"{policy_api}?command=allow"
    report = f"{policy_api}?command=report"
    assert _post(allow, {"remote": "192.0.2.1"}, None)[0] == 403
    assert _post(allow, {"remote": "192.0.2.1"}, "k" * 31 + "x")[0] == 403
    assert _post(allow, {"remote": "192.0.2.1"}, " " + "k" * 32) == (200, {"status": 0, "msg": ""})
    failure = {"remote": "192.0.2.1", "login": "a@x", "protocol": "smtp", "success": False}
    for n in range(3):
        assert (
            _post(report, {**failure, "pwhash": f"{n:04x}", "policy_reject": False}, "k" * 32)[0]
            == 200
        )
    status, answer = _post(allow, {"remote": "192.0.2.1"}, "k" * 32)
    assert status == 200 and answer["status"] == -1
    assert "192.0.2.1" in json.loads(state_file.read_text())["bans"]  # kept for a restart
    assert _post(f"{policy_api}?command=nonsense", {}, "k" * 32)[0] == 404


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
