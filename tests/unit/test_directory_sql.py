"""The mail directory adapter: values travel as psql variables, never inside SQL text."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mailstack.accounts import directory
from mailstack.accounts.passwords import hash_password
from mailstack.adapters import psql
from mailstack.errors import ExternalCommandFailed, MailstackError, UsageError
from tests.unit.fakes import FakeContainers

HASH = "{ARGON2ID}$argon2id$v=19$m=32768,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"


def test_domain_value_travels_as_a_variable_not_in_the_sql() -> None:
    db = FakeContainers(answers=[b"added,example.org\n"])
    directory.add_domain(db, "example.org")
    call = db.calls[0]
    assert call.service == "db"
    assert call.user == "postgres"
    assert db.variables()["domain"] == "example.org"
    assert "example.org" not in call.stdin
    assert ":'domain'" in call.stdin


def test_psql_stops_at_the_first_error_and_reads_sql_from_stdin() -> None:
    argv = psql.psql_argv({})
    assert "--set=ON_ERROR_STOP=1" in argv
    assert "--file=-" in argv
    assert "--csv" in argv
    assert "--no-psqlrc" in argv


def test_adding_an_existing_domain_is_a_usage_error() -> None:
    db = FakeContainers(answers=[b""])
    with pytest.raises(UsageError, match="already exists"):
        directory.add_domain(db, "example.org")


def test_an_alias_domain_name_is_refused_in_one_line_naming_its_target() -> None:
    db = FakeContainers(answers=[b"alias_of,example.org\n"])
    with pytest.raises(UsageError, match=r"alias domain of example\.org") as refused:
        directory.add_domain(db, "example.net")
    assert "domain alias remove example.net" in (refused.value.hint or "")


def test_a_hostile_value_is_refused_by_the_core_and_a_good_one_travels_as_a_variable() -> None:
    db = FakeContainers()
    with pytest.raises(UsageError, match=r"^DOMAIN: "):
        directory.add_domain(db, "x'); DROP TABLE domains; --")
    assert db.calls == []  # the core checks what it writes, whoever calls it
    db = FakeContainers(answers=[b"added,x\n"])
    directory.add_domain(db, "Drop-Table.Example")
    assert db.variables()["domain"] == "drop-table.example"
    assert "drop-table" not in db.calls[0].stdin.lower()


def test_control_characters_never_reach_psql() -> None:
    db = FakeContainers()
    with pytest.raises(UsageError, match="control character"):
        directory.add_domain(db, "example.org\n\\! rm -rf /")
    assert db.calls == []


def test_password_hash_is_set_on_stdin_and_never_on_the_command_line() -> None:
    db = FakeContainers(answers=[b"1,t\n"])
    directory.add_mailbox(db, "Alice@example.org", HASH, 1024)
    call = db.calls[0]
    assert all(HASH not in argument for argument in call.argv)
    assert call.stdin.startswith(f"\\set password_hash '{HASH}'\n")
    variables = db.variables()
    assert variables["address"] == "alice@example.org"
    assert variables["local_part"] == "alice"
    assert variables["domain"] == "example.org"
    assert variables["quota_bytes"] == "1024"


def test_a_real_hash_from_passwords_is_accepted() -> None:
    db = FakeContainers(answers=[b"1,t\n"])
    directory.add_mailbox(db, "bob@example.org", hash_password("Correct horse 9 battery"), 0)
    assert db.calls[0].stdin.startswith("\\set password_hash '{ARGON2ID}")


@pytest.mark.parametrize(
    "bad_hash",
    [
        "{ARGON2ID}abc' ; SELECT 1; --",
        "{ARGON2ID}abc\\' x",
        "{ARGON2ID}abc\n\\! id",
        "plain-text-password",
    ],
)
def test_a_hash_of_unexpected_shape_never_reaches_psql(bad_hash: str) -> None:
    db = FakeContainers()
    with pytest.raises(UsageError, match="unexpected form"):
        directory.add_mailbox(db, "bob@example.org", bad_hash, 0)
    assert db.calls == []


def test_mailbox_in_unknown_domain_says_to_add_the_domain() -> None:
    db = FakeContainers(answers=[b"0,f\n"])
    with pytest.raises(UsageError) as caught:
        directory.add_mailbox(db, "bob@nowhere.example", HASH, 0)
    assert "nowhere.example is not a mail domain" in caught.value.message
    assert caught.value.hint == "add it first: mailstack domain add nowhere.example"


def test_existing_mailbox_is_refused() -> None:
    db = FakeContainers(answers=[b"0,t\n"])
    with pytest.raises(UsageError, match="already exists"):
        directory.add_mailbox(db, "bob@example.org", HASH, 0)


def test_negative_quota_is_refused() -> None:
    with pytest.raises(UsageError, match="negative"):
        directory.add_mailbox(FakeContainers(), "bob@example.org", HASH, -1)


def test_lists_are_parsed_from_csv() -> None:
    db = FakeContainers(
        answers=[
            b"example.org,t,2,2026-01-02T03:04:05Z\nold.example,f,0,2025-01-01T00:00:00Z\n",
            b"bob@example.org,example.org,1024,t,2026-01-02T03:04:05Z\n",
        ]
    )
    domains = directory.list_domains(db)
    assert domains == [
        directory.Domain("example.org", True, 2, "2026-01-02T03:04:05Z"),
        directory.Domain("old.example", False, 0, "2025-01-01T00:00:00Z"),
    ]
    assert str(domains[1]) == "old.example (inactive)  0 mailbox(es)"
    mailboxes = directory.list_mailboxes(db)
    assert mailboxes == [
        directory.Mailbox("bob@example.org", "example.org", 1024, True, "2026-01-02T03:04:05Z")
    ]


def test_csv_quoting_is_understood() -> None:
    assert psql.parse_rows(b'"a,b",c\n"say ""hi""",\n') == [["a,b", "c"], ['say "hi"', ""]]


