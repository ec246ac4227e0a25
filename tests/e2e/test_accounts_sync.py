"""`accounts export|import` on the running stack: the file is private and stable, a dry run
changes nothing, an import restores the exported directory (users log in with their old
passwords: same hashes), and a failing import changes nothing (one transaction).

There is one stack per session, so "export, then import into a fresh stack" is proven as:
export, delete the entries (mailbox, whole domain), import again."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import DOMAIN, RunningStack
from tests.e2e.mail import can_log_in, fetch_by_subject, send_inbound, unique_subject
from tests.unit.test_mailu_import import mailu_hash

pytestmark = pytest.mark.e2e

PASSWORD = "Sync-horse-42-battery"  # a test account
REFUSED = "refused@elsewhere.example"


@dataclass(frozen=True)
class Accounts:
    domain: str
    alice: str  # on the stack's own domain, has stored mail and an app password
    bob: str  # on the extra domain
    app_password: str
    subject: str  # a message in alice's INBOX
    exported: Path
    text: str  # the export right after setup


def export(stack: RunningStack, path: Path) -> str:
    stack.cli("accounts", "export", str(path))
    return path.read_text()


def psql(stack: RunningStack, sql: str) -> None:
    stack.compose(
        "exec", "-T", "--user", "postgres", "db", "psql", "--host=/run/postgresql",
        "--username=postgres", "--dbname=mail", "--set=ON_ERROR_STOP=1", "--command", sql,
    )  # fmt: skip


@pytest.fixture(scope="module")
def accounts(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Accounts]:
    tag = uuid.uuid4().hex[:8]
    domain = f"sync-{tag}.test"
    alice, bob = f"alice-{tag}@{DOMAIN}", f"bob@{domain}"
    stack.cli("domain", "add", domain)
    for address, quota in ((alice, "2G"), (bob, "1G")):
        stack.cli(
            "mailbox", "add", address, "--quota", quota, "--password-stdin", stdin=PASSWORD + "\n"
        )
    stack.cli("alias", "add", f"team@{domain}", alice, bob)
    stack.cli("alias", "add", f"@{domain}", bob)
    stack.cli("alias", "sender", "add", f"team@{domain}", alice)
    created = json.loads(
        stack.cli("mailbox", "app-password", "add", alice, "phone", "--json").stdout
    )
    subject = unique_subject("kept across import")
    send_inbound([alice], subject)
    fetch_by_subject(stack, alice, PASSWORD, subject)
    path = tmp_path_factory.mktemp("accounts") / "accounts.yaml"
    yield Accounts(domain, alice, bob, created["password"], subject, path, export(stack, path))
    stack.cli("domain", "remove", domain, "--force", check=False)
    stack.cli("mailbox", "remove", alice, check=False)


def test_export_is_private_stable_and_holds_hashes_only(
    stack: RunningStack, accounts: Accounts, tmp_path: Path
) -> None:
    assert stat.S_IMODE(accounts.exported.stat().st_mode) == 0o600
    assert export(stack, tmp_path / "again.yaml") == accounts.text  # two exports diff cleanly
    data = yaml.safe_load(accounts.text)
    assert data["version"] == 1
    boxes = {m["address"]: m for m in data["mailboxes"]}
    assert boxes[accounts.bob]["quota"] == "1G"
    assert boxes[accounts.alice]["password_hash"].startswith("{ARGON2ID}$argon2id$")
    assert boxes[accounts.alice]["may_send_as"] == [f"team@{accounts.domain}"]
    assert [p["name"] for p in boxes[accounts.alice]["app_passwords"]] == ["phone"]
    aliases = {a["source"]: a["destinations"] for a in data["aliases"]}
    assert aliases[f"team@{accounts.domain}"] == sorted([accounts.alice, accounts.bob])
    assert aliases[f"@{accounts.domain}"] == [accounts.bob]
    assert PASSWORD not in accounts.text and accounts.app_password not in accounts.text


def test_dry_run_shows_the_diff_and_import_restores_the_old_passwords(
    stack: RunningStack, accounts: Accounts, tmp_path: Path
) -> None:
    stack.cli("mailbox", "remove", accounts.alice)  # stored mail kept (no --purge)
    stack.cli("mailbox", "quota", accounts.bob, "100M")
    stack.cli("alias", "add", f"new@{accounts.domain}", accounts.bob)
    assert not can_log_in(stack, accounts.alice, PASSWORD)
    changed = export(stack, tmp_path / "changed.yaml")

    dry = stack.cli("accounts", "import", str(accounts.exported), "--dry-run")
    lines = dry.stdout.splitlines()
    assert f"+ mailbox {accounts.alice}: quota 2G" in lines
    assert f"~ mailbox {accounts.bob}: quota 100M -> 1G" in lines
    assert f"- alias new@{accounts.domain}: -> {accounts.bob}" in lines
    assert f"+ sender team@{accounts.domain}: {accounts.alice} may send as it" in lines
    assert f"+ app password phone of {accounts.alice}" in lines
    assert "nothing was changed" in lines[-1]
    as_json = json.loads(
        stack.cli("accounts", "import", str(accounts.exported), "--dry-run", "--json").stdout
    )
    assert as_json["dry_run"] is True and as_json["applied"] is False
    assert {(c["op"], c["kind"], c["key"]) for c in as_json["changes"]} >= {
        ("+", "mailbox", accounts.alice),
        ("~", "mailbox", accounts.bob),
        ("-", "alias", f"new@{accounts.domain}"),
    }
    assert export(stack, tmp_path / "after-dry-run.yaml") == changed  # nothing changed

    done = stack.cli("accounts", "import", str(accounts.exported))
    assert "(one transaction)" in done.stdout
    assert export(stack, tmp_path / "restored.yaml") == accounts.text  # the exported state
    # Same hash: the original password logs in, and the stored mail was never removed.
    assert can_log_in(stack, accounts.alice, PASSWORD)
    assert can_log_in(stack, accounts.alice, accounts.app_password)
    fetch_by_subject(stack, accounts.alice, PASSWORD, accounts.subject, timeout=5)
    again = stack.cli("accounts", "import", str(accounts.exported))
    assert "nothing to change" in again.stdout


def test_an_import_failing_midway_changes_nothing(
    stack: RunningStack, accounts: Accounts, tmp_path: Path
) -> None:
    data = yaml.safe_load(accounts.text)
    for box in data["mailboxes"]:
        if box["address"] == accounts.bob:
            box["quota"] = "3G"  # applied before the alias that fails
    data["mailboxes"] = [m for m in data["mailboxes"] if m["address"] != accounts.alice]
    data["aliases"] = [a for a in data["aliases"] if accounts.alice not in a["destinations"]]
    data["aliases"].append({"source": f"fail@{accounts.domain}", "destinations": [REFUSED]})
    failing = tmp_path / "failing.yaml"
    failing.write_text(yaml.safe_dump(data))
    before = export(stack, tmp_path / "before.yaml")
    # A constraint the file's validation cannot know about stands in for any database error.
    psql(
        stack,
        f"ALTER TABLE aliases ADD CONSTRAINT e2e_refuse CHECK (destination <> '{REFUSED}')",
    )
    try:
        result = stack.cli("accounts", "import", str(failing), check=False)
    finally:
        psql(stack, "ALTER TABLE aliases DROP CONSTRAINT e2e_refuse")
    assert result.returncode != 0
    assert "rolled back: nothing of it was applied" in result.stderr
    assert "e2e_refuse" in result.stderr and "Traceback" not in result.stderr
    assert export(stack, tmp_path / "after.yaml") == before
    assert can_log_in(stack, accounts.alice, PASSWORD)


def test_a_domain_deleted_by_import_comes_back_with_its_mailboxes(
    stack: RunningStack, accounts: Accounts, tmp_path: Path
) -> None:
    data = yaml.safe_load(accounts.text)
    own = [d for d in data["domains"] if d["name"] == DOMAIN]
    data["domains"] = [d for d in data["domains"] if d["name"] != accounts.domain]
    data["mailboxes"] = [m for m in data["mailboxes"] if not m["address"].endswith(accounts.domain)]
    for box in data["mailboxes"]:
        if box["address"] == accounts.alice:
            del box["may_send_as"]  # team@ goes with the domain
    data["aliases"] = [a for a in data["aliases"] if not a["source"].endswith(accounts.domain)]
    without = tmp_path / "without.yaml"
    without.write_text(yaml.safe_dump(data))
    removed = stack.cli("accounts", "import", str(without))
    assert (
        f"- domain {accounts.domain}: stored mail (if any) is kept in /var/mail/{accounts.domain}"
        in (removed.stdout.splitlines())
    )
    assert not can_log_in(stack, accounts.bob, PASSWORD)

    # The stack's own domain cannot go, whatever the file says; nothing is changed then.
    data["domains"] = [d for d in data["domains"] if d not in own]
    data["alias_domains"] = [a for a in data["alias_domains"] if a["target"] != DOMAIN]
    names = {d["name"] for d in data["domains"]} | {a["name"] for a in data["alias_domains"]}
    data["mailboxes"] = [m for m in data["mailboxes"] if not m["address"].endswith("@" + DOMAIN)]
    for box in data["mailboxes"]:
        box["may_send_as"] = [s for s in box.get("may_send_as", []) if s.split("@")[1] in names]
    data["aliases"] = [a for a in data["aliases"] if not a["source"].endswith("@" + DOMAIN)]
    (tmp_path / "no-own.yaml").write_text(yaml.safe_dump(data))
    refused = stack.cli("accounts", "import", str(tmp_path / "no-own.yaml"), check=False)
    assert refused.returncode == 2 and "stack's own domain" in refused.stderr
    assert can_log_in(stack, accounts.alice, PASSWORD)

    stack.cli("accounts", "import", str(accounts.exported))
    assert export(stack, tmp_path / "back.yaml") == accounts.text
    assert can_log_in(stack, accounts.bob, PASSWORD)
    subject = unique_subject("catch-all after import")
    send_inbound([f"anyone@{accounts.domain}"], subject)
    fetch_by_subject(stack, accounts.bob, PASSWORD, subject)


def test_a_mailu_export_imports_beside_the_directory_and_its_passwords_still_work(
    stack: RunningStack, accounts: Accounts, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    domain, alternative = f"mailu-{tag}.test", f"mailu-alt-{tag}.test"
    ann, ben, cid = (f"{name}@{domain}" for name in ("ann", "ben", "cid"))
    export_file = tmp_path / "mailu-export.yaml"
    export_file.write_text(
        yaml.safe_dump(
            {  # `flask mailu config-export --secrets`, Mailu's docs/cli.rst format
                "domain": [{"name": domain, "alternatives": [alternative]}],
                "user": [
                    {
                        "email": ann,
                        "password": mailu_hash(PASSWORD, "$2b$10$" + tag * 2 + "abcdef"),
                    },
                    {
                        "email": ben,
                        "password": mailu_hash(PASSWORD, f"$6${tag}$"),
                        "quota_bytes": 10**9,
                    },
                    {"email": cid, "password": "$pbkdf2-sha512$25000$c2FsdA$aGFzaA"},
                ],
                "alias": [{"email": f"team@{domain}", "destination": [ann, ben]}],
                "relay": [{"name": f"relay-{tag}.test", "smtp": "mx.elsewhere.test"}],
            }
        )
    )
    before = export(stack, tmp_path / "before.yaml")
    try:
        dry = stack.cli("accounts", "import", str(export_file), "--from", "mailu", "--dry-run")
        assert f"+ mailbox {ann}: quota" in dry.stdout  # the stack's default quota
        assert f"+ alias domain {alternative}" in dry.stdout
        assert f"mailbox passwd {cid}" in dry.stdout and "a relayed domain" in dry.stdout
        assert not [line for line in dry.stdout.splitlines() if line.startswith("- ")]
        assert export(stack, tmp_path / "after-dry.yaml") == before

        stack.cli("accounts", "import", str(export_file), "--from", "mailu")
        # Mailu's own hashes: Dovecot checks them, so the users keep their passwords.
        assert can_log_in(stack, ann, PASSWORD) and can_log_in(stack, ben, PASSWORD)
        assert not can_log_in(stack, cid, PASSWORD)  # an unusable hash until it is reset
        # Nothing of the directory went: the accounts of the other tests still sign in.
        assert can_log_in(stack, accounts.alice, PASSWORD)
        subject = unique_subject("mailu alias via alternative domain")
        send_inbound([f"team@{alternative}"], subject)
        fetch_by_subject(stack, ann, PASSWORD, subject)
        fetch_by_subject(stack, ben, PASSWORD, subject)
        stack.cli("mailbox", "passwd", cid, "--password-stdin", stdin=PASSWORD + "\n")
        assert can_log_in(stack, cid, PASSWORD)
        # Run again (late changes at the source): the password set here stays.
        again = stack.cli("accounts", "import", str(export_file), "--from", "mailu")
        assert "nothing to change" in again.stdout, again.stdout
        assert can_log_in(stack, cid, PASSWORD)
    finally:
        stack.cli("domain", "alias", "remove", alternative, check=False)
        stack.cli("domain", "remove", domain, "--force", check=False)
