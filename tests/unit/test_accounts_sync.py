"""`accounts export|import`: the file's validation, the diff, and how values reach psql."""

from __future__ import annotations

import base64
import copy
import csv
import io
import json
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mailstack.accounts import sync, syncfile
from mailstack.accounts.passwords import hash_password
from mailstack.accounts.syncfile import dump_document, parse_document, snapshot_of
from mailstack.accounts.syncplan import (
    AppPasswordState,
    MailboxState,
    Snapshot,
    check_own_domain,
    diff,
)
from mailstack.cli.main import app
from mailstack.errors import ExternalCommandFailed, UsageError
from tests.unit.fakes import FakeContainers

runner = CliRunner()
HASH_A = "{ARGON2ID}$argon2id$v=19$m=32768,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"
HASH_B = "{ARGON2ID}$argon2id$v=19$m=32768,t=2,p=1$b3RoZXJzYWx0c2FsdA$b3RoZXJoYXNob3RoZXI"
HASH_APP = "{ARGON2ID}$argon2id$v=19$m=32768,t=2,p=1$YXBwc2FsdGFwcHNhbHQ$YXBwaGFzaGFwcGhhc2g"


def base_snapshot() -> Snapshot:
    return Snapshot(
        domains={"example.org": True, "other.test": True},
        alias_domains={"alias.test": "example.org"},
        mailboxes={
            "alice@example.org": MailboxState(HASH_A, 2 * 1024**3, True),
            "bob@other.test": MailboxState(HASH_B, 0, True),
        },
        aliases={
            "info@example.org": frozenset({"alice@example.org", "bob@other.test"}),
            "@other.test": frozenset({"bob@other.test"}),
        },
        senders=frozenset({("alice@example.org", "info@example.org")}),
        app_passwords={("alice@example.org", "phone"): AppPasswordState("0a1b2c3d", HASH_APP)},
    )


def base_data() -> dict:
    return yaml.safe_load(dump_document(base_snapshot()))


def parse(data: dict) -> syncfile.Document:
    return parse_document(yaml.safe_dump(data).encode(), "accounts.yaml")


def db_answer(snapshot: Snapshot) -> bytes:
    """What psql --csv prints for _READ: one field, the directory as JSON."""
    data = {
        "domains": [{"name": n, "active": a} for n, a in snapshot.domains.items()],
        "alias_domains": [{"name": n, "target": t} for n, t in snapshot.alias_domains.items()],
        "mailboxes": [
            {"address": a, "password": m.password_hash, "quota_bytes": m.quota_bytes,
             "active": m.active}
            for a, m in snapshot.mailboxes.items()
        ],
        "aliases": [
            {"source": s, "destination": d} for s, ds in snapshot.aliases.items() for d in ds
        ],
        "senders": [{"login": login, "sender": s} for login, s in snapshot.senders],
        "app_passwords": [
            {"address": a, "name": n, "lookup_key": p.lookup_key, "password": p.password_hash}
            for (a, n), p in snapshot.app_passwords.items()
        ],
    }  # fmt: skip
    out = io.StringIO()
    csv.writer(out).writerow([json.dumps(data)])
    return out.getvalue().encode()


# --- the file: stable, and read back as it was written -------------------------------------


def test_export_is_sorted_stable_and_reads_back_unchanged() -> None:
    snapshot = base_snapshot()
    shuffled = Snapshot(
        domains=dict(reversed(list(snapshot.domains.items()))),
        alias_domains=snapshot.alias_domains,
        mailboxes=dict(reversed(list(snapshot.mailboxes.items()))),
        aliases=dict(reversed(list(snapshot.aliases.items()))),
        senders=snapshot.senders,
        app_passwords=snapshot.app_passwords,
    )
    text = dump_document(snapshot)
    assert text == dump_document(shuffled)  # insertion order does not show: exports diff
    assert text.startswith("# mailstack accounts export")
    data = yaml.safe_load(text)
    assert data["version"] == 1
    assert [m["address"] for m in data["mailboxes"]] == ["alice@example.org", "bob@other.test"]
    assert data["mailboxes"][0]["quota"] == "2G" and data["mailboxes"][1]["quota"] == 0
    assert data["mailboxes"][0]["may_send_as"] == ["info@example.org"]
    assert data["aliases"][0] == {"source": "@other.test", "destinations": ["bob@other.test"]}
    assert snapshot_of(parse_document(text.encode(), "a.yaml")) == snapshot
    assert diff(snapshot, snapshot_of(parse_document(text.encode(), "a.yaml"))) == []


