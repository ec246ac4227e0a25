"""The admin service's kept-open database connections (adapters.pgconnection) against the
real PostgreSQL of the running stack: the same SQL gives the same rows as the host's psql,
hostile values stay values, the audit actor of one request never reaches the next on the
same connection, and the API answers again right after the database restarts."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from mailstack.accounts import passwords
from mailstack.adapters import psql
from mailstack.adapters.compose import Compose
from mailstack.errors import ExternalCommandFailed
from mailstack.stack.stackdir import Stack
from tests.e2e.conftest import DOMAIN, RunningStack
from tests.e2e.test_admin_api import api, new_token

pytestmark = pytest.mark.e2e

# Runs in the admin container as its user: each call through psql.query on one PgConnection
# (one connection: pool_size=1), as the call's actor. Answers one JSON list.
IN_ADMIN = """
import json, sys
from mailstack.accounts import directory
from mailstack.adapters import psql
from mailstack.adapters.pgconnection import PgConnection
from mailstack.errors import MailstackError
executor = PgConnection(pool_size=1)
answers = []
for call in json.load(sys.stdin):
    with psql.acting_as(psql.Actor(*call["actor"])):
        try:
            if "add_mailbox" in call:
                directory.add_mailbox(executor, call["add_mailbox"], call["hash"], 0)
                answers.append({"rows": []})
            else:
                rows = psql.query(executor, call["sql"], call.get("variables"),
                    prelude=call.get("prelude", ""), single_transaction=call.get("single", False))
                answers.append({"rows": rows})
        except MailstackError as error:
            answers.append({"error": type(error).__name__, "message": error.message})
