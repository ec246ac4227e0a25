"""The mail directory adapter: values travel as psql variables, never inside SQL text."""

from __future__ import annotations

import pytest

from mailstack.accounts import directory
from mailstack.accounts.passwords import hash_password
from mailstack.adapters import psql
from mailstack.errors import UsageError
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
    db = FakeContainers(answers=[b"result,1,t,f,0,0\n"])
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
    db = FakeContainers(answers=[b"result,1,t,f,0,0\n"])
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
    db = FakeContainers(answers=[b"result,0,f,f,0,0\n"])
    with pytest.raises(UsageError) as caught:
        directory.add_mailbox(db, "bob@nowhere.example", HASH, 0)
    assert "nowhere.example is not a mail domain" in caught.value.message
    assert caught.value.hint == "add it first: mailstack domain add nowhere.example"


def test_existing_mailbox_is_refused() -> None:
    db = FakeContainers(answers=[b"result,0,t,t,0,0\n"])
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
    assert str(domains[1]) == "old.example (inactive)  0 mailbox(es), quota none, 0B allocated"
    mailboxes = directory.list_mailboxes(db)
    assert mailboxes == [
        directory.Mailbox("bob@example.org", "example.org", 1024, True, "2026-01-02T03:04:05Z")
    ]


def test_csv_quoting_is_understood() -> None:
    assert psql.parse_rows(b'"a,b",c\n"say ""hi""",\n') == [["a,b", "c"], ['say "hi"', ""]]
