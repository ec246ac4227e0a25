"""The audit log on the running stack: changes made through the CLI (commands and `accounts
import`) and by hand in psql are each recorded with who made them, from where, what and on
what, and never with a secret; `audit list --json` is the export."""

from __future__ import annotations

import json
import os
import pwd
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import DOMAIN, RunningStack

pytestmark = pytest.mark.e2e

PASSWORD = "Audit-horse-42-battery"  # a test account
NEW_PASSWORD = "Audit-horse-43-battery"
CLI_ACTOR = f"cli:{pwd.getpwuid(os.geteuid()).pw_name}"


def entries(stack: RunningStack, *args: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(
        stack.cli("audit", "list", "--json", "--limit", "100000", *args).stdout
    )
    return listed


def about(stack: RunningStack, target: str) -> list[tuple[str, str, str, str]]:
    """(actor, source, action, detail) of every entry on `target`, oldest first."""
    return [
        (entry["actor"], entry["source"], entry["action"], entry["detail"])
        for entry in entries(stack)
        if entry["target"] == target
    ]


def psql(stack: RunningStack, sql: str, database: str = "mail", **variables: str) -> str:
    """SQL typed by hand in the db container, as an operator with a shell would."""
    settings = [f"--set={name}={value}" for name, value in variables.items()]
    return stack.compose(
        "exec", "-T", "--user", "postgres", "db", "psql", "--host=/run/postgresql",
        "--username=postgres", f"--dbname={database}", "--set=ON_ERROR_STOP=1", "--no-align",
        "--tuples-only", *settings, "--file=-", stdin=sql.encode(),
    ).stdout.decode()  # fmt: skip


def test_each_cli_change_leaves_one_entry_with_the_host_user_and_what_it_did(
    stack: RunningStack,
) -> None:
    address = f"audit-{uuid.uuid4().hex[:10]}@{DOMAIN}"
    alias = f"audit-alias-{uuid.uuid4().hex[:10]}@{DOMAIN}"
    stack.cli("mailbox", "add", address, "--quota", "1G", "--password-stdin", stdin=PASSWORD + "\n")
    assert about(stack, address) == [(CLI_ACTOR, "host", "mailbox.add", "quota 1073741824")]
    # psql's output reaches the CLI's parser unchanged by the session's actor line.
    listed = json.loads(stack.cli("mailbox", "list", "--domain", DOMAIN, "--json").stdout)
    assert address in [mailbox["address"] for mailbox in listed]

    stack.cli("mailbox", "passwd", address, "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert about(stack, address)[1:] == [(CLI_ACTOR, "host", "mailbox.password", "")]

    stack.cli("alias", "add", alias, address)
    assert about(stack, f"{alias} -> {address}") == [(CLI_ACTOR, "host", "alias.add", "")]

    stack.cli("mailbox", "remove", address)
    removed = [entry for entry in about(stack, address) if entry[2] == "mailbox.remove"]
    assert removed == [(CLI_ACTOR, "host", "mailbox.remove", "quota 1073741824")]
    # The alias that pointed at it went with it, and says so.
    assert about(stack, f"{alias} -> {address}")[-1] == (CLI_ACTOR, "host", "alias.remove", "")


def test_a_password_change_is_recorded_without_its_hash(stack: RunningStack) -> None:
    address, _ = stack.new_mailbox(PASSWORD)
    stack.cli("mailbox", "passwd", address, "--password-stdin", stdin=NEW_PASSWORD + "\n")
    stored = psql(
        stack, "SELECT password FROM mailboxes WHERE address = :'address';", address=address
    ).strip()
    assert stored.startswith("{ARGON2ID}$argon2id$")
    whole_log = psql(stack, "SELECT audit_log::text FROM audit_log;")
    exported = stack.cli("audit", "list", "--json", "--limit", "100000").stdout
    for text in (whole_log, exported):
        assert address in text
        assert stored not in text and stored.rpartition("$")[2] not in text
        assert "argon2" not in text.lower()
        assert NEW_PASSWORD not in text and PASSWORD not in text
    stack.cli("mailbox", "remove", address)


def test_accounts_import_is_recorded_as_the_cli_user(stack: RunningStack, tmp_path: Path) -> None:
    address, _ = stack.new_mailbox(PASSWORD)
    path = tmp_path / "accounts.yaml"
    stack.cli("accounts", "export", str(path))
    data = yaml.safe_load(path.read_text())
    for mailbox in data["mailboxes"]:
        if mailbox["address"] == address:
            old_quota, mailbox["quota"] = mailbox["quota"], "3G"
    assert old_quota != "3G"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    stack.cli("accounts", "import", str(path))
    actor, source, action, detail = about(stack, address)[-1]
    assert (actor, source, action) == (CLI_ACTOR, "host", "mailbox.quota")
    assert detail.endswith(" -> 3221225472")
    stack.cli("mailbox", "remove", address)


def test_a_change_made_by_hand_in_psql_is_recorded_as_the_database_user(
    stack: RunningStack,
) -> None:
    domain = f"by-hand-{uuid.uuid4().hex[:8]}.test"
    psql(stack, "INSERT INTO domains (name) VALUES (:'domain');", domain=domain)
    psql(stack, "UPDATE domains SET active = false WHERE name = :'domain';", domain=domain)
    psql(stack, "DELETE FROM domains WHERE name = :'domain';", domain=domain)
    assert about(stack, domain) == [
        ("db:postgres", "database", "domain.add", ""),
        ("db:postgres", "database", "domain.disable", ""),
        ("db:postgres", "database", "domain.remove", "inactive"),
    ]
    by_hand = entries(stack, "--actor", "db:postgres", "--since", "1h")
    assert [entry["action"] for entry in by_hand if entry["target"] == domain] == [
        "domain.add",
        "domain.disable",
        "domain.remove",
    ]
    assert all(entry["actor"] == "db:postgres" for entry in by_hand)


def test_audit_list_json_parses_and_the_text_form_matches_it(stack: RunningStack) -> None:
    address, _ = stack.new_mailbox(PASSWORD)
    listed = entries(stack, "--limit", "3")
    assert len(listed) == 3
    assert [set(entry) for entry in listed] == [
        {"id", "at", "actor", "source", "action", "target", "detail"}
    ] * 3
    assert [entry["id"] for entry in listed] == sorted(entry["id"] for entry in listed)
    assert listed[-1]["target"] == address and listed[-1]["action"] == "mailbox.add"
    text = stack.cli("audit", "list", "--limit", "3").stdout.splitlines()
    assert len(text) == 3
    quota = listed[-1]["detail"]
    assert quota.startswith("quota ")
    assert text[-1].endswith(f"{CLI_ACTOR} from host  mailbox.add {address}  ({quota})")
    assert text[-1].startswith(listed[-1]["at"])
    stack.cli("mailbox", "remove", address)


def test_a_restored_dump_keeps_the_log_and_goes_on_recording(stack: RunningStack) -> None:
    # Backups and an update's rollback restore pg_dump's dumps: the restore itself adds no
    # entry, and the restored database still records every change.
    scratch = f"audit_restore_{uuid.uuid4().hex[:8]}"
    dump = stack.compose(
        "exec", "-T", "--user", "postgres", "db", "pg_dump", "--format=custom", "--dbname=mail"
    ).stdout
    logged = psql(stack, "SELECT count(*) FROM audit_log;").strip()
    psql(stack, f'CREATE DATABASE "{scratch}";', database="postgres")
    try:
        stack.compose(
            "exec", "-T", "--user", "postgres", "db", "pg_restore", f"--dbname={scratch}",
            "--exit-on-error", "--single-transaction", "--no-owner", stdin=dump,
        )  # fmt: skip
        assert psql(stack, "SELECT count(*) FROM audit_log;", database=scratch).strip() == logged
        domain = f"restored-{uuid.uuid4().hex[:8]}.test"
        psql(stack, "INSERT INTO domains (name) VALUES (:'domain');", scratch, domain=domain)
        last = psql(
            stack, "SELECT actor, action, target FROM audit_log ORDER BY id DESC LIMIT 1;", scratch
        )
        assert last.strip() == f"db:postgres|domain.add|{domain}"
    finally:
        psql(stack, f'DROP DATABASE IF EXISTS "{scratch}";', database="postgres")