print(json.dumps(answers))
"""

HOSTILE = {
    "injection": "'; DROP TABLE mailboxes; --",
    "backslash": "back\\slash \\' and \\\\",
    "unicode": "Grüße, 你好 📬",
    "psql": ":'injection' :\"x\" \\gset \\! id",
    "quotes": 'it\'s "quoted", with a comma',
}

# Each as both sides run it: (sql, variables, prelude, single_transaction).
CASES: list[tuple[str, dict[str, str], str, bool]] = [
    (
        "SELECT true, false, NULL::text, '', 'a,b', 'quote\"d', E'line\\nbreak', "
        "'Grüße 📬', ' padded ', '\\.';",
        {}, "", False,
    ),
    (
        "SELECT TIMESTAMPTZ '2026-12-06 12:34:56.789+01', DATE '2026-12-06', "
        "INTERVAL '1 day 02:03:04', ARRAY['a', 'b c', 'd,e', NULL], ARRAY[[1, 2], [3, 4]], "
        "'{\"k\": [1, \"v\"]}'::jsonb, 12.50::numeric, 1e100::float8, '\\x00ff'::bytea, "
        "'192.0.2.1/24'::inet, ROW(1, 'x y'), 'Infinity'::float8;",
        {}, "", False,
    ),
    (
        "SELECT :'injection', :'backslash', :'unicode', :'psql', :'quotes';",
        HOSTILE, "", False,
    ),
    ("SELECT ''; SELECT NULL; SELECT 'x'; SELECT '', ''; SELECT NULL, 1;", {}, "", False),
    (
        "SELECT 1 AS one, 'two' AS two, NULL AS gone\n\\gset\nSELECT :'one', :'two';\n"
        "SELECT 'after';",
        {}, "", True,
    ),
    ("SELECT :'secret', length(:'secret');", {}, psql.set_secret_variable("secret", "s3cr$t=,"), False),
    (
        "SELECT address, domain, quota_bytes, active, created FROM mailboxes "
        "WHERE domain = :'domain' ORDER BY address;",
        {"domain": DOMAIN}, "", False,
    ),
]  # fmt: skip


@pytest.fixture(scope="module")
def compose(stack: RunningStack) -> Compose:
    return Stack.load(stack.root).compose


def in_admin(stack: RunningStack, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = stack.compose(
        "exec", "-T", "--user", "977", "admin", "python3", "-c", IN_ADMIN,
        stdin=json.dumps(calls).encode(),
    )  # fmt: skip
    answers: list[dict[str, Any]] = json.loads(result.stdout)
    return answers


def on_host(
    compose: Compose, sql: str, variables: dict[str, str], prelude: str, single: bool
) -> Any:
    try:
        return {
            "rows": psql.query(compose, sql, variables, prelude=prelude, single_transaction=single)
        }
    except ExternalCommandFailed as error:
        return {"error": type(error).__name__, "message": error.message}


def test_the_connection_gives_the_rows_the_hosts_psql_gives(
    stack: RunningStack, compose: Compose
) -> None:
    stack.new_mailbox()  # something in the mailbox list below
    actor = ["cli:e2e", "host"]
    calls = [
        {"actor": actor, "sql": sql, "variables": variables, "prelude": prelude, "single": single}
        for sql, variables, prelude, single in CASES
    ]
    from_admin = in_admin(stack, calls)
    for (sql, variables, prelude, single), answer in zip(CASES, from_admin, strict=True):
        assert answer == on_host(compose, sql, variables, prelude, single), sql
    # The hostile values came back as the very values, from either side.
    assert from_admin[2]["rows"] == [list(HOSTILE.values())]
    assert from_admin[4]["rows"] == [["1", "two"], ["after"]]
    assert len(from_admin[6]["rows"]) >= 1


def test_an_error_stops_the_script_rolls_back_and_reads_as_from_psql(
    stack: RunningStack, compose: Compose
) -> None:
    sql = "SELECT 'before';\nSELECT 1/0;\nSELECT 'never';"
    answer, *_ = in_admin(stack, [{"actor": ["cli:e2e", "host"], "sql": sql, "single": True}])
    assert answer["error"] == "ExternalCommandFailed"
    assert "psql:<stdin>:2: ERROR:  division by zero" in answer["message"]
    assert "ERROR:  division by zero" in on_host(compose, sql, {}, "", True)["message"]
    # A right the role lacks (it reads the audit log since 0009, the web page's, but never
    # changes it: the triggers write as the schema's owner) is the database's refusal, in
    # the same words. The check comes before any row is looked at.
    sql = "DELETE FROM audit_log WHERE false;"
    denied = in_admin(stack, [{"actor": ["cli:e2e", "host"], "sql": sql}])
    assert "ERROR:  permission denied for table audit_log" in denied[0]["message"]


def test_the_audit_actor_does_not_leak_between_requests_on_one_connection(
    stack: RunningStack,
) -> None:
    first, second = (f"conn-{uuid.uuid4().hex[:8]}@{DOMAIN}" for _ in range(2))
    alice = [f"token:alice-{uuid.uuid4().hex[:6]}", "192.0.2.10"]
    bob = [f"token:bob-{uuid.uuid4().hex[:6]}", "192.0.2.20"]
    whoami = (
        "SELECT pg_backend_pid(), current_setting('mailstack.actor', true), "
        "current_setting('mailstack.source', true);"
    )
    hashed = passwords.hash_password("Connection-test 42 mailbox")
    answers = in_admin(
        stack,
        [
            {"actor": alice, "sql": whoami},
            {"actor": alice, "add_mailbox": first, "hash": hashed},
            {"actor": bob, "add_mailbox": second, "hash": hashed},
            {"actor": bob, "sql": whoami},
        ],
    )
    assert all("error" not in answer for answer in answers), answers
    (pid_a, actor_a, source_a), (pid_b, actor_b, source_b) = (
        answers[0]["rows"][0],
        answers[3]["rows"][0],
    )
    assert pid_a == pid_b  # one connection served both
    assert [actor_a, source_a] == alice and [actor_b, source_b] == bob
    # The database's own trigger recorded each change under its own actor.
    for actor, address in ((alice, first), (bob, second)):
        logged = json.loads(stack.cli("audit", "list", "--actor", actor[0], "--json").stdout)
        assert [(entry["target"], entry["source"]) for entry in logged] == [(address, actor[1])]


def test_requests_by_two_tokens_are_each_logged_under_their_own(stack: RunningStack) -> None:
    tokens = [new_token(stack, "accounts") for _ in range(2)]
    made: list[tuple[str, str]] = []
    for round_number in range(2):  # sequential: the service's one idle connection serves all
        for name, token in tokens:
            address = f"conn-{round_number}-{uuid.uuid4().hex[:8]}@{DOMAIN}"
            body = {"address": address, "password": "Connection-test 42 mailbox"}
            assert api(stack, "POST", "/api/v1/mailboxes", token, body)[0] == 201
            made.append((name, address))
    for name, _token in tokens:
        logged = json.loads(stack.cli("audit", "list", "--actor", f"token:{name}", "--json").stdout)
        assert [entry["target"] for entry in logged] == [
            address for owner, address in made if owner == name
        ]


def test_the_api_answers_right_after_the_database_restarts(stack: RunningStack) -> None:
    _, token = new_token(stack, "read")
    assert api(stack, "GET", "/api/v1/mailboxes", token)[0] == 200  # a connection is open
    stack.compose("restart", "db")
    deadline = time.monotonic() + 120
    while not _database_ready(stack):
        assert time.monotonic() < deadline, "db did not come back"
        time.sleep(0.5)
    started = time.monotonic()
    status, answer = api(stack, "GET", "/api/v1/mailboxes", token)
    assert status == 200, answer  # the first request, on a new connection
    assert time.monotonic() - started < 5


def _database_ready(stack: RunningStack) -> bool:
    # Over TCP, as the admin service comes: db's entrypoint first starts PostgreSQL on its
    # socket alone (roles, migrations), and only then for the network.
    ready = stack.compose(
        "exec", "-T", "--user", "postgres", "db",
        "pg_isready", "--host=127.0.0.1", "--dbname=mail", "--timeout=2",
        check=False,
    )  # fmt: skip
    return ready.returncode == 0
