"""The audit log's actor (psql sessions say who acts) and `audit list` (filters, text, JSON)."""

from __future__ import annotations

import datetime
import json
import os
import pwd
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from mailstack.accounts import directory
from mailstack.adapters import psql
from mailstack.cli import audit as audit_cli
from mailstack.cli.main import app
from mailstack.errors import UsageError
from mailstack.identity import audit
from mailstack.stack.stackdir import Stack
from tests.unit.fakes import FakeContainers

runner = CliRunner()
ENTRY = b"7,2026-03-14T09:26:53Z,cli:root,host,mailbox.add,alice@example.org,quota 0\n"


@pytest.fixture
def containers(monkeypatch: pytest.MonkeyPatch) -> FakeContainers:
    fake = FakeContainers()
    monkeypatch.setattr(Stack, "load", lambda root: SimpleNamespace(compose=fake))
    return fake


# --- the actor of every psql session ---------------------------------------------------------


class Recorder:
    """The raw psql command line and stdin, as the db container would get them."""

    def __init__(self, answer: bytes = b"") -> None:
        self.answer = answer
        self.argv: list[str] = []
        self.stdin = ""

    def exec(
        self,
        service: str,
        argv: list[str],
        *,
        input: bytes | None = None,  # mirrors Compose.exec
        user: str | None = None,
        timeout: float = 60,
    ) -> bytes:
        self.argv, self.stdin = argv, (input or b"").decode()
        return self.answer


def test_every_session_first_sets_the_actor_from_variables_never_from_sql_text() -> None:
    db = Recorder(b"added,example.org\n")
    with psql.acting_as(psql.Actor("mailbox:o'brien@example.org", "2001:db8::7")):
        directory.add_domain(db, "example.org")
    assert "--set=mailstack_actor=mailbox:o'brien@example.org" in db.argv
    assert "--set=mailstack_source=2001:db8::7" in db.argv
    assert db.stdin.startswith(psql.SESSION_PRELUDE)
    assert ":'mailstack_actor'" in psql.SESSION_PRELUDE
    assert ":'mailstack_source'" in psql.SESSION_PRELUDE
    assert "brien" not in db.stdin and "2001:db8" not in db.stdin


def test_the_session_line_prints_nothing_so_the_callers_csv_is_all_psql_prints() -> None:
    # psql sends the row of set_config() to /dev/null: the line is one statement ending in
    # \g /dev/null, and the caller's SQL comes after it untouched.
    assert psql.SESSION_PRELUDE.count("\n") == 1
    assert psql.SESSION_PRELUDE.endswith(" \\g /dev/null\n")
    db = Recorder(b"alice@example.org,example.org,1024,t,2026-03-14T09:26:53Z\n")
    found = directory.list_mailboxes(db)
    assert found == [
        directory.Mailbox("alice@example.org", "example.org", 1024, True, "2026-03-14T09:26:53Z")
    ]
    assert db.stdin.removeprefix(psql.SESSION_PRELUDE).startswith("SELECT address")


def test_without_an_actor_the_session_says_mailstack_unknown_not_the_cli() -> None:
    db = FakeContainers(answers=[b"added,example.org\n"])
    directory.add_domain(db, "example.org")
    assert db.calls[0].actor() == psql.Actor("mailstack:unknown", "unknown")


def test_the_fake_refuses_a_session_that_does_not_say_who_acts_first() -> None:
    # Every unit test of SQL runs through FakeContainers: it holds each session to the rule.
    argv = psql.psql_argv({"mailstack_actor": "cli:root", "mailstack_source": "host"})
    with pytest.raises(AssertionError, match="must start with its line"):
        FakeContainers().exec("db", argv, input=b"DELETE FROM audit_log;\n")


def test_acting_as_ends_with_its_block() -> None:
    with psql.acting_as(psql.Actor("admin:alice", "192.0.2.1")):
        assert psql.ACTOR.get().name == "admin:alice"
    assert psql.ACTOR.get() == psql.UNKNOWN_ACTOR


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("cli:x'; DROP TABLE audit_log; --", "host"),
        ("cli:root\n\\! rm -rf /", "host"),
        ("cli:root\n", "host"),  # `$` would let a final newline through
        ("cli:root\x1b[2J", "host"),
        ('admin:"quoted"', "host"),
        ("admin:back\\slash", "host"),
        ("root", "host"),  # no kind
        ("Admin:alice", "host"),
        ("admin:", "host"),
        ("admin:" + "a" * 201, "host"),
        ("admin:alice", "192.0.2.1; rm -rf /"),
        ("admin:alice", "host\nsource"),
        ("admin:alice", "host\n"),
        ("admin:alice", "'); DELETE FROM audit_log; --"),
        ("admin:alice", ""),
        ("admin:alice", "h" * 101),
    ],
)
def test_a_hostile_actor_is_refused_before_any_psql_runs(name: str, source: str) -> None:
    with pytest.raises(UsageError, match=r"^actor"):
        psql.Actor(name, source)


