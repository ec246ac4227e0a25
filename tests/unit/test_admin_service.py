"""The admin service's pieces outside its code: its database role's grants, its image's
context (mailstack's own package), and its place in the rendered compose file."""

from __future__ import annotations

import re
from typing import Any

import yaml

from mailstack.images import imagetags
from mailstack.resources import migrations_dir
from mailstack.stack.config import Config
from mailstack.stack.render import RenderInputs, render_stack


def test_the_admin_roles_grants_are_exactly_what_the_api_needs() -> None:
    sql = (migrations_dir() / "0004_admin_role.sql").read_text()
    statements = [
        " ".join(line.split()) for line in re.sub(r"--[^\n]*", "", sql).split(";") if line.strip()
    ]
    assert statements == [
        "GRANT SELECT ON domains, mailboxes TO mailstack_admin",
        "GRANT INSERT ON mailboxes TO mailstack_admin",
        "GRANT SELECT ON api_tokens TO mailstack_admin",
        "GRANT UPDATE (last_used) ON api_tokens TO mailstack_admin",
    ]


def test_the_rest_of_the_apis_grants_are_exactly_what_its_routes_need() -> None:
    sql = re.sub(r"--[^\n]*", "", (migrations_dir() / "0006_api_directory.sql").read_text())
    grants = [
        " ".join(statement.split())
        for statement in sql.split(";")
        if statement.strip().startswith("GRANT")
    ]
    assert grants == [
        "GRANT INSERT (kind, target) ON host_jobs TO mailstack_admin",
        "GRANT SELECT ON host_jobs TO mailstack_admin",
        "GRANT SELECT (name, role, active) ON admins TO mailstack_admin",
        "GRANT SELECT ON admin_domains TO mailstack_admin",
        "GRANT INSERT (name), DELETE ON domains TO mailstack_admin",
        "GRANT UPDATE (active) ON domains TO mailstack_admin",
        "GRANT SELECT, DELETE ON alias_domains, sender_permissions TO mailstack_admin",
        "GRANT UPDATE (password, quota_bytes), DELETE ON mailboxes TO mailstack_admin",
        "GRANT SELECT, DELETE ON aliases TO mailstack_admin",
        "GRANT INSERT (source, domain, destination) ON aliases TO mailstack_admin",
        "GRANT INSERT (name, token_hash, scopes, created_by, expires) ON api_tokens TO "
        "mailstack_admin",
        "GRANT UPDATE (revoked) ON api_tokens TO mailstack_admin",
    ]
    # The queue is the admin role's only by row security: its own rows, new ones pending.
    assert "ALTER TABLE host_jobs ENABLE ROW LEVEL SECURITY" in sql


def test_the_admin_image_holds_mailstacks_package_without_tests() -> None:
    files = imagetags.generated_files("admin")
    assert "admin/mailstack/api/operations.py" in files
    assert "admin/mailstack/migrations/0004_admin_role.sql" in files
    assert not any("test" in path.rpartition("/")[2] for path in files)
    assert imagetags.generated_files("postfix") == {}


def _compose(config: Config) -> dict[str, Any]:
    rendered = render_stack(RenderInputs(config, "0.0.0-test"))
    return yaml.safe_load(rendered["compose.yaml"])


def test_the_admin_service_publishes_no_port_and_is_reached_at_its_fixed_address(
    reference_config: Config,
) -> None:
    compose = _compose(reference_config)
    admin = compose["services"]["admin"]
    assert "ports" not in admin
    assert admin["environment"]["MAILSTACK_LISTEN"] == admin["networks"]["frontend"]["ipv4_address"]
    assert (
        admin["environment"]["MAILSTACK_TRUSTED_PROXY"]
        == (compose["services"]["front"]["networks"]["frontend"]["ipv4_address"])
    )
    # mfa_key, webmail_mfa_key and bans_api_key: the web sign-in and the webmail's second
    # factor (test_admin_web, test_mfa_doors).
    assert admin["secrets"] == [
        "db_admin_api_password", "mfa_key", "webmail_mfa_key", "bans_api_key"
    ]  # fmt: skip
    assert "db_admin_api_password" in compose["services"]["db"]["secrets"]
    # The web sign-in asks the bans service, as Dovecot does, and names the stack to the app.
    assert admin["environment"]["MAILSTACK_BANS_URL"] == "http://bans:12350/"
    assert admin["environment"]["MAILSTACK_HOSTNAME"] == reference_config.hostname
    assert "bans" in admin["depends_on"]


def test_without_bans_the_admin_service_gets_neither_its_key_nor_its_address(
    reference_config: Config,
) -> None:
    policy = reference_config.policy.model_copy(
        update={"bans": reference_config.policy.bans.model_copy(update={"enabled": False})}
    )
    admin = _compose(reference_config.model_copy(update={"policy": policy}))["services"]["admin"]
    assert admin["secrets"] == ["db_admin_api_password", "mfa_key", "webmail_mfa_key"]
    assert "MAILSTACK_BANS_URL" not in admin["environment"]


def test_the_web_sign_in_grants_read_administrators_and_use_their_second_factor() -> None:
    sql = (migrations_dir() / "0005_web_sessions.sql").read_text()
    grants = [
        " ".join(statement.split())
        for statement in re.sub(r"--[^\n]*", "", sql).split(";")
        if statement.strip().startswith("GRANT")
    ]
    assert grants == [
        "GRANT SELECT, INSERT, UPDATE, DELETE ON web_sessions TO mailstack_admin",
        "GRANT SELECT ON admins, admin_domains TO mailstack_admin",
        "GRANT SELECT, INSERT ON mfa_totp TO mailstack_admin",
        "GRANT UPDATE (sealed, last_step, created, confirmed) ON mfa_totp TO mailstack_admin",
        "GRANT SELECT, INSERT, DELETE ON mfa_recovery_codes TO mailstack_admin",
    ]


def test_without_features_admin_there_is_no_admin_service_and_db_gets_no_secret_of_it(
    reference_config: Config,
) -> None:
    features = reference_config.features.model_copy(update={"admin": False})
    compose = _compose(reference_config.model_copy(update={"features": features}))
    assert "admin" not in compose["services"]
    assert "db_admin_api_password" not in compose["services"]["db"]["secrets"]