def test_export_writes_the_file_0600_even_over_a_readable_one(tmp_path: Path) -> None:
    target = tmp_path / "accounts.yaml"
    target.write_text("old")
    target.chmod(0o644)
    db = FakeContainers(answers=[db_answer(base_snapshot())])
    result = sync.export_accounts(db, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert HASH_A in target.read_text()
    assert (result.domains, result.mailboxes, result.aliases) == (2, 2, 2)
    assert "0600" in str(result)
    assert db.calls[0].service == "db" and db.variables(0) == {"ON_ERROR_STOP": "1"}
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind


# --- the diff --------------------------------------------------------------------------------


def test_diff_names_every_kind_and_never_shows_a_hash() -> None:
    current = base_snapshot()
    wanted = Snapshot(
        domains={"example.org": True, "new.test": False},
        alias_domains={"alias.test": "new.test"},
        mailboxes={
            "alice@example.org": MailboxState(HASH_B, 1024**3, False),
            "carol@new.test": MailboxState(HASH_A, 0, True),
        },
        aliases={"info@example.org": frozenset({"alice@example.org", "carol@new.test"})},
        senders=frozenset({("alice@example.org", "@example.org")}),
        app_passwords={("alice@example.org", "phone"): AppPasswordState("ffffffff", HASH_APP)},
    )
    lines = [str(change) for change in diff(current, wanted)]
    assert lines == [
        "+ domain new.test: inactive",
        "- domain other.test: stored mail (if any) is kept in /var/mail/other.test",
        "~ alias domain alias.test: target example.org -> new.test",
        "~ mailbox alice@example.org: password changed; quota 2G -> 1G; deactivated",
        "- mailbox bob@other.test: stored mail (if any) is kept in /var/mail/other.test/bob",
        "+ mailbox carol@new.test: quota none",
        "+ sender @example.org: alice@example.org may send as it",
        "- sender info@example.org: alice@example.org may send as it",
        "~ app password phone of alice@example.org: password changed",
        "- alias @other.test: -> bob@other.test",
        "~ alias info@example.org: + carol@new.test; - bob@other.test",
    ]
    assert not any("$argon2id$" in line for line in lines)
    assert diff(wanted, wanted) == []


def test_the_stacks_own_domain_cannot_be_removed_by_import() -> None:
    current = base_snapshot()
    wanted = Snapshot(domains={"other.test": True})
    with pytest.raises(UsageError, match=r"example\.org is missing.*own domain"):
        check_own_domain(diff(current, wanted), "example.org", "a.yaml")
    check_own_domain(diff(current, wanted), "other.test", "a.yaml")


def test_an_import_refusing_the_own_domain_touches_nothing() -> None:
    db = FakeContainers(answers=[db_answer(base_snapshot())])
    with pytest.raises(UsageError, match="own domain"):
        sync.import_accounts(
            db, Snapshot(domains={"other.test": True}), "a.yaml", "example.org", dry_run=False
        )
    assert len(db.calls) == 1  # the read; no write was attempted


# --- hostile and wrong input -----------------------------------------------------------------


def _with_mailbox(**changes: object) -> dict:
    data = base_data()
    data["mailboxes"][0].update(changes)
    return data


PLAIN = "Correct-Horse-Battery-9"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_with_mailbox(address="x'; DROP TABLE mailboxes;--@example.org"), "mailboxes[0]"),
        (_with_mailbox(address="back\\slash@example.org"), "unsupported characters"),
        (_with_mailbox(address="a" * 1000 + "@example.org"), "is too long"),
        (_with_mailbox(address="a" * 65 + "@example.org"), "unsupported characters"),
        (_with_mailbox(address="new\nline@example.org"), "control character"),
        (_with_mailbox(address="a/b@example.org"), "'/' in the local part"),
        (_with_mailbox(address="alice@exаmple.org"), "mixes Cyrillic and Latin"),
        (_with_mailbox(password_hash=PLAIN), "plain passwords are not accepted"),
        (_with_mailbox(password_hash="{PLAIN}it's'me"), "weak scheme {PLAIN}"),
        (_with_mailbox(password_hash="{PLAIN}secret"), "weak scheme {PLAIN}"),
        (_with_mailbox(password_hash="{CLEAR}secret"), "weak scheme {CLEAR}"),
        (
            _with_mailbox(password_hash="{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee69"),
            "weak scheme {PLAIN-MD5}",
        ),
        (_with_mailbox(password_hash="{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="), "weak scheme {SHA}"),
        (_with_mailbox(quota="lots"), "is not a quota"),
        (_with_mailbox(quota=True), "is not a quota"),
        (_with_mailbox(quota=-1), "is not a quota"),
        (_with_mailbox(active="yes"), "is not true or false"),
        (_with_mailbox(passwd=HASH_A), "passwd: is not a known key"),
        (_with_mailbox(may_send_as=["info@nowhere.test"]), "nowhere.test is not in domains"),
        (_with_mailbox(address="zed@nowhere.test"), "nowhere.test is not in domains"),
        ({**base_data(), "version": 2}, "version: 2 is not one of: 1"),
        ({**base_data(), "domains": [{"name": "x'--.org"}]}, "domains[0]"),
        ({**base_data(), "domains": [{"name": "50%_off.org"}]}, "is not a valid domain name"),
        (
            {**base_data(), "aliases": [{"source": "info@example.org", "destinations": []}]},
            "aliases[0] (info@example.org): destinations: needs at least one entry",
        ),
        (
            {**base_data(), "aliases": [{"source": "@SELECT", "destinations": ["a@b.org"]}]},
            "is not a catch-all",
        ),
        (
            {
                **base_data(),
                "aliases": [{"source": "x@example.org", "destinations": ["x\\@b.org"]}],
            },
            "aliases[0] (x@example.org): destinations[0]",
        ),
    ],
)
def test_hostile_or_wrong_entries_are_refused_with_one_line(data: dict, expected: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(data)
    message = caught.value.message
    assert expected in message
    assert message.startswith("accounts.yaml: ") and "\n" not in message
    assert PLAIN not in message  # a plain password in the file is never echoed


def test_a_plaintext_password_is_refused_naming_the_entry_not_the_secret() -> None:
    with pytest.raises(UsageError) as caught:
        parse(_with_mailbox(password_hash=PLAIN))
    assert caught.value.message.startswith(
        "accounts.yaml: mailboxes[0] (alice@example.org): password_hash: is not a password hash"
    )


def test_yaml_aliases_and_non_mappings_are_refused() -> None:
    with pytest.raises(UsageError, match="YAML aliases"):
        parse_document(b"version: 1\ndomains: &d []\nalias_domains: *d\n", "a.yaml")
    with pytest.raises(UsageError, match="must be a mapping"):
        parse_document(b"- 1\n", "a.yaml")
    with pytest.raises(UsageError, match="YAML syntax error"):
        parse_document(b"version: [1\n", "a.yaml")


def test_duplicates_are_refused() -> None:
    data = base_data()
    data["mailboxes"].append(copy.deepcopy(data["mailboxes"][0]) | {"address": "Alice@Example.org"})
    with pytest.raises(UsageError, match=r"mailboxes\[2\] \(alice@example.org\): listed twice"):
        parse(data)


def test_names_are_normalised_like_the_cli_does() -> None:
    data = base_data()
    data["domains"].append({"name": "Bücher.Example"})
    data["mailboxes"].append(
        {"address": "Dave@BÜCHER.example", "password_hash": HASH_A, "quota": "500M"}
    )
    snapshot = snapshot_of(parse(data))
    assert "xn--bcher-kva.example" in snapshot.domains
    assert snapshot.mailboxes["dave@xn--bcher-kva.example"] == MailboxState(
        HASH_A, 500 * 1024**2, True
    )


# --- values reach the database as psql variables only -----------------------------------------

# Accepted by the address rules (RFC 5322 atext), and hostile to naive SQL all the same.
ODD = ["o'brien@example.org", "50%_off@example.org", "x'or'1'='1@example.org", "select@example.org"]


def test_import_sends_the_document_as_one_variable_and_constant_sql() -> None:
    data = base_data()
    real_hash = hash_password(PLAIN)
    data["mailboxes"] += [{"address": a, "password_hash": real_hash, "quota": "1G"} for a in ODD]
    data["aliases"].append({"source": "x'or'1'='1@example.org", "destinations": ["o'brien@x.org"]})
    wanted = snapshot_of(parse(data))
    db = FakeContainers(answers=[db_answer(base_snapshot()), b"applied,6\n"])
    result = sync.import_accounts(db, wanted, "a.yaml", "example.org", dry_run=False)
    assert result.applied and not result.dry_run
    assert [c.key for c in result.changes if c.op == "+"] == [
        *sorted(ODD),
        "x'or'1'='1@example.org",
    ]
    _, argv, stdin, user = db.calls[1]
    assert user == "postgres" and "--single-transaction" in argv
    assert db.variables(1) == {"ON_ERROR_STOP": "1"}  # nothing (and no hash) in argv
    assert not any(real_hash in arg or "brien" in arg for arg in argv)
    prelude, _, sql = stdin.partition("\n")
    assert sql == sync._APPLY  # the SQL text is constant
    assert prelude.startswith("\\set accounts_document '") and prelude.endswith("'")
    payload = prelude.removeprefix("\\set accounts_document '")[:-1]
    assert set(payload) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    rows = json.loads(base64.b64decode(payload))
    addresses = [m["address"] for m in rows["mailboxes"]]
    assert set(ODD) <= set(addresses)
    obrien = next(m for m in rows["mailboxes"] if m["address"] == "o'brien@example.org")
    assert obrien == {
        "address": "o'brien@example.org", "local_part": "o'brien", "domain": "example.org",
        "password": real_hash, "quota_bytes": 1024**3, "active": True,
    }  # fmt: skip
    assert {"source": "x'or'1'='1@example.org", "domain": "example.org",
            "destination": "o'brien@x.org"} in rows["aliases"]  # fmt: skip
    assert {"sender": "info@example.org", "login": "alice@example.org"} in rows["senders"]


def test_dry_run_reads_only() -> None:
    data = base_data()
    data["mailboxes"][0]["quota"] = "5G"
    db = FakeContainers(answers=[db_answer(base_snapshot())])
    result = sync.import_accounts(
        db, snapshot_of(parse(data)), "a.yaml", "example.org", dry_run=True
    )
    assert len(db.calls) == 1 and "SELECT json_build_object" in db.calls[0].stdin
    assert [str(c) for c in result.changes] == ["~ mailbox alice@example.org: quota 2G -> 5G"]
    assert "dry run: 0 added, 0 removed, 1 changed; nothing was changed" in str(result)
    assert not result.applied


def test_nothing_to_change_writes_nothing() -> None:
    db = FakeContainers(answers=[db_answer(base_snapshot())])
    result = sync.import_accounts(db, base_snapshot(), "a.yaml", "example.org", dry_run=False)
    assert len(db.calls) == 1 and result.changes == () and not result.applied
    assert "nothing to change" in str(result)


def test_a_failed_apply_says_it_was_rolled_back() -> None:
    db = FakeContainers(answers=[db_answer(base_snapshot())], fail_on="LOCK TABLE")
    with pytest.raises(ExternalCommandFailed, match="rolled back: nothing of it was applied"):
        sync.import_accounts(
            db, Snapshot(domains={"example.org": True}), "a.yaml", "example.org", dry_run=False
        )


def test_removed_and_deactivated_mailboxes_are_kicked() -> None:
    db = FakeContainers(
        answers=[
            db_answer(base_snapshot()),
            b"applied,1\n",
        ]
    )
    wanted = Snapshot(
        domains={"example.org": True},
        mailboxes={"alice@example.org": MailboxState(HASH_A, 2 * 1024**3, False)},
    )
    result = sync.import_accounts(db, wanted, "a.yaml", "example.org", dry_run=False)
    kicks = [call.argv for call in db.calls if call.service == "dovecot"]
    assert kicks == [  # the deactivated one and the removed one
        ["doveadm", "kick", "alice@example.org"],
        ["doveadm", "kick", "bob@other.test"],
    ]
    assert result.kept_mail == ("/var/mail/other.test", "/var/mail/other.test/bob")
    assert "the stored mail of removed mailboxes and domains is kept" in str(result)


def test_the_document_variable_refuses_anything_but_base64() -> None:
    with pytest.raises(Exception, match="not base64"):
        sync.set_document_variable("accounts_document", "abc'; \\! rm -rf /")


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_refuses_a_bad_file_with_one_line_before_touching_a_stack(tmp_path: Path) -> None:
    bad = tmp_path / "accounts.yaml"
    data = _with_mailbox(password_hash=PLAIN)
    bad.write_text(yaml.safe_dump(data))
    result = runner.invoke(
        app, ["accounts", "import", str(bad), "--dry-run", "--dir", str(tmp_path / "none")]
    )
    assert result.exit_code == 2
    assert "mailboxes[0] (alice@example.org): password_hash: is not a password hash" in (
        result.output
    )
    assert PLAIN not in result.output and "Traceback" not in result.output


def test_cli_names_a_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["accounts", "import", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "cannot be read" in result.output


@pytest.mark.parametrize(
    "strong",
    [
        "{BLF-CRYPT}$2y$05$zEHRUJBGQxk7qYzn2WHFw.Wv8Uf6fGSJnm5ejIx7nIhnqqKPudwGq",
        "{SHA512-CRYPT}$6$rounds=5000$usesomesillystri$D4IrlXatmP7rx3P3InaxBeoomnAihCKRVQP22JZ6EY47Wc6BkroIuUUBOov1i.S5KPgErtP/EN5mcO.ChWQW21",
    ],
)
def test_import_accepts_hashes_of_strong_schemes_only(strong: str) -> None:
    """An operator moving from another server brings bcrypt or SHA512-CRYPT hashes along."""
    parse(_with_mailbox(password_hash=strong))
