"""Quota use and recent sign-ins (issue 16): what Dovecot's config renders for its dict
(quota_clone, last_login, the pgsql map), migration 0013's tables and grants, and the
statements mailstack.accounts.usage sends, against the FakeContainers."""

from __future__ import annotations

import re

from mailstack.accounts import usage
from mailstack.accounts.directory import Mailbox
from mailstack.api import selfservice
from mailstack.identity import sessions
from mailstack.identity.sessions import Session
from mailstack.resources import migrations_dir
from mailstack.stack.config import validate_config
from mailstack.stack.render import RenderInputs, render_stack
from tests.unit.fakes import FakeContainers

BASE = {"hostname": "mail.example.com", "domain": "example.com"}
DICT_FILE = "config/dovecot/dovecot-sql-dict.conf.ext"
MIGRATION = (migrations_dir() / "0013_usage_and_sign_ins.sql").read_text()
BOB = "bob@example.test"
NO_FACTOR = ("SELECT 'totp', t.id", b"account,1\n")
NO_APP_PASSWORDS = ("FROM app_passwords", b"mailbox,bob@example.test,\n")


def _rendered() -> dict[str, str]:
    inputs = RenderInputs(validate_config(dict(BASE)), "0.0.0-test")
    return {path: body.decode() for path, body in render_stack(inputs).items()}


