"""relay.by_sender_domain (a relay per sender domain): the entries' rules, hostile values
included, what main.cf and compose.yaml make of them (the maps, their order), the passwords'
files, `relay password --domain`, and which relay `check health` and `status` name when
one refuses the credentials. The real relays are tests/e2e/test_relay.py."""

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
from mailstack.stack.render import RenderInputs, render_stack
from mailstack.stack.secrets import write_relay_password
from mailstack.stack.stackdir import Stack, StackDir
from mailstack.verdict import FAIL
from tests.unit.clirun import invoke, one_error_line
from tests.unit.compose_check import assert_compose_accepts
from tests.unit.fakes import FakeContainers
from tests.unit.test_relay import RELAY, config, render

DEFAULT = RELAY
OWN = {"domain": "example.net", "host": "smtp.own-provider.example", "username": "net-user"}


def settings(files: dict[str, str]) -> dict[str, str]:
    """main.cf's parameters as Postfix reads them: continuation lines joined, the last
    assignment of each winning."""
    found: dict[str, str] = {}
    name = ""
    for line in files["config/postfix/main.cf"].splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0].isspace() and name:
            found[name] += " " + line.strip()
        elif "=" in line:
            name, value = (part.strip() for part in line.split("=", 1))
            found[name] = value
    return found


# --- the keys --------------------------------------------------------------------------------


