"""mailstack.yaml: defaults, validation, hostile input, clear one-line errors."""

from __future__ import annotations

from typing import Any

import pytest

from mailstack.errors import ConfigError
from mailstack.stack.config import parse_config, validate_config

BASE = {"hostname": "mail.example.org", "domain": "example.org"}


def error_for(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(data)
    message = caught.value.message
    assert "\n" not in message
    return message


def test_defaults_are_filled_in() -> None:
    config = validate_config(dict(BASE))
    assert config.network.ports.submission == 587
    assert config.network.ports.smtp == 25
    assert config.tls.mode == "selfsigned"
    assert config.update.channel == "stable"
    assert config.mode == "production"
    assert config.timezone == "UTC"
    assert config.images.registry is None


def test_port_out_of_range_names_key_value_and_range() -> None:
    message = error_for({**BASE, "network": {"ports": {"submission": 70000}}})
    assert message == "mailstack.yaml: network.ports.submission: 70000 is not a port (1–65535)"


def test_duplicate_port_refused() -> None:
    message = error_for({**BASE, "network": {"ports": {"submission": 25}}})
    assert "port 25 is used twice" in message


def test_unknown_key_suggests_the_close_one() -> None:
    message = error_for({**BASE, "hostnme": "x"})
    assert "hostnme" in message
    assert "did you mean hostname?" in message


def test_unknown_nested_key_suggests_the_close_one() -> None:
    message = error_for({**BASE, "network": {"prots": {}}})
    assert "network.prots" in message and "did you mean ports?" in message


def test_missing_hostname_is_required() -> None:
    assert error_for({"domain": "example.org"}) == "mailstack.yaml: hostname: is required"


@pytest.mark.parametrize(
    "hostile",
    [
        "mail.example.org\nrelayhost = evil.example",
        "mail.example.org\r",
        "mail example.org",
        "mail.example.org;rm -rf /",
        "{{ config }}.example.org",
        "mail.exa\x00mple.org",
        "mail.\x1bexample.org",
        "mail.example.org\t",
        "-mail.example.org",
        "mail..example.org",
        "localhost",
        "a" * 64 + ".example.org",
        ("a" * 60 + ".") * 5 + "org",
        "mail.example.123",
        "mail_server.example.org",
        "",
    ],
)
def test_hostile_hostname_refused_with_one_line(hostile: str) -> None:
    message = error_for({**BASE, "hostname": hostile})
    assert message.startswith("mailstack.yaml: hostname: ")
    assert "\n" not in message and "\r" not in message and "\x00" not in message


def test_idn_domain_stored_as_punycode() -> None:
    config = validate_config(
        {**BASE, "domain": "bücher.example", "hostname": "mail.bücher.example"}
    )
    assert config.domain == "xn--bcher-kva.example"
    assert config.hostname == "mail.xn--bcher-kva.example"


def test_domain_is_lower_cased_and_trailing_dot_dropped() -> None:
    assert validate_config({**BASE, "domain": "Example.ORG."}).domain == "example.org"


def test_timezone_checked_against_tz_database() -> None:
    assert validate_config({**BASE, "timezone": "Europe/Berlin"}).timezone == "Europe/Berlin"
    message = error_for({**BASE, "timezone": "Europe/Berln"})
    assert "not a time zone" in message and "Europe/Berlin" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("mode", "prod", "is not one of: production, sandbox"),
        ("project", "My Project", "is not a project name"),
        ("features", {"antivirus": "yes please"}, "is not true or false"),
        ("network", {"bind_ipv4": "::1"}, "is not an IPv4 address"),
        ("network", {"bind_ipv4": "10.0.0.1\nx"}, "control character"),
        ("network", {"backend_subnet": "8.8.8.0/24"}, "is not a private IPv4 network"),
        ("network", {"frontend_subnet": "172.29.0.0/16"}, "overlap"),
        ("network", {"frontend_subnet": "172.29.82.0/25"}, "/24 or larger"),
        ("tls", {"mode": "manual"}, "needs cert_file and key_file"),
        ("tls", {"mode": "manual", "cert_file": "relative.pem", "key_file": "/k"}, "absolute"),
        ("tls", {"acme_email": "not-an-address"}, "is not a mail address"),
        ("backup", {"keep_daily": -1}, "is too small"),
        ("update", {"channel": "nightly"}, "is not one of: stable, fast, beta"),
        ("images", {"registry": "Registry Example"}, "is not a registry"),
        ("network", {"ports": {"smtp": "25"}}, "is not a whole number"),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(
    key: str, value: object, expected: str
) -> None:
    message = error_for({**BASE, key: value})
    assert message.startswith(f"mailstack.yaml: {key}")
    assert expected in message


def test_yaml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(b"hostname: mail.example.org\ndomain: [unclosed\n")
    assert "line 3" in caught.value.message or "line 2" in caught.value.message
    assert "column" in caught.value.message


def test_yaml_object_construction_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(b"hostname: !!python/object/apply:os.system ['id']\ndomain: example.org\n")
    assert "YAML" in caught.value.message


def test_yaml_aliases_refused() -> None:
    raw = b"a: &x [1, 2]\nb: *x\nhostname: mail.example.org\ndomain: example.org\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert "aliases" in caught.value.message and "line 2" in caught.value.message


def test_oversize_file_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(b"# " + b"x" * 70_000 + b"\n")
    assert "larger than" in caught.value.message


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(b"- a\n- b\n")
    assert "mapping" in caught.value.message


def test_several_problems_reported_as_first_plus_count() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config({"hostname": "bad host", "domain": "also bad"})
    assert caught.value.hint == "1 more problem(s) after this one"


def test_ipv6_is_refused_until_the_stack_sees_real_ipv6_client_addresses() -> None:
    """Published through Docker's proxy, every IPv6 client would arrive as one IPv4 address:
    one client could ban all IPv6 users (issue 14). Refused in one line, naming the key."""
    message = error_for({**BASE, "network": {"ipv6": True}})
    assert message.startswith("mailstack.yaml: network.ipv6: True is not supported yet")
    assert "allowed: false" in message and "\n" not in message
    assert validate_config({**BASE, "network": {"ipv6": False}}).network.ipv6 is False
