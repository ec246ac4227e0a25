"""policy.* in mailstack.yaml: validation, defaults, and what reaches rspamd's config."""

from __future__ import annotations

from typing import Any

import pytest

from mailstack.errors import ConfigError
from mailstack.stack.config import validate_config
from mailstack.stack.config_policy import DANGEROUS_EXTENSIONS
from mailstack.stack.render import RenderInputs, render_stack
from mailstack.stack.stackfiles import initial_config
from tests.conftest import REFERENCE


def with_policy(**sections: dict[str, Any]) -> dict[str, Any]:
    return {**REFERENCE, "policy": sections}


def rspamd(data: dict[str, Any]) -> dict[str, str]:
    rendered = render_stack(RenderInputs(validate_config(data), "1"))
    return {
        path.removeprefix("config/rspamd/"): content.decode()
        for path, content in rendered.items()
        if path.startswith("config/rspamd/")
    }


def test_defaults_block_the_dangerous_types_and_set_sane_limits() -> None:
    policy = validate_config(REFERENCE).policy
    required = {"exe", "scr", "com", "pif", "bat", "cmd", "js", "jse", "vbs", "vbe", "wsf"}
    required |= {"wsh", "hta", "ps1", "jar", "msi", "lnk", "iso", "img", "docm", "xlsm", "pptm"}
    assert required <= set(policy.attachments.blocked_extensions)
    assert policy.attachments.allowed_extensions == []
    assert (policy.spam.junk_score, policy.spam.reject_score) == (6.0, 15.0)
    assert policy.spam.greylisting is True
    assert policy.rate_limits.sender_burst > 0 and policy.rate_limits.client_ip_burst > 0


def test_the_allowlist_wins_over_the_block_list() -> None:
    files = rspamd(with_policy(attachments={"allowed_extensions": [".ISO", "img"]}))
    blocked = [
        line for line in files["blocked_attachments.map"].splitlines() if not line.startswith("#")
    ]
    assert "exe" in blocked and "iso" not in blocked and "img" not in blocked
    assert sorted(blocked) == sorted(set(DANGEROUS_EXTENSIONS) - {"iso", "img"})
    assert "iso = 0;" in files["mime_types.conf"] and "img = 0;" in files["mime_types.conf"]


def test_thresholds_reach_the_actions() -> None:
    files = rspamd(with_policy(spam={"junk_score": 5, "reject_score": 12.5, "greylist_score": 3}))
    assert "reject = 12.5;" in files["actions.conf"]
    assert "add_header = 5.0;" in files["actions.conf"]
    assert "greylist = 3.0;" in files["actions.conf"]
    assert "enabled = false" not in files["greylist.conf"]


def test_greylisting_off_turns_off_module_and_action() -> None:
    files = rspamd(with_policy(spam={"greylisting": False}))
    assert "greylist = null;" in files["actions.conf"]
    assert "enabled = false;" in files["greylist.conf"]


def test_rate_limits_reach_rspamd_and_zero_turns_one_off() -> None:
    files = rspamd(
        with_policy(
            rate_limits={
                "sender_burst": 7,
                "sender_per_hour": 70,
                "client_ip_burst": 9,
                "client_ip_per_hour": 90,
            }
        )
    )
    assert "burst = 7;" in files["ratelimit.conf"]
    assert 'rate = "70 / 1h";' in files["ratelimit.conf"]
    assert "custom_keywords" in files["ratelimit.conf"]
    assert "burst = 9," in files["ratelimit_keywords.lua"]
    assert "rate = '90 / 1h'" in files["ratelimit_keywords.lua"]
    off = rspamd(with_policy(rate_limits={"sender_burst": 0, "client_ip_burst": 0}))
    assert "burst =" not in off["ratelimit.conf"]
    assert "custom_keywords =" not in off["ratelimit.conf"]
    assert "client_ip" not in off["ratelimit_keywords.lua"].split("return {", 1)[1]


def test_local_addrs_are_loopback_and_dovecot_alone_not_the_back_end_network() -> None:
    files = rspamd(REFERENCE)
    assert "duplicate=rewrite" in files["options.inc"]
    # Dovecot's fixed back-end address (network + 24): its Sieve replies and redirects.
    assert "local_addrs = [127.0.0.0/8, ::1, 172.29.81.24];" in files["local_addrs.inc"]
    assert "172.29.81.0/24" not in files["local_addrs.inc"]


@pytest.mark.parametrize(
    ("sections", "key", "allowed"),
    [
        ({"spam": {"junk_score": 15}}, "policy.spam", "junk_score must be lower"),
        ({"spam": {"greylist_score": 6}}, "policy.spam", "greylist_score must be lower"),
        ({"spam": {"reject_score": -1}}, "policy.spam.reject_score", "too small"),
        ({"spam": {"junk_score": "6"}}, "policy.spam.junk_score", "number"),
        ({"rate_limits": {"sender_burst": -1}}, "policy.rate_limits.sender_burst", "too small"),
        ({"rate_limits": {"sender_per_hour": 0}}, "policy.rate_limits.sender_per_hour", "small"),
        ({"attachments": {"blocked_extensions": "exe"}}, "attachments.blocked", "list"),
        ({"attachments": {"allowed_extensions": ["e x e"]}}, "allowed_extensions", "extension"),
        ({"attachments": {"allowed_extensions": ["exe\nx"]}}, "allowed_extensions", "control"),
        ({"attachments": {"allowed_extensions": ["{{ x }}"]}}, "allowed_extensions", "template"),
        ({"spam": {"junk_scor": 6}}, "policy.spam.junk_scor", "did you mean junk_score"),
    ],
)
def test_bad_policy_values_name_the_key(sections: dict[str, Any], key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config(with_policy(**sections))
    assert key in caught.value.message
    assert allowed in caught.value.message


def test_greylist_score_may_exceed_junk_score_when_greylisting_is_off() -> None:
    config = validate_config(with_policy(spam={"greylisting": False, "greylist_score": 9}))
    assert config.policy.spam.greylisting is False


def test_sandbox_init_turns_greylisting_off_and_production_keeps_it() -> None:
    sandbox = initial_config("mail.example.test", "example.test", {"mode": "sandbox"})
    production = initial_config("mail.example.test", "example.test")
    assert sandbox.policy.spam.greylisting is False
    assert production.policy.spam.greylisting is True
