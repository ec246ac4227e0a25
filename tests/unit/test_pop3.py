"""features.pop3 and pop3_starttls: what the render, the DNS records, autoconfig and
`check tls` say about POP3, off (the default) and on."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mailstack.errors import ConfigError
from mailstack.mailauth.dnsrecords import record_set
from mailstack.stack.config import Config, published_ports, validate_config
from mailstack.stack.render import RenderInputs, render_stack
from mailstack.tls import tlscheck

BASE: dict[str, Any] = {
    "hostname": "mail.example.org",
    "domain": "example.org",
    "dns": {"public_ipv4": "203.0.113.25"},
}


def config(**features: bool) -> Config:
    return validate_config({**BASE, "features": features})


def render(**features: bool) -> dict[str, str]:
    files = render_stack(RenderInputs(config(**features), "1.0"))
    return {path: data.decode() for path, data in files.items()}


def dovecot_ports(files: dict[str, str]) -> list[str]:
    return list(yaml.safe_load(files["compose.yaml"])["services"]["dovecot"]["ports"])


def srv_names(features: dict[str, bool]) -> list[str]:
    records = record_set(config(**features), ["example.org"], []).records
    return [record.name for record in records if record.type == "SRV"]


def test_pop3_is_off_by_default_nothing_listens_or_is_published() -> None:
    files = render()
    dovecot = files["config/dovecot/dovecot.conf"]
    assert "protocols = imap lmtp sieve\n" in dovecot
    assert "pop3-login" not in dovecot
    assert not [port for port in dovecot_ports(files) if port.endswith((":110", ":995"))]
    assert "const POP3S_PORT = 0;" in files["config/front/autoconfig.js"]
    assert "_pop3s._tcp.example.org" not in srv_names({})
    assert "pop3s" not in published_ports(config())


def test_pop3_on_listens_on_995_with_implicit_tls_and_not_on_110() -> None:
    files = render(pop3=True)
    dovecot = files["config/dovecot/dovecot.conf"]
    assert "protocols = imap lmtp sieve pop3\n" in dovecot
    login = dovecot.split("service pop3-login {")[1].split("\n}\n")[0]
    assert "inet_listener pop3 {\n    port = 0\n" in login  # 0: the listener is off
    assert "inet_listener pop3s {\n    port = 995\n    ssl = yes\n" in login
    ports = dovecot_ports(files)
    assert "0.0.0.0:995:995" in ports
    assert not [port for port in ports if port.endswith(":110")]
    assert "const POP3S_PORT = 995;" in files["config/front/autoconfig.js"]
    assert "_pop3s._tcp.example.org" in srv_names({"pop3": True})


def test_pop3_starttls_adds_110_where_tls_is_still_required_before_login() -> None:
    files = render(pop3=True, pop3_starttls=True)
    dovecot = files["config/dovecot/dovecot.conf"]
    assert "inet_listener pop3 {\n    port = 110\n" in dovecot
    # No login before STARTTLS on any protocol: the global settings POP3 inherits.
    assert "\nssl = required\n" in dovecot
    assert "\ndisable_plaintext_auth = yes\n" in dovecot
    assert "0.0.0.0:110:110" in dovecot_ports(files)


def test_check_tls_looks_at_each_pop3_door_that_is_open() -> None:
    def names(**features: bool) -> list[tuple[str, str | None]]:
        endpoints = tlscheck.stack_endpoints(config(**features), ["example.org"])
        return [(e.name, e.starttls) for e in endpoints if e.name.startswith("pop3")]

    assert names() == []
    assert names(pop3=True) == [("pop3s", None)]
    assert names(pop3=True, pop3_starttls=True) == [("pop3", "pop3"), ("pop3s", None)]


def test_pop3_sign_ins_are_recorded_like_imaps() -> None:
    dovecot = render(pop3=True)["config/dovecot/dovecot.conf"]
    pop3 = dovecot.split("protocol pop3 {")[1].split("\n}\n")[0]
    assert "mail_plugins = $mail_plugins last_login" in pop3


def test_pop3_starttls_without_pop3_is_one_line_naming_both_keys() -> None:
    with pytest.raises(ConfigError) as refused:
        config(pop3_starttls=True)
    message = refused.value.message
    assert "\n" not in message
    assert "pop3_starttls" in message and "pop3: true" in message


def test_a_pop3_port_may_not_repeat_another() -> None:
    with pytest.raises(ConfigError) as refused:
        validate_config({**BASE, "network": {"ports": {"pop3s": 993}}})
    assert "993" in refused.value.message
