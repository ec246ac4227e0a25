"""relay.* (a relay host, smarthost): the keys' rules, what the render makes of them, the
password's file, and how the queue's delay reasons become `check health`'s and `status`'s
lines. The real relay, its TLS and SASL, are tests/e2e/test_relay.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailstack.errors import ConfigError, MailstackError
from mailstack.runtime import relay
from mailstack.runtime.health import judge_relay
from mailstack.runtime.mailqueue import parse_postqueue_json
from mailstack.stack import stackfiles
from mailstack.stack.config import Config, validate_config
from mailstack.stack.render import RenderInputs, render_stack
from mailstack.stack.secrets import RELAY_PASSWORD, write_relay_password
from mailstack.stack.stackdir import Stack, StackDir
from mailstack.verdict import FAIL, PASS
from tests.unit.clirun import invoke, one_error_line
from tests.unit.compose_check import assert_compose_accepts
from tests.unit.fakes import FakeContainers

BASE: dict[str, Any] = {"hostname": "mail.example.org", "domain": "example.org"}
RELAY = {"host": "smtp.provider.example", "username": "acct-42@provider.example"}


def config(**relay_keys: object) -> Config:
    return validate_config({**BASE, "relay": relay_keys})


def render(**relay_keys: object) -> dict[str, str]:
    files = render_stack(RenderInputs(config(**relay_keys), "1.0"))
    return {path: data.decode() for path, data in files.items()}


def main_cf_settings(files: dict[str, str]) -> dict[str, str]:
    """main.cf's parameters, the last assignment of each winning (as Postfix reads it)."""
    settings = {}
    for line in files["config/postfix/main.cf"].splitlines():
        if "=" in line and not line.startswith(("#", " ")):
            name, value = line.split("=", 1)
            settings[name.strip()] = value.strip()
    return settings


# --- the keys --------------------------------------------------------------------------------


def test_without_a_relay_mail_goes_to_each_mx_with_dane_and_mta_sts() -> None:
    settings = main_cf_settings(render())
    assert "relayhost" not in settings
    assert settings["smtp_tls_security_level"] == "dane"
    assert settings["smtp_tls_policy_maps"].startswith("socketmap:inet:mta-sts:")
    assert "smtp_sasl_auth_enable" not in settings


def test_a_relay_with_a_user_requires_verified_tls_and_sasl_from_a_table_not_the_config() -> None:
    files = render(**RELAY)
    settings = main_cf_settings(files)
    assert settings["relayhost"] == "[smtp.provider.example]:587"
    assert settings["smtp_tls_security_level"] == "secure"
    assert settings["smtp_tls_secure_cert_match"] == "nexthop"
    assert settings["smtp_tls_policy_maps"] == ""  # MTA-STS judges MX hosts no longer reached
    assert settings["smtp_sasl_auth_enable"] == "yes"
    assert settings["smtp_sasl_password_maps"] == "texthash:/run/mailstack/relay-sasl"
    assert settings["smtp_sasl_auth_soft_bounce"] == "yes"  # a refusal defers, never bounces
    assert "smtp_tls_wrappermode" not in settings
    postfix = yaml.safe_load(files["compose.yaml"])["services"]["postfix"]
    assert "relay_password" in postfix["secrets"]
    assert postfix["environment"]["MAILSTACK_RELAY_USER"] == RELAY["username"]
    assert postfix["environment"]["TZ"] == "UTC"  # the service's own map replaces the anchor's


def test_port_465_is_implicit_tls() -> None:
    settings = main_cf_settings(render(host="smtp.provider.example", port=465))
    assert settings["relayhost"] == "[smtp.provider.example]:465"
    assert settings["smtp_tls_wrappermode"] == "yes"


def test_a_relay_without_a_user_gets_no_sasl_and_no_secret() -> None:
    files = render(host="relay.internal.example")
    settings = main_cf_settings(files)
    assert settings["relayhost"] == "[relay.internal.example]:587"
    assert "smtp_sasl_auth_enable" not in settings
    compose = yaml.safe_load(files["compose.yaml"])
    assert "relay_password" not in compose["secrets"]
    assert "relay_password" not in compose["services"]["postfix"]["secrets"]