def test_a_caller_cannot_pass_the_adapters_own_actor_variables() -> None:
    db = FakeContainers()
    with pytest.raises(ValueError, match="adapter's own"):
        psql.query(db, "SELECT 1;", {"mailstack_actor": "admin:root"})
    assert db.calls == []


def test_the_cli_acts_as_the_host_user_from_host_and_only_for_its_command(
    containers: FakeContainers,
) -> None:
    result = runner.invoke(app, ["audit", "list"])
    assert result.exit_code == 0, result.output
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert containers.calls[0].actor() == psql.Actor(f"cli:{user}", "host")
    assert psql.ACTOR.get() == psql.UNKNOWN_ACTOR  # nothing leaks past the command


def test_a_host_user_name_the_actor_rule_refuses_becomes_its_uid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: SimpleNamespace(pw_name="evil name\n"))
    actor = audit_cli.host_actor()
    assert actor.name.startswith("cli:uid") and actor.name[7:].isdigit()
    assert actor.source == "host"


# --- audit list ------------------------------------------------------------------------------


def test_entries_are_parsed_and_the_filters_travel_as_variables() -> None:
    db = FakeContainers(answers=[ENTRY])
    entries = audit.list_entries(db, datetime.timedelta(days=7), "cli:root", 5)
    assert entries == [
        audit.AuditEntry(
            7, "2026-03-14T09:26:53Z", "cli:root", "host", "mailbox.add",
            "alice@example.org", "quota 0",
        )
    ]  # fmt: skip
    variables = db.variables()
    assert (variables["since_seconds"], variables["actor"], variables["limit"]) == (
        "604800",
        "cli:root",
        "5",
    )
    assert "cli:root" not in db.calls[0].stdin and "604800" not in db.calls[0].stdin
    assert str(entries[0]) == (
        "2026-03-14T09:26:53Z  cli:root from host  mailbox.add alice@example.org  (quota 0)"
    )


def test_no_filter_means_every_actor_and_all_time() -> None:
    db = FakeContainers()
    assert audit.list_entries(db) == []
    assert db.variables()["since_seconds"] == "" and db.variables()["actor"] == ""
    assert db.variables()["limit"] == str(audit.DEFAULT_LIMIT)


def test_an_entry_made_by_hand_cannot_move_the_terminals_cursor() -> None:
    # A row written in psql by hand may hold anything: the text form shows it escaped.
    row = b'8,2026-03-14T09:26:53Z,db:postgres,database,domain.add,"evil\x1b[2J\nname",x\x07\n'
    entries = audit.list_entries(FakeContainers(answers=[row]))
    assert entries[0].target == "evil\x1b[2J\nname"  # kept as stored (JSON escapes it)
    line = str(entries[0])
    assert "\x1b" not in line and "\n" not in line and "\x07" not in line
    assert "evil\\x1b[2J\\x0aname" in line and "(x\\x07)" in line


def test_audit_list_json_is_the_entries(containers: FakeContainers) -> None:
    containers.answers.append(ENTRY)
    result = runner.invoke(app, ["audit", "list", "--json", "--since", "12h", "--actor", "cli:"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {
            "id": 7, "at": "2026-03-14T09:26:53Z", "actor": "cli:root", "source": "host",
            "action": "mailbox.add", "target": "alice@example.org", "detail": "quota 0",
        }
    ]  # fmt: skip
    assert containers.variables()["since_seconds"] == "43200"
    assert containers.variables()["actor"] == "cli:"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "7 weeks"], "--since: '7 weeks' is not a duration"),
        (["--since", "0d"], "--since: 0:00:00 is not a positive duration"),
        (["--actor", "root"], "--actor: 'root' is not an actor"),
        (["--actor", "cli:x' OR '1'='1"], "--actor: \"cli:x' OR '1'='1\" is not an actor"),
        (["--actor", "cli:\x1b[2J"], "--actor: 'cli:\\x1b[2J' is not an actor"),
        (["--actor", "cli:root\n"], "--actor: 'cli:root\\n' is not an actor"),
        (["--limit", "0"], "--limit: 0 is not between 1 and 100000"),
        (["--limit", "1000001"], "--limit: 1000001 is not between 1 and 100000"),
    ],
)
def test_bad_filters_are_one_line_naming_the_option_before_the_stack_is_touched(
    untouchable: None, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["audit", "list", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
