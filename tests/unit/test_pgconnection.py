"""adapters.pgconnection: the admin service's kept-open database connections, on sessions
that record what they are sent (the real PostgreSQL behind them is tested end to end in
tests/e2e/test_admin_connection.py): transactions and the audit actor per transaction,
psql's errors, psql's rows, \\gset, reconnecting after a restart, the pool's limit, and
that every script of the core the admin service can run is one the connection runs."""

from __future__ import annotations

import contextlib
import datetime
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from mailstack.accounts import access, alias_domains, aliases, directory
from mailstack.adapters import psql, psqlscript
from mailstack.adapters.pgconnection import (
    ConnectionLost,
    PgConnection,
    Row,
    Rows,
    StatementFailed,
)
from mailstack.errors import ExternalCommandFailed, MailstackError
from mailstack.identity import admins, audit, mfa, principal, sessions, tokens
from mailstack.runtime import jobqueue

ALICE = psql.Actor("token:alice", "192.0.2.1")
BOB = psql.Actor("token:bob", "192.0.2.2")
NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
HASH = "$argon2id$v=19$m=32768,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"

Answer = Rows | StatementFailed | ConnectionLost | None


@dataclass
class FakeSession:
    """A connection: records every SQL text; answers by the first marker found in it."""

    answers: dict[str, Answer] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)
    dead: bool = False
    closed: bool = False
    in_transaction: bool = False

    def execute(self, sql: str) -> Rows | None:
        if self.dead:
            raise ConnectionLost("server closed the connection unexpectedly")
        self.sent.append(sql)
        if sql.startswith("BEGIN"):
            self.in_transaction = True
        elif sql in ("COMMIT", "ROLLBACK"):
            self.in_transaction = False
        for marker, answer in self.answers.items():
            if marker in sql:
                if isinstance(answer, ConnectionLost):
                    self.dead = True
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return None

    def usable(self) -> bool:
        return not (self.dead or self.closed or self.in_transaction)

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeDatabase:
    """Makes sessions (all answering the same), and counts them."""

    answers: dict[str, Answer] = field(default_factory=dict)
    sessions: list[FakeSession] = field(default_factory=list)
    down: bool = False

    def connect(self) -> FakeSession:
        if self.down:
            raise ConnectionLost('connection to server at "db" failed: Connection refused')
        session = FakeSession(dict(self.answers))
        self.sessions.append(session)
        return session

    def sent(self) -> list[str]:
        return [sql for session in self.sessions for sql in session.sent]


def rows(*values: Row, columns: tuple[str, ...] = ()) -> Rows:
    return Rows(
        columns or tuple(f"c{n}" for n in range(len(values[0]) if values else 0)), list(values)
    )


def run(
    executor: PgConnection,
    sql: str,
    variables: dict[str, str] | None = None,
    *,
    actor: psql.Actor = ALICE,
    prelude: str = "",
    single_transaction: bool = False,
) -> list[list[str]]:
    with psql.acting_as(actor):
        return psql.query(
            executor, sql, variables, prelude=prelude, single_transaction=single_transaction
        )


def test_each_transaction_sets_its_own_actor_locally() -> None:
    database = FakeDatabase()
    executor = PgConnection(database.connect)
    run(executor, "INSERT INTO t VALUES (:'v');", {"v": "1"}, actor=ALICE)
    run(executor, "INSERT INTO t VALUES (:'v');", {"v": "2"}, actor=BOB)
    assert len(database.sessions) == 1  # one connection, kept and reused
    begin_alice, insert_1, commit_1, begin_bob, insert_2, commit_2 = database.sent()
    assert "set_config('mailstack.actor', 'token:alice', true)" in begin_alice
    assert "set_config('mailstack.source', '192.0.2.1', true)" in begin_alice
    assert "set_config('mailstack.actor', 'token:bob', true)" in begin_bob
    assert insert_1 == "INSERT INTO t VALUES ('1');" and insert_2 == "INSERT INTO t VALUES ('2');"
    assert commit_1 == commit_2 == "COMMIT"
    # Never a session-wide setting that the next request would inherit.
    assert not any("false)" in sql or sql.startswith("SET ") for sql in database.sent())


def test_without_single_transaction_each_statement_is_its_own_transaction() -> None:
    database = FakeDatabase()
    run(PgConnection(database.connect), "SELECT 1; SELECT 2;")
    assert [sql.split(";")[0] for sql in database.sent()] == [
        "BEGIN", "SELECT 1", "COMMIT", "BEGIN", " SELECT 2", "COMMIT",
    ]  # fmt: skip


def test_with_single_transaction_the_script_is_one_transaction() -> None:
    database = FakeDatabase()
    run(PgConnection(database.connect), "SELECT 1; SELECT 2;", single_transaction=True)
    assert [sql.split(";")[0] for sql in database.sent()] == [
        "BEGIN", "SELECT 1", " SELECT 2", "COMMIT",
    ]  # fmt: skip


