"""The second factor at every door (issue 16): policy.mfa and policy.mfa_protocols, what they
render for Dovecot, Roundcube and the admin service, migration 0007's view and grants, and
the admin service's internal endpoint (mailstack.api.webmail_mfa) without a web framework."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mailstack.adapters.bansclient import ALLOWED, BansClient, Verdict
from mailstack.api import webmail_mfa
from mailstack.api.operations import ApiError
from mailstack.cli.main import app
from mailstack.errors import ConfigError
from mailstack.identity import sealing, totp
from mailstack.identity.mfa import Owner
from mailstack.resources import migrations_dir
from mailstack.stack.config import Config, validate_config
from mailstack.stack.render import RenderInputs, render_stack
from mailstack.stack.stackdir import Stack
from tests.unit.fakes import FakeContainers

KEY = bytes(range(32))
NOW = 1_700_000_000.0
STEP = totp.time_step(NOW)
ALICE = "alice@example.org"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
SEALED = sealing.seal(KEY, SECRET, Owner.mailbox(ALICE).label)
READ = "SELECT 'totp'"
USE_STEP = "UPDATE mfa_totp SET last_step"
WEBMAIL = "172.29.80.81"
SHARED = "s3cret-shared-key"
BASE = {"hostname": "mail.example.com", "domain": "example.com"}


# --- config ----------------------------------------------------------------------------------


def test_mfa_defaults_are_optional_and_app_passwords_only() -> None:
    policy = validate_config(dict(BASE)).policy
    assert (policy.mfa, policy.mfa_protocols) == ("optional", "app_passwords_only")


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"mfa": "always"}, "policy.mfa: 'always' is not one of: optional, required"),
        (
            {"mfa_protocols": "imap"},
            "policy.mfa_protocols: 'imap' is not one of: app_passwords_only, passwords_allowed",
        ),
    ],
)
def test_a_bad_mfa_setting_is_one_line_naming_key_value_and_choices(
    section: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config({**BASE, "policy": section})
    assert caught.value.message == f"mailstack.yaml: {expected}"
    assert "\n" not in caught.value.message


def test_mfa_required_without_the_admin_service_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"policy\.mfa: required needs features\.admin"):
        validate_config({**BASE, "policy": {"mfa": "required"}, "features": {"admin": False}})


# --- rendering -------------------------------------------------------------------------------


def _config(
    reference: Config, *, webmail: bool = True, admin: bool = True, **policy: str
) -> Config:
    features = reference.features.model_copy(update={"webmail": webmail, "admin": admin})
    return reference.model_copy(
        update={"features": features, "policy": reference.policy.model_copy(update=policy)}
    )


def _render(config: Config) -> dict[str, str]:
    return {
        path: body.decode()
        for path, body in render_stack(RenderInputs(config, "0.0.0-test")).items()
    }


def _password_query(rendered: dict[str, str]) -> str:
    text = rendered["config/dovecot/dovecot-sql.conf.ext"].replace("\\\n", " ")
    [query] = [line for line in text.splitlines() if line.startswith("password_query")]
    return " ".join(query.split())


def test_dovecot_refuses_the_account_password_of_a_user_with_a_second_factor_except_from_the_webmail(
    reference_config: Config,
) -> None:
    rendered = _render(_config(reference_config))
    compose = yaml.safe_load(rendered["compose.yaml"])
    webmail = compose["services"]["webmail"]["networks"]
    addresses = {webmail["backend"]["ipv4_address"], webmail["frontend"]["ipv4_address"]}
    query = _password_query(rendered)
    assert "FROM dovecot_password_logins" in query
    assert "WHERE username = '%u' AND (NOT second_factor OR '%{real_rip}' IN (" in query
    # The connecting address (real_rip), never the one the webmail reports (rip).
    assert "%{rip}" not in query
    assert set(re.findall(r"'(\d+\.\d+\.\d+\.\d+)'", query)) == addresses


def test_without_the_admin_service_the_webmail_is_no_exception(reference_config: Config) -> None:
    # Nobody would ask for the code: the webmail must not use the account password either.
    for config in (
        _config(reference_config, admin=False),
        _config(reference_config, webmail=False),
    ):
        query = _password_query(_render(config))
        assert query.endswith("WHERE username = '%u' AND NOT second_factor")
        assert "real_rip" not in query


def test_passwords_allowed_keeps_the_account_password_on_every_protocol(
    reference_config: Config,
) -> None:
    query = _password_query(_render(_config(reference_config, mfa_protocols="passwords_allowed")))
    assert query == (
        "password_query = SELECT username AS user, password FROM dovecot_users "
        "WHERE username = '%u'"
    )


def test_the_webmail_runs_the_mfa_plugin_and_asks_the_admin_service(
    reference_config: Config,
) -> None:
    rendered = _render(_config(reference_config, mfa="required"))
    php = rendered["config/webmail/config.inc.php"]
    compose = yaml.safe_load(rendered["compose.yaml"])
    admin = compose["services"]["admin"]
    assert "'mailstack_mfa'" in php
    assert f"'http://{admin['networks']['frontend']['ipv4_address']}:8080/internal/v1/mfa/'" in php
    assert "$config['mailstack_mfa_required'] = true;" in php
    # The admin service admits the webmail's frontend address (it reaches the admin there).
    webmail_frontend = compose["services"]["webmail"]["networks"]["frontend"]["ipv4_address"]
    assert admin["environment"]["MAILSTACK_WEBMAIL_ADDRESS"] == webmail_frontend
    assert admin["environment"]["MAILSTACK_BANS_URL"] == "http://bans:12350/"
    assert "webmail_mfa_key" in compose["services"]["webmail"]["secrets"]
    assert {"mfa_key", "webmail_mfa_key", "bans_api_key"} <= set(admin["secrets"])
    optional = _render(_config(reference_config))["config/webmail/config.inc.php"]
    assert "$config['mailstack_mfa_required'] = false;" in optional


def test_without_the_admin_service_the_webmail_has_no_plugin_and_no_key(
    reference_config: Config,
) -> None:
    rendered = _render(_config(reference_config, admin=False))
    assert "mailstack_mfa" not in rendered["config/webmail/config.inc.php"]
    webmail = yaml.safe_load(rendered["compose.yaml"])["services"]["webmail"]
    assert "webmail_mfa_key" not in webmail["secrets"]


def test_migration_0007_adds_the_view_and_exactly_the_grants_of_the_check() -> None:
    sql = (migrations_dir() / "0007_mfa_doors.sql").read_text()
    statements = [
        " ".join(line.split()) for line in re.sub(r"--[^\n]*", "", sql).split(";") if line.strip()
    ]
    assert statements[0].startswith("CREATE VIEW dovecot_password_logins AS")
    assert "t.confirmed IS NOT NULL" in statements[0]  # an unconfirmed enrolment changes nothing
    assert statements[1:] == [
        "GRANT SELECT ON dovecot_password_logins TO dovecot",
        "GRANT SELECT (name) ON admins TO mailstack_admin",
        "GRANT SELECT ON mfa_totp, mfa_recovery_codes TO mailstack_admin",
        "GRANT UPDATE (last_step) ON mfa_totp TO mailstack_admin",
        "GRANT DELETE ON mfa_recovery_codes TO mailstack_admin",
    ]


# --- the internal endpoint: who is admitted --------------------------------------------------

LINK = webmail_mfa.WebmailLink(WEBMAIL, SHARED)


def test_the_webmail_with_its_key_is_admitted() -> None:
    LINK.admit(WEBMAIL, None, SHARED)


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "presented"),
    [
        ("172.29.80.1", None, SHARED),  # the host (the frontend gateway) with the right key
        ("172.29.80.80", None, SHARED),  # the front itself
        (WEBMAIL, "198.51.100.7", SHARED),  # something the front proxied, claiming the webmail
        (WEBMAIL, None, None),  # the webmail's address without the key
        (WEBMAIL, None, SHARED + "x"),
        (WEBMAIL, None, ""),
        (None, None, SHARED),
    ],
)
def test_anything_but_the_webmail_with_its_key_is_refused(
    peer: str | None, forwarded_for: str | None, presented: str | None
) -> None:
    with pytest.raises(ApiError) as caught:
        LINK.admit(peer, forwarded_for, presented)
    assert (caught.value.status, caught.value.message) == (403, webmail_mfa.FORBIDDEN)


def test_on_a_cluster_the_webmail_link_is_admitted_and_nothing_beside_it() -> None:
    link = webmail_mfa.WebmailLink("172.29.96.224/27", SHARED)  # the webmail-to-admin link
    link.admit("172.29.96.230", None, SHARED)  # a webmail task on the link
    for peer in ("172.29.96.200", "172.29.80.81", "not-an-address"):  # beside it, or junk
        with pytest.raises(ApiError):
            link.admit(peer, None, SHARED)
    with pytest.raises(ApiError):  # the link without the key
        link.admit("172.29.96.230", None, "")


def test_an_empty_shared_key_admits_nobody() -> None:
    with pytest.raises(ApiError):
        webmail_mfa.WebmailLink(WEBMAIL, "").admit(WEBMAIL, None, "")


# --- the internal endpoint: the check ----------------------------------------------------------


class FakeBans:
    """bansd as the BansClient gives it: answers allow with `verdict`, records every
    question."""

    def __init__(self, verdict: Verdict = ALLOWED) -> None:
        self.verdict = verdict
        self.calls: list[tuple[str, ...]] = []

    def allow(self, client: str, login: str) -> Verdict:
        self.calls.append(("allow", client, login))
        return self.verdict

    def report(self, client: str, login: str, secret: str, *, success: bool) -> None:
        self.calls.append(("report", client, login, secret, str(success)))


def _row(last_step: int) -> bytes:
    return f"account,1\ntotp,7,{SEALED},t,{last_step},10\n".encode()


def _verify(
    fake: FakeContainers, bans: FakeBans | None, code: str, **options: Any
) -> dict[str, Any]:
    slept: list[float] = options.pop("slept", [])
    return webmail_mfa.verify(
        fake,
        KEY,
        bans,
        ALICE,
        code,
        "203.0.113.9",
        now=lambda: datetime.datetime.fromtimestamp(NOW, datetime.UTC),
        sleep=slept.append,
        **options,
    )


def test_a_valid_code_is_accepted_by_the_cores_replay_safe_check_and_reported() -> None:
    fake = FakeContainers(
        by_marker=[(READ, _row(STEP - 3)), (USE_STEP, f"accepted,{STEP}\n".encode())]
    )
    bans = FakeBans()
    code = totp.code_at(SECRET, NOW)
    answer = _verify(fake, bans, code)
    assert answer == {"address": ALICE, "accepted": True, "method": "totp"}
    # The step is stored by the guarded UPDATE (never accepted twice).
    assert fake.sent(USE_STEP)[0].variables()["step"] == str(STEP)
    assert bans.calls == [
        ("allow", "203.0.113.9", ALICE),
        ("report", "203.0.113.9", ALICE, code, "True"),
    ]


def test_a_replayed_code_is_refused_and_counted_as_a_failure() -> None:
    fake = FakeContainers(by_marker=[(READ, _row(STEP))])  # this step was used already
    bans = FakeBans()
    answer = _verify(fake, bans, totp.code_at(SECRET, NOW))
    assert answer["accepted"] is False
    assert fake.sent(USE_STEP) == []
    assert bans.calls[-1][0] == "report" and bans.calls[-1][-1] == "False"


def test_a_malformed_code_is_a_failure_like_a_wrong_one() -> None:
    fake = FakeContainers(by_marker=[(READ, _row(0))])
    bans = FakeBans()
    assert _verify(fake, bans, "12-34")["accepted"] is False
    assert bans.calls[-1][-1] == "False"


def test_a_banned_browser_is_refused_before_its_code_is_looked_at() -> None:
    fake = FakeContainers(by_marker=[(READ, _row(0))])
    with pytest.raises(ApiError) as caught:
        _verify(fake, FakeBans(verdict=Verdict("banned")), totp.code_at(SECRET, NOW))
    assert caught.value.status == 429
    assert fake.calls == []


def test_a_delayed_browser_waits_as_bans_says() -> None:
    fake = FakeContainers(by_marker=[(READ, _row(STEP))])
    slept: list[float] = []
    _verify(fake, FakeBans(verdict=Verdict(delay=4)), "000000", slept=slept)
    assert slept == [4.0]


def test_bans_not_answering_fails_open_or_closed_as_configured() -> None:
    fake = FakeContainers(by_marker=[(READ, _row(STEP))])
    assert _verify(fake, FakeBans(), "000000")["accepted"] is False  # open: ALLOWED
    closed = BansClient("http://127.0.0.1:9/", "k" * 32, fail_closed=True, protocol="webmail-mfa")
    assert closed.allow("203.0.113.9", ALICE).unavailable  # nothing listens on port 9
    with pytest.raises(ApiError) as caught:
        _verify(fake, FakeBans(verdict=Verdict("down", unavailable=True)), "000000")
    assert caught.value.status == 503


def test_a_user_without_a_confirmed_factor_has_nothing_to_verify() -> None:
    fake = FakeContainers(by_marker=[(READ, b"account,1\n")])
    with pytest.raises(ApiError) as caught:
        _verify(fake, None, "123456")
    assert caught.value.status == 409


@pytest.mark.parametrize(
    ("address", "client", "status"),
    [("not an address", "203.0.113.9", 400), (ALICE, "the browser", 400)],
)
def test_hostile_input_is_one_line_before_the_database(
    address: str, client: str, status: int
) -> None:
    fake = FakeContainers()
    with pytest.raises(ApiError) as caught:
        webmail_mfa.verify(
            fake, KEY, None, address, "123456", client,
            now=lambda: datetime.datetime.fromtimestamp(NOW, datetime.UTC), sleep=lambda _: None,
        )  # fmt: skip
    assert caught.value.status == status and "\n" not in caught.value.message
    assert fake.calls == []


def test_status_says_whether_a_second_factor_is_in_force() -> None:
    confirmed = FakeContainers(by_marker=[(READ, _row(0))])
    assert webmail_mfa.status(confirmed, ALICE) == {"address": ALICE, "second_factor": True}
    unconfirmed = FakeContainers(by_marker=[(READ, f"account,1\ntotp,7,{SEALED},f,0,0\n".encode())])
    assert webmail_mfa.status(unconfirmed, ALICE)["second_factor"] is False
    unknown = FakeContainers(by_marker=[(READ, b"account,0\n")])
    with pytest.raises(ApiError) as caught:
        webmail_mfa.status(unknown, ALICE)
    assert caught.value.status == 404


# --- the operator's commands (mailbox mfa) ---------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("status", "not-an-address"),
        ("enrol", "x'; DROP TABLE mfa_totp; --@example.org"),
        ("confirm", "alice@exa mple.org", "123456"),
        ("disable", "alice@example.org\n"),
    ],
)
def test_mailbox_mfa_refuses_a_hostile_address_in_one_line_before_the_stack(
    args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    def load(root: object) -> None:
        raise AssertionError("the stack was loaded: validation came too late")

    monkeypatch.setattr(Stack, "load", load)
    result = CliRunner().invoke(app, ["mailbox", "mfa", *args])
    lines = [line for line in result.output.splitlines() if not line.startswith("hint:")]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ADDRESS"), result.output