# --- migrations --------------------------------------------------------------------------


def write_migrations(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_shipped_migrations_are_well_formed() -> None:
    names = [migration.name for migration in directory.available_migrations()]
    assert names[0] == "0001_directory"
    assert names == sorted(names)


def test_only_pending_migrations_run_each_in_one_recorded_transaction(tmp_path: Path) -> None:
    root = write_migrations(
        tmp_path / "m", {"0001_first.sql": "CREATE TABLE a ();\n", "0002_second.sql": "SELECT 2;\n"}
    )
    first_sum = hashlib.sha256(b"CREATE TABLE a ();\n").hexdigest()
    db = FakeContainers(answers=[f"0001,0001_first,{first_sum}\n".encode(), b""])
    applied = directory.migrate(db, root)
    assert applied == ["0002_second"]
    assert len(db.calls) == 2
    migration_call = db.calls[1]
    assert "--single-transaction" in migration_call.argv
    assert migration_call.stdin.endswith("SELECT 2;\n")
    assert "pg_advisory_xact_lock" in migration_call.stdin
    assert "INSERT INTO schema_migrations" in migration_call.stdin
    assert db.variables(1) == {
        "ON_ERROR_STOP": "1",
        "migration_version": "0002",
        "migration_name": "0002_second",
        "migration_checksum": hashlib.sha256(b"SELECT 2;\n").hexdigest(),
    }


def test_nothing_pending_means_only_the_bootstrap_runs(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"0001_first.sql": "SELECT 1;\n"})
    digest = hashlib.sha256(b"SELECT 1;\n").hexdigest()
    db = FakeContainers(answers=[f"0001,0001_first,{digest}\n".encode()])
    assert directory.migrate(db, root) == []
    assert len(db.calls) == 1
    assert "CREATE TABLE IF NOT EXISTS schema_migrations" in db.calls[0].stdin


def test_an_applied_migration_that_changed_is_refused(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"0001_first.sql": "SELECT 'edited';\n"})
    db = FakeContainers(answers=[b"0001,0001_first,0000\n"])
    with pytest.raises(MailstackError, match="changed after it was applied"):
        directory.migrate(db, root)
    assert len(db.calls) == 1


def test_a_failed_migration_is_reported_by_name_as_rolled_back(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"0001_first.sql": "SELECT broken();\n"})
    db = FakeContainers(answers=[b""], fail_on="broken")
    with pytest.raises(ExternalCommandFailed) as caught:
        directory.migrate(db, root)
    assert "0001_first (rolled back" in caught.value.message


def test_a_badly_named_migration_file_is_refused(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"1_first.sql": "SELECT 1;\n"})
    with pytest.raises(MailstackError, match=r"NNNN_name\.sql"):
        directory.available_migrations(root)


def test_two_migrations_with_one_version_are_refused(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"0001_a.sql": "", "0001_b.sql": ""})
    with pytest.raises(MailstackError, match="share a version"):
        directory.available_migrations(root)