def test_ca_file_is_mounted_and_replaces_the_system_cas(tmp_path: Path) -> None:
    files = render(**RELAY, ca_file="/etc/ssl/relay-ca.pem")
    assert main_cf_settings(files)["smtp_tls_CAfile"] == "/etc/mailstack/relay-ca.pem"
    volumes = yaml.safe_load(files["compose.yaml"])["services"]["postfix"]["volumes"]
    [mount] = [v for v in volumes if isinstance(v, dict)]
    assert mount == {
        "type": "bind",
        "source": "/etc/ssl/relay-ca.pem",
        "target": "/etc/mailstack/relay-ca.pem",
        "read_only": True,
    }
    rendered = render_stack(RenderInputs(config(**RELAY, ca_file=str(tmp_path)), "1.0"))
    assert_compose_accepts(rendered, tmp_path / "stack")


def test_in_the_sandbox_the_relay_takes_the_sinks_place() -> None:
    sandbox = validate_config({**BASE, "mode": "sandbox", "relay": RELAY})
    files = render_stack(RenderInputs(sandbox, "1.0"))
    settings = main_cf_settings({k: v.decode() for k, v in files.items()})
    assert settings["relayhost"] == "[smtp.provider.example]:587"
    plain = render_stack(RenderInputs(validate_config({**BASE, "mode": "sandbox"}), "1.0"))
    assert main_cf_settings({k: v.decode() for k, v in plain.items()})["relayhost"] == ("[sink]:25")