def test_an_error_rolls_back_stops_the_script_and_reads_like_psql() -> None:
    duplicate = StatementFailed(
        "ERROR", 'duplicate key value violates unique constraint "mailboxes_pkey"'
    )
    database = FakeDatabase({"INSERT": duplicate})
    executor = PgConnection(database.connect)
    with pytest.raises(ExternalCommandFailed) as failed:
        run(
            executor,
            "SELECT 1;\nINSERT INTO mailboxes VALUES (:'password_hash');\nSELECT 3;",
            prelude=psql.set_secret_variable("password_hash", HASH),
            single_transaction=True,
        )
    assert database.sent()[-1] == "ROLLBACK"
    assert not any(sql.startswith("SELECT 3") for sql in database.sent())  # ON_ERROR_STOP
    assert (
        'psql:<stdin>:3: ERROR:  duplicate key value violates unique constraint "mailboxes_pkey"'
        in failed.value.output
    )
    assert HASH not in failed.value.message  # the secret's statement is never quoted
    # The connection is still good: the next script uses it.
    run(executor, "SELECT 1;")
    assert len(database.sessions) == 1


def test_rows_are_psqls_csv_rows() -> None:
    answer = rows(["t", None, "{a,b}", "2026-12-06 12:00:00+00"], ["f", "", "x,y", 'q"'])
    database = FakeDatabase({"FROM many": answer, "FROM empty": rows([None], [""], ["kept"])})
    executor = PgConnection(database.connect)
    assert run(executor, "SELECT * FROM many;") == [
        ["t", "", "{a,b}", "2026-12-06 12:00:00+00"],
        ["f", "", "x,y", 'q"'],
    ]
    # psql prints an empty one-column value as an empty line, which parse_rows skips.
    assert run(executor, "SELECT * FROM empty;") == [["kept"]]
    assert psql.parse_rows(b'\n""\nkept\n') == [[""], ["kept"]]  # (a quoted "" is not empty)


def test_gset_sets_variables_for_the_statements_after_it() -> None:
    state = rows(["t", "0"], columns=("domain_found", "mailbox_count"))
    database = FakeDatabase({"AS domain_found": state})
    script = (
        "SELECT true AS domain_found, 0 AS mailbox_count\n\\gset\n"
        "SELECT :'domain_found', :'mailbox_count';"
    )
    run(PgConnection(database.connect), script, single_transaction=True)
    assert "\nSELECT 't', '0';" in database.sent()


def test_gset_without_exactly_one_row_fails_like_psql() -> None:
    database = FakeDatabase({"AS found": rows(columns=("found",))})
    with pytest.raises(ExternalCommandFailed, match=r"no rows returned for \\gset"):
        run(PgConnection(database.connect), "SELECT 1 AS found WHERE false\n\\gset\nSELECT 2;")
    assert database.sent()[-1] == "ROLLBACK"


def test_a_refused_script_never_reaches_the_database() -> None:
    database = FakeDatabase()
    with pytest.raises(psqlscript.UnsupportedScript):
        run(PgConnection(database.connect), "SELECT 1;\n\\copy mailboxes TO '/tmp/x'\n")
    assert database.sessions == []


def test_a_control_character_is_refused_as_for_psql() -> None:
    database = FakeDatabase()
    with pytest.raises(MailstackError, match="control character"):
        run(PgConnection(database.connect), "SELECT :'v';", {"v": "a\nb"})
    assert database.sessions == []


def test_after_the_database_restarted_the_next_script_runs_on_a_new_connection() -> None:
    database = FakeDatabase()
    executor = PgConnection(database.connect)
    run(executor, "SELECT 1;")
    database.sessions[0].dead = True  # the server restarted meanwhile
    assert run(executor, "SELECT 1;") == []
    assert len(database.sessions) == 2
    assert database.sessions[0].closed


def test_a_connection_lost_after_the_script_began_is_not_run_again() -> None:
    database = FakeDatabase({"INSERT": ConnectionLost("server closed the connection")})
    with pytest.raises(ExternalCommandFailed, match="server closed the connection"):
        run(PgConnection(database.connect), "INSERT INTO t VALUES (1);")
    assert len(database.sessions) == 1  # never sent twice: it may have been done


def test_a_database_that_is_down_fails_in_one_line() -> None:
    database = FakeDatabase(down=True)
    with pytest.raises(ExternalCommandFailed, match="Connection refused"):
        run(PgConnection(database.connect), "SELECT 1;")


def test_parallel_scripts_use_at_most_the_pool_size_connections() -> None:
    entered = threading.Semaphore(0)
    busy = {"now": 0, "most": 0}
    lock = threading.Lock()

    class SlowSession(FakeSession):
        def execute(self, sql: str) -> Rows | None:
            if sql.startswith("SELECT"):
                with lock:
                    busy["now"] += 1
                    busy["most"] = max(busy["most"], busy["now"])
                entered.release()
                time.sleep(0.02)
                with lock:
                    busy["now"] -= 1
            return super().execute(sql)

    sessions: list[SlowSession] = []

    def connect() -> SlowSession:
        sessions.append(SlowSession())
        return sessions[-1]

    executor = PgConnection(connect, pool_size=2)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: run(executor, "SELECT 1;"), range(16)))
    assert busy["most"] == 2
    assert len(sessions) == 2