def test_entries_are_normalised_and_default_to_port_587() -> None:
    relay_section = config(
        by_sender_domain=[{"domain": "Example.NET.", "host": "SMTP.Own-Provider.example"}]
    ).relay
    [entry] = relay_section.by_sender_domain
    assert (entry.domain, entry.host, entry.port, entry.username) == (
        "example.net",
        "smtp.own-provider.example",
        587,
        None,
    )
    assert relay_section.sender_relay("EXAMPLE.net") == entry
    assert relay_section.sender_relay("example.org") is None


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ({**OWN, "domain": "example.net\nrelayhost = [evil.example]"}, "domain"),
        ({**OWN, "domain": "example.net }, { @x.example = [evil.example]"}, "domain"),
        ({**OWN, "domain": "@example.net"}, "domain"),
        ({**OWN, "host": "smtp.own-provider.example ]:25 evil"}, "host"),
        ({**OWN, "host": "[smtp.own-provider.example]"}, "host"),
        ({**OWN, "host": "smtp.own-provider.example\n"}, "host"),
        ({**OWN, "username": "net user"}, "username"),
        ({**OWN, "username": "net:user"}, "username"),
        ({**OWN, "username": "net\nsmtp_sasl_auth_enable = no"}, "username"),
        ({**OWN, "port": 0}, "port"),
        ({**OWN, "port": "587"}, "port"),
        ({**OWN, "password": "secret"}, "password"),
        ({"host": "smtp.own-provider.example"}, "domain"),
    ],
)
def test_a_hostile_or_bad_entry_is_one_line_naming_its_key(
    entry: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        config(**DEFAULT, by_sender_domain=[entry])
    message = refused.value.message
    assert "\n" not in message and f"relay.by_sender_domain.0.{named}" in message, message


def test_a_domain_listed_twice_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        config(by_sender_domain=[OWN, {**OWN, "domain": "EXAMPLE.net", "host": "b.example"}])
    message = refused.value.message
    assert "\n" not in message
    assert "by_sender_domain[1].domain: example.net is listed twice" in message, message


def test_port_465_is_refused_unless_relay_host_uses_it_too() -> None:
    for default in ({}, DEFAULT):
        with pytest.raises(ConfigError) as refused:
            config(**default, by_sender_domain=[{**OWN, "port": 465}])
        message = refused.value.message
        assert "\n" not in message and "by_sender_domain[0].port: 465" in message, message
        assert "implicit TLS" in message
    with pytest.raises(ConfigError, match=r"by_sender_domain\[0\]\.port: 587"):
        config(**DEFAULT, port=465, by_sender_domain=[OWN])
    files = render(**DEFAULT, port=465, by_sender_domain=[{**OWN, "port": 465}])
    assert settings(files)["smtp_tls_wrappermode"] == "yes"
    assert "[smtp.own-provider.example]:465" in settings(files)["sender_dependent_relayhost_maps"]


# --- the render --------------------------------------------------------------------------------


def test_without_relay_host_the_sender_relays_tls_policy_comes_before_mta_sts() -> None:
    found = settings(render(by_sender_domain=[OWN]))
    assert "relayhost" not in found
    assert found["smtp_tls_security_level"] == "dane"  # all other mail: to each MX as before
    assert found["smtp_tls_policy_maps"] == (
        "inline:{ { [smtp.own-provider.example]:587 = secure match=nexthop } }, "
        "socketmap:inet:mta-sts:8461:postfix"
    )
    assert found["sender_dependent_relayhost_maps"] == (
        "inline:{ { @example.net = [smtp.own-provider.example]:587 } }"
    )
    assert found["smtp_sender_dependent_authentication"] == "yes"
    assert found["smtp_sasl_auth_enable"] == "yes"
    assert found["smtp_sasl_password_maps"] == "texthash:/run/mailstack/relay-sasl"
    assert found["smtp_sasl_auth_soft_bounce"] == "yes"


def test_with_relay_host_both_relays_get_secure_tls_and_their_own_secret(
    tmp_path: Path,
) -> None:
    second = {"domain": "example.com", "host": "relay.other.example", "port": 25}
    files = render(**DEFAULT, by_sender_domain=[OWN, second])
    found = settings(files)
    assert found["relayhost"] == "[smtp.provider.example]:587"
    assert found["smtp_tls_security_level"] == "secure"
    # Port 25 is the next hop's default: Postfix looks its policy up without a port suffix.
    assert found["smtp_tls_policy_maps"] == (
        "inline:{ { [relay.other.example] = secure match=nexthop }, "
        "{ [smtp.own-provider.example]:587 = secure match=nexthop } }"
    )
    assert found["sender_dependent_relayhost_maps"] == (
        "inline:{ { @example.net = [smtp.own-provider.example]:587 }, "
        "{ @example.com = [relay.other.example]:25 } }"
    )
    # Only the entry with a user has a password; the users file pairs it with its domain.
    users = files["config/postfix/relay-sender-users"]
    assert [line for line in users.splitlines() if not line.startswith("#")] == [
        "example.net net-user"
    ]
    compose = yaml.safe_load(files["compose.yaml"])
    assert compose["services"]["postfix"]["secrets"][-2:] == [
        "relay_password",
        "relay_password.example.net",
    ]
    assert compose["secrets"]["relay_password.example.net"] == {
        "file": "./secrets/relay_password.example.net"
    }
    assert_compose_accepts(
        render_stack(RenderInputs(config(**DEFAULT, by_sender_domain=[OWN, second]), "1.0")),
        tmp_path,
    )


def test_entries_without_a_user_get_no_sasl_no_secret_and_no_users_file() -> None:
    files = render(by_sender_domain=[{"domain": "example.net", "host": "relay.lan.example"}])
    found = settings(files)
    assert "sender_dependent_relayhost_maps" in found
    assert "smtp_sasl_auth_enable" not in found
    assert "smtp_sender_dependent_authentication" not in found
    assert "config/postfix/relay-sender-users" not in files
    assert not any(
        name.startswith("relay_password")
        for name in yaml.safe_load(files["compose.yaml"])["secrets"]
    )


def test_without_entries_main_cf_has_no_sender_relay_setting() -> None:
    files = render(**DEFAULT)
    assert "sender_dependent" not in files["config/postfix/main.cf"]
    assert settings(files)["smtp_tls_policy_maps"] == ""
    assert "config/postfix/relay-sender-users" not in files


# --- the passwords -------------------------------------------------------------------------------


def _stack(tmp_path: Path, relay_keys: dict[str, object]) -> Stack:
    overrides: dict[str, Any] = {"mode": "sandbox", "relay": relay_keys}
    initial = stackfiles.initial_config("mail.example.test", "example.test", overrides)
    stackfiles.init_stack(tmp_path / "stack", initial, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    fake = FakeContainers(running=("postfix",))
    return Stack(stack_dir, stack_dir.load_config(), fake)  # type: ignore[arg-type]


def test_a_domains_password_file_is_0600_beside_the_default(tmp_path: Path) -> None:
    path = write_relay_password(tmp_path, "net secret", "example.net")
    assert path.name == "relay_password.example.net"
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text() == "net secret"
    assert sorted(p.name for p in path.parent.iterdir()) == ["relay_password.example.net"]


def test_up_refuses_a_domain_user_without_its_password(tmp_path: Path) -> None:
    stack = _stack(tmp_path, {**DEFAULT, "by_sender_domain": [OWN]})
    write_relay_password(stack.dir.root, "the default's")
    with pytest.raises(MailstackError) as refused:
        relay.require_ready(stack.config, stack.dir.root)
    assert str(refused.value.message) == (
        "relay.by_sender_domain: example.net's username is 'net-user' but "
        "secrets/relay_password.example.net is missing or empty"
    )
    assert "mailstack relay password --domain example.net" in (refused.value.hint or "")
    write_relay_password(stack.dir.root, "the domain's", "example.net")
    relay.require_ready(stack.config, stack.dir.root)


def test_relay_password_domain_stores_that_domains_file_and_restarts_postfix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = _stack(tmp_path, {**DEFAULT, "by_sender_domain": [OWN]})
    monkeypatch.setattr(Stack, "load", lambda _: stack)
    code, text = invoke(
        "relay", "password", "--domain", "Example.NET", "--password-stdin", input="net pw\n"
    )
    assert code == 0, text
    assert "stored secrets/relay_password.example.net" in text
    secrets = stack.dir.root / "secrets"
    assert (secrets / "relay_password.example.net").read_text() == "net pw"
    assert not (secrets / "relay_password").exists()
    assert isinstance(stack.compose, FakeContainers)
    assert stack.compose.commands == [["restart", "postfix"]]


@pytest.mark.parametrize(
    ("domain", "said"),
    [
        ("example.com", "relay.by_sender_domain has no entry for example.com with a username"),
        ("bad domain", "--domain: 'bad domain' is not a valid domain name"),
        ("example.net\n", "--domain:"),
    ],
)
def test_relay_password_for_a_domain_without_an_entry_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, domain: str, said: str
) -> None:
    stack = _stack(tmp_path, {**DEFAULT, "by_sender_domain": [{**OWN, "username": None}]})
    monkeypatch.setattr(Stack, "load", lambda _: stack)
    code, text = invoke("relay", "password", "--domain", domain, "--password-stdin", input="")
    assert code == 1 and "Traceback" not in text
    assert one_error_line(text).startswith(said), text
    assert not any(
        p.name.startswith("relay_password") for p in (stack.dir.root / "secrets").iterdir()
    )
    if domain == "example.com":
        _, text = invoke("relay", "password", "--domain", "example.net", "--password-stdin")
        assert one_error_line(text).startswith(
            "relay.by_sender_domain has no entry for example.net"
        )


# --- which relay refuses -----------------------------------------------------------------------


REFUSED = "SASL authentication failed; server {host}[192.0.2.7] said: 535 5.7.8 Error"


def queued(sender: str, reason: str) -> bytes:
    item = {
        "queue_name": "deferred",
        "queue_id": "4Xk2Lq0Tz5zBx9",
        "arrival_time": 1_765_000_000,
        "message_size": 1234,
        "forced_expire": False,
        "sender": sender,
        "recipients": [{"address": "bob@far.example", "delay_reason": reason}],
    }
    return json.dumps(item).encode() + b"\n"


def test_a_refusal_is_the_relay_of_the_senders_domain() -> None:
    relay_section = config(**DEFAULT, by_sender_domain=[OWN]).relay
    own = REFUSED.format(host=OWN["host"])
    queue = parse_postqueue_json(
        queued("alice@example.net", own)
        + queued("bob@Example.NET", own)
        + queued("carol@example.org", "connect to smtp.provider.example: refused")
    )
    [refusal] = relay.refusals(relay_section, queue)
    assert (refusal.host, refusal.domain, refusal.messages) == (OWN["host"], "example.net", 2)
    item = judge_relay(relay.relay_names(relay_section), [refusal])
    assert item.verdict == FAIL
    assert item.detail == (
        "smtp.own-provider.example (mail from example.net) refuses the credentials: 2 messages "
        "wait in the queue"
    )
    assert "`mailstack relay password --domain example.net`" in item.fix
    default = relay.refusals(
        relay_section, parse_postqueue_json(queued("carol@example.org", REFUSED.format(host="x")))
    )
    assert [(r.host, r.domain) for r in default] == [("smtp.provider.example", None)]


def test_status_names_each_refusing_relay_and_its_fix(tmp_path: Path) -> None:
    stack = _stack(tmp_path, {**DEFAULT, "by_sender_domain": [OWN]})
    assert isinstance(stack.compose, FakeContainers)
    stack.compose.answers = [
        queued("alice@example.net", REFUSED.format(host=OWN["host"]))
        + queued("bob@example.test", REFUSED.format(host=DEFAULT["host"]))
    ]
    assert relay.refusal_line(stack) == (
        "relay: smtp.provider.example refuses the credentials; 1 message wait in the queue "
        "(`mailstack relay password`); relay: smtp.own-provider.example (mail from example.net) "
        "refuses the credentials; 1 message wait in the queue "
        "(`mailstack relay password --domain example.net`)"
    )
    only_own = _stack(tmp_path / "own", {"by_sender_domain": [OWN]})
    assert isinstance(only_own.compose, FakeContainers)
    only_own.compose.answers = [queued("alice@example.net", REFUSED.format(host=OWN["host"]))]
    assert relay.refusal_line(only_own).startswith(
        "relay: smtp.own-provider.example (mail from example.net) refuses"
    )