def _maps(text: str) -> list[dict[str, str]]:
    """The dict-sql map blocks: their settings, and their fields as field.NAME."""
    maps = []
    for block in re.findall(r"^map \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL):
        settings = dict(re.findall(r"^  (\w+) = (.+)$", block, re.MULTILINE))
        fields = re.search(r"fields \{\n(.*?)\n  \}", block, re.DOTALL)
        for name, value in re.findall(r"(\w+) = (\S+)", fields.group(1) if fields else ""):
            settings[f"field.{name}"] = value
        maps.append(settings)
    return maps


# --- Dovecot's config -------------------------------------------------------------------------


def test_quota_clone_is_global_and_last_login_only_for_imap_and_managesieve() -> None:
    conf = _rendered()["config/dovecot/dovecot.conf"]
    assert re.search(r"^mail_plugins = .*\bquota_clone\b", conf, re.MULTILINE)
    protocols = dict(re.findall(r"^protocol (\S+) \{\n(.*?)^\}", conf, re.MULTILINE | re.DOTALL))
    assert "last_login" in protocols["imap"] and "last_login" in protocols["sieve"]
    # Delivery and doveadm are no sign-ins.
    assert "last_login" not in protocols["lmtp"]
    assert "last_login" not in conf.split("protocol imap {")[0]


def test_both_plugins_write_through_the_dict_proxy_to_the_pgsql_map() -> None:
    conf = _rendered()["config/dovecot/dovecot.conf"]
    assert "quota_clone_dict = proxy::usage" in conf
    assert "last_login_dict = proxy::usage" in conf
    # %s and %{rip} are in Dovecot 2.3's mail user variables; the user comes last.
    assert "last_login_key = last-login/%s/%{rip}/%u" in conf
    assert "usage = pgsql:/run/mailstack/dovecot-sql-dict.conf.ext" in conf
    # Only the mail processes' user may talk to the dict.
    dict_service = conf.split("service dict {")[1].split("\n}")[0]
    assert "mode = 0600" in dict_service and "user = vmail" in dict_service


def test_the_dict_connects_as_dovecot_without_a_password_in_the_rendered_file() -> None:
    text = _rendered()[DICT_FILE]
    [connect] = [line for line in text.splitlines() if line.startswith("connect = ")]
    assert "user=dovecot" in connect and "dbname=mail" in connect
    assert "password" not in connect  # the entrypoint appends it in a tmpfs file


def test_the_map_sends_quota_clone_keys_to_quota_usage() -> None:
    maps = {m["pattern"]: m for m in _maps(_rendered()[DICT_FILE])}
    for key, column in (("priv/quota/storage", "bytes"), ("priv/quota/messages", "messages")):
        assert maps[key]["table"] == "quota_usage"
        assert maps[key]["username_field"] == "username"
        assert (maps[key]["value_field"], maps[key]["value_type"]) == (column, "uint")


def test_the_map_sends_last_login_keys_to_sign_ins_with_the_user_last() -> None:
    [sign_ins] = [m for m in _maps(_rendered()[DICT_FILE]) if m["table"] == "sign_ins"]
    # last_login prefixes the key with shared/; the key is last_login_key.
    assert sign_ins["pattern"] == "shared/last-login/$service/$remote/$user"
    assert sign_ins["field.service"] == "$service"
    assert sign_ins["field.remote"] == "$remote"
    assert sign_ins["field.username"] == "$user"
    assert (sign_ins["value_field"], sign_ins["value_type"]) == ("last_seen", "uint")


def test_the_entrypoint_lets_only_the_dict_services_group_read_its_settings() -> None:
    entrypoint = (migrations_dir().parents[1] / "compose" / "dovecot" / "entrypoint").read_text()
    assert 'chgrp dovecot "$RUNTIME" "$RUNTIME/dovecot-sql-dict.conf.ext"' in entrypoint
    assert 'chmod 0710 "$RUNTIME"' in entrypoint  # passable by that group, never listable
    assert 'chmod 0640 "$RUNTIME/dovecot-sql-dict.conf.ext"' in entrypoint
    assert "umask 077" in entrypoint  # every other file it composes stays root's


# --- migration 0013 ---------------------------------------------------------------------------


def test_dovecot_gets_exactly_its_upsert_and_the_admin_service_only_reads() -> None:
    """Dovecot 2.3.19's dict-sql sends INSERT ... ON CONFLICT (key) DO UPDATE SET value:
    INSERT of the mapped columns, UPDATE of the values, SELECT of the conflict target."""
    grants = re.findall(r"^GRANT (.+?)\s+ON (\S+(?:, \S+)?) TO (\w+);", MIGRATION, re.M | re.S)
    assert [(" ".join(what.split()), on, to) for what, on, to in grants] == [
        (
            "INSERT (username, bytes, messages), UPDATE (bytes, messages), SELECT (username)",
            "quota_usage",
            "dovecot",
        ),
        (
            "INSERT (username, service, remote, last_seen), UPDATE (last_seen), "
            "SELECT (username, service, remote)",
            "sign_ins",
            "dovecot",
        ),
        ("SELECT", "quota_usage, sign_ins", "mailstack_admin"),
    ]
    assert "REVOKE ALL ON quota_usage, sign_ins FROM PUBLIC;" in MIGRATION


def test_the_use_is_timestamped_and_old_sign_ins_are_pruned_as_the_owner() -> None:
    assert "CREATE TRIGGER quota_usage_updated BEFORE UPDATE ON quota_usage" in MIGRATION
    prune = MIGRATION.split("CREATE FUNCTION sign_ins_prune()")[1].split("END $$;")[0]
    assert "SECURITY DEFINER SET search_path = pg_catalog, public" in prune
    assert "interval '90 days'" in prune and "LIMIT 100" in prune
    assert "CREATE TRIGGER sign_ins_prune AFTER INSERT OR UPDATE ON sign_ins" in MIGRATION
    # A removed mailbox takes its rows with it.
    assert MIGRATION.count("REFERENCES mailboxes (address) ON DELETE CASCADE") == 2


# --- mailstack.accounts.usage ------------------------------------------------------------------

USAGE_ROW = ("FROM quota_usage", b"usage,bob@example.test,1536,2,2026-12-06T12:00:00Z\n")
SIGN_IN_ROWS = (
    "FROM sign_ins",
    b"sign_in,imap,192.0.2.7,2026-12-06T12:05:00Z\nsign_in,managesieve,2001:db8::1,2026-12-05T08:00:00Z\n",
)


def test_a_mailboxs_use_and_sign_ins_are_asked_by_its_address_as_a_variable() -> None:
    containers = FakeContainers(by_marker=[USAGE_ROW, SIGN_IN_ROWS])
    assert usage.usage_of(containers, BOB) == usage.Usage(BOB, 1536, 2, "2026-12-06T12:00:00Z")
    assert containers.variables()["address"] == BOB
    assert usage.recent_sign_ins(containers, BOB) == [
        usage.SignIn("imap", "192.0.2.7", "2026-12-06T12:05:00Z"),
        usage.SignIn("managesieve", "2001:db8::1", "2026-12-05T08:00:00Z"),
    ]
    given = containers.variables()
    assert (given["address"], given["days"], given["limit"]) == (BOB, "90", "20")
    [query] = containers.sent("FROM sign_ins")
    assert "ORDER BY last_seen DESC" in query.text
    assert BOB not in query.stdin  # a variable, never formatted into the SQL


def test_a_mailbox_without_a_recorded_use_has_none_and_no_percent() -> None:
    assert usage.usage_of(FakeContainers(), BOB) is None
    assert usage.Usage(BOB, 512, 1, "").percent_of(0) is None
    assert usage.Usage(BOB, 512, 1, "").percent_of(1024) == 50


def test_a_list_of_mailboxes_gets_the_use_recorded_for_each() -> None:
    listed = [
        Mailbox(BOB, "example.test", 4096, True, "2026-12-06T10:00:00Z"),
        Mailbox("eve@example.test", "example.test", 0, True, "2026-12-06T10:00:00Z"),
    ]
    filled = usage.with_usage(FakeContainers(by_marker=[USAGE_ROW]), listed)
    assert (filled[0].storage_bytes, filled[0].messages, filled[0].quota_percent) == (1536, 2, 38)
    assert (filled[1].storage_bytes, filled[1].messages) == (None, None)


def test_the_account_page_shows_the_sessions_own_mailbox_only() -> None:
    containers = FakeContainers(by_marker=[USAGE_ROW, SIGN_IN_ROWS, NO_FACTOR, NO_APP_PASSWORDS])
    session = Session(sessions.new_id(), None, BOB, sessions.FULL, reauthenticated=True)
    overview = selfservice.overview(containers, session)
    assert overview.usage is not None and overview.used_percent is None  # no quota row here
    assert [s.protocol for s in overview.sign_ins] == ["imap", "managesieve"]
    for call in containers.sent("FROM sign_ins") + containers.sent("FROM quota_usage"):
        assert call.variables()["address"] == BOB