@pytest.mark.parametrize(
    ("relay_keys", "named"),
    [
        ({"username": "bob"}, "host"),
        ({"ca_file": "/etc/ssl/ca.pem"}, "host"),
        ({"host": "smtp.provider.example", "port": 0}, "relay.port"),
        ({"host": "smtp.provider.example", "username": "bob:smith"}, "relay.username"),
        ({"host": "smtp.provider.example", "username": "bob\nrelayhost = evil"}, "relay.username"),
        ({"host": "bad host name", "username": "bob"}, "relay.host"),
        ({"host": "smtp.provider.example", "ca_file": "relative.pem"}, "relay.ca_file"),
        ({"host": "smtp.provider.example", "password": "x"}, "relay.password"),
    ],
)
def test_bad_relay_keys_are_one_line_naming_the_key(
    relay_keys: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        config(**relay_keys)
    message = refused.value.message
    assert "\n" not in message and named in message, message


# --- the password ------------------------------------------------------------------------------


def _stack(tmp_path: Path, relay_keys: dict[str, object] | None) -> Stack:
    overrides: dict[str, Any] = {"mode": "sandbox"}
    if relay_keys is not None:
        overrides["relay"] = relay_keys
    initial = stackfiles.initial_config("mail.example.test", "example.test", overrides)
    stackfiles.init_stack(tmp_path / "stack", initial, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    fake = FakeContainers(running=("postfix",))
    return Stack(stack_dir, stack_dir.load_config(), fake)  # type: ignore[arg-type]


def test_the_password_file_is_0600_and_replaced_whole(tmp_path: Path) -> None:
    path = write_relay_password(tmp_path, "first one")
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text() == "first one"
    write_relay_password(tmp_path, "the second, with spaces")
    assert path.read_text() == "the second, with spaces"
    assert sorted(p.name for p in path.parent.iterdir()) == [RELAY_PASSWORD]


@pytest.mark.parametrize(
    ("password", "said"),
    [("", "empty"), ("two\nlines", "line break"), ("x" * 513, "too long")],
)
def test_a_password_postfix_cannot_hold_is_refused_and_nothing_is_written(
    tmp_path: Path, password: str, said: str
) -> None:
    with pytest.raises(MailstackError, match=said):
        write_relay_password(tmp_path, password)
    assert not (tmp_path / "secrets" / RELAY_PASSWORD).exists()


def test_up_refuses_a_user_without_the_password_and_a_missing_ca_file(tmp_path: Path) -> None:
    stack = _stack(tmp_path, {**RELAY})
    with pytest.raises(MailstackError, match="secrets/relay_password is missing") as refused:
        relay.require_ready(stack.config, stack.dir.root)
    assert "mailstack relay password" in (refused.value.hint or "")
    write_relay_password(stack.dir.root, "the password")
    relay.require_ready(stack.config, stack.dir.root)
    missing = validate_config(
        {**BASE, "relay": {**RELAY, "ca_file": str(tmp_path / "missing.pem")}}
    )
    with pytest.raises(MailstackError, match=r"relay.ca_file: .*missing.pem is not a readable"):
        relay.require_ready(missing, stack.dir.root)


def test_relay_password_stores_it_and_restarts_a_running_postfix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = _stack(tmp_path, {**RELAY})
    monkeypatch.setattr(Stack, "load", lambda _: stack)
    code, text = invoke("relay", "password", "--password-stdin", input="the relay's password\n")
    assert code == 0, text
    assert (stack.dir.root / "secrets" / RELAY_PASSWORD).read_text() == "the relay's password"
    assert "restarted postfix" in text
    assert isinstance(stack.compose, FakeContainers)
    assert stack.compose.commands == [["restart", "postfix"]]


def test_relay_password_without_a_relay_user_says_so_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = _stack(tmp_path, None)
    monkeypatch.setattr(Stack, "load", lambda _: stack)
    code, text = invoke("relay", "password", "--password-stdin", input="pw\n")
    assert code == 1
    assert one_error_line(text).startswith("relay.username is not set")
    assert not (stack.dir.root / "secrets" / RELAY_PASSWORD).exists()


# --- the queue's reasons ---------------------------------------------------------------------


def _queued(reason: str) -> bytes:
    item = {
        "queue_name": "deferred",
        "queue_id": "4Xk2Lq0Tz5zBx9",
        "arrival_time": 1_765_000_000,
        "message_size": 1234,
        "forced_expire": False,
        "sender": "alice@example.org",
        "recipients": [{"address": "bob@far.example", "delay_reason": reason}],
    }
    return json.dumps(item).encode() + b"\n"


REFUSED = (
    "SASL authentication failed; server smtp.provider.example[192.0.2.7] said: 535 5.7.8 "
    "Error: authentication failed"
)


def test_refusals_count_only_the_relays_refusals() -> None:
    queue = parse_postqueue_json(
        _queued(REFUSED) + _queued(REFUSED) + _queued("connect to smtp.provider.example: refused")
    )
    [refusal] = relay.refusals(config(**RELAY).relay, queue)
    assert (refusal.host, refusal.domain, refusal.messages) == ("smtp.provider.example", None, 2)


def test_health_fails_naming_the_relay_and_the_fix_and_passes_when_none_waits() -> None:
    failing = judge_relay(
        ["smtp.provider.example"], [relay.Refusal("smtp.provider.example", None, 2)]
    )
    assert failing.verdict == FAIL
    assert "smtp.provider.example refuses the credentials: 2 messages wait" in failing.detail
    assert "mailstack relay password" in failing.fix
    assert judge_relay(["smtp.provider.example"], []).verdict == PASS


def test_status_line_appears_only_while_mail_waits_on_a_refusal(tmp_path: Path) -> None:
    stack = _stack(tmp_path, {**RELAY})
    assert isinstance(stack.compose, FakeContainers)
    stack.compose.answers = [_queued(REFUSED)]
    line = relay.refusal_line(stack)
    assert line.startswith("relay: smtp.provider.example refuses the credentials; 1 message")
    stack.compose.answers = [_queued("connect to smtp.provider.example: refused")]
    assert relay.refusal_line(stack) == ""
    assert relay.refusal_line(_stack(tmp_path / "none", None)) == ""