# --- every script of the core that the admin service can run --------------------------------


@dataclass
class ParsingRunner:
    """A SqlRunner that parses and renders each script as PgConnection does, answering from
    `answers` by marker (else no rows); collects what it could not run."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    scripts: int = 0

    def exec(self, service: str, argv: list[str], **_: object) -> bytes:
        return b""

    def run_sql(
        self,
        script: str,
        variables: dict[str, str],
        *,
        actor: psql.Actor,
        single_transaction: bool,
        timeout: float,
    ) -> list[list[str]]:
        self.scripts += 1
        known = dict(variables)
        try:
            for step in psqlscript.parse(script):
                if isinstance(step, psqlscript.SetVariable):
                    known[step.name] = step.value
                elif step.gset is not None:
                    # The columns a \gset sets are the statement's AS names.
                    text = psqlscript.render(step, known)
                    known.update(dict.fromkeys(_as_names(text), "0"))
                else:
                    psqlscript.render(step, known)
        except psqlscript.UnsupportedScript as refused:
            self.refused.append(f"{refused.message}: {script[:80]!r}")
        for marker, answer in self.answers.items():
            if marker in script:
                return answer
        return []


def _as_names(sql: str) -> list[str]:
    return re.findall(r"\bAS ([a-z_]+)", sql)


def _calls() -> list[Callable[[ParsingRunner], object]]:
    owner = mfa.Owner.admin("alice")
    key = bytes(32)
    session = sessions.Session(sessions.new_id(), "alice", None, "password", False)
    calls: list[Callable[[ParsingRunner], object]] = [
        lambda e: tokens.authenticate(e, "msk_" + "A" * 43, NOW),
        lambda e: tokens.create_token(e, "ci", ["accounts"], "90d"),
        lambda e: tokens.list_tokens(e, NOW),
        lambda e: tokens.revoke_token(e, "ci"),
        lambda e: principal.for_admin(e, "alice"),
        lambda e: principal.for_token(e, "ci", "alice"),
        admins.list_admins,
        lambda e: admins.remove_admin(e, "alice"),
        lambda e: admins.grant_domain(e, "alice", "example.test"),
        lambda e: admins.revoke_domain(e, "alice", "example.test"),
        lambda e: admins.reset_mfa(e, "alice"),
        audit.list_entries,
        lambda e: directory.add_domain(e, "example.test"),
        directory.list_domains,
        lambda e: directory.remove_domain(e, "example.test", force=True, kick=False),
        lambda e: directory.add_mailbox(e, "bob@example.test", HASH, 1024),
        lambda e: directory.list_mailboxes(e, "example.test"),
        lambda e: directory.set_mailbox_password(e, "bob@example.test", HASH),
        lambda e: directory.set_mailbox_quota(e, "bob@example.test", 2048),
        lambda e: directory.remove_mailbox(e, "bob@example.test"),
        lambda e: aliases.add_alias(e, "info@example.test", ["bob@example.test"]),
        lambda e: aliases.list_aliases(e, "example.test"),
        lambda e: aliases.remove_alias(e, "info@example.test"),
        lambda e: alias_domains.add_alias_domain(e, "example.org", "example.test"),
        lambda e: alias_domains.remove_alias_domain(e, "example.org"),
        alias_domains.list_alias_domains,
        lambda e: access.add_app_password(e, "bob@example.test", "phone"),
        lambda e: access.list_app_passwords(e, "bob@example.test"),
        lambda e: access.revoke_app_password(e, "bob@example.test", "phone"),
        lambda e: access.add_sender(e, "info@example.test", "bob@example.test"),
        lambda e: access.remove_sender(e, "info@example.test", "bob@example.test"),
        lambda e: access.list_senders(e, "example.test"),
        lambda e: mfa.status(e, owner),
        lambda e: mfa.enrol(e, owner, key, issuer="mail.example.test"),
        lambda e: mfa.confirm(e, owner, key, "123456", 0.0),
        lambda e: mfa.check(e, owner, key, "123456", 0.0),
        lambda e: mfa.disable(e, owner),
        lambda e: jobqueue.queue(e, jobqueue.PUBLISH_KEY, "example.test"),
        jobqueue.key_states,
        jobqueue.claim,
        lambda e: jobqueue.finish(e, [1, 2], "done", "published"),
        jobqueue.retry_failed,
        jobqueue.list_jobs,
        lambda e: sessions.create(e, "alice", "password", "192.0.2.1"),
        lambda e: sessions.lookup(e, session.id),
        lambda e: sessions.advance(e, session, "full"),
        lambda e: sessions.reauthenticated(e, session),
        lambda e: sessions.end(e, session.id),
    ]
    return calls


def test_every_script_of_the_core_runs_on_the_connection() -> None:
    runner = ParsingRunner(
        answers={
            "'state'": [["state", "t", "1", "0"]],
            "FROM api_tokens WHERE token_hash": [["ci", "accounts", "", "active"]],
        }
    )
    for call in _calls():
        with contextlib.suppress(MailstackError, ValueError, IndexError, KeyError):
            call(runner)
    assert runner.refused == []
    assert runner.scripts >= 45
