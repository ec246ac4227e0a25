"""The adapter to PostgreSQL's psql inside the db container: every statement is constant SQL
on stdin, every value a psql variable (`:'name'`), never formatted into the SQL text.

Every session starts by telling the database who acts and from where (`Actor`, from the
context variable ACTOR): the audit triggers of 0003_admin.sql record it with each change.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mailstack import services
from mailstack.errors import UsageError

DB_SERVICE = services.DB.name
DATABASE = "mail"
_VARIABLE = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")
# A `\set` value is quoted on stdin: printable ASCII without a quote, a backslash or a space
# (a password hash's alphabet: $, base64, '=', ',') cannot end the quotes or the line.
_QUOTE_SAFE = re.compile(r"^[!#-&(-\[\]-~]{1,512}\Z")
# kind:who (cli:root, admin:NAME, token:NAME, mailbox:ADDRESS): printable ASCII without a
# space, a double quote or a backslash, so a log line stays one unambiguous word.
_ACTOR_NAME = re.compile(r"^[a-z]{1,16}:[!#-\[\]-~]{1,200}\Z")
# `host`, or a client's address (IPv4, IPv6 with an optional zone or brackets).
_ACTOR_SOURCE = re.compile(r"^[A-Za-z0-9.:%\[\]_-]{1,100}\Z")
ACTOR_VARIABLES = ("mailstack_actor", "mailstack_source")  # psql.query's own
# First on stdin of every session: the settings the audit triggers read. Its one row goes to
# /dev/null, so what the caller's SQL prints (CSV) is all that psql prints.
SESSION_PRELUDE = (
    "SELECT set_config('mailstack.actor', :'mailstack_actor', false), "
    "set_config('mailstack.source', :'mailstack_source', false) \\g /dev/null\n"
)


@dataclass(frozen=True)
class Actor:
    """Who changes the directory (`kind:who`) and from where (`host` or a client address),
    as the audit log records them; checked here so a value can never be more than a word."""

    name: str
    source: str

    def __post_init__(self) -> None:
        if not _ACTOR_NAME.match(self.name):
            raise UsageError(
                f"actor: {self.name[:80]!r} is not kind:who (a lower-case kind, ':', then up "
                "to 200 printable characters without a space, '\"' or a backslash)"
            )
        if not _ACTOR_SOURCE.match(self.source):
            raise UsageError(
                f"actor source: {self.source[:80]!r} is not a host name or address (up to "
                "100 of letters, digits, '.', ':', '%', '[', ']', '_', '-')"
            )

    @classmethod
    def from_client(cls, name: str, client: str | None) -> Actor:
        """A web or API request's actor: from the client's address, or from "unknown" when
        there is none or the log's rule does not take it (the actor's name still counts)."""
        try:
            return cls(name, client or "unknown")
        except UsageError:
            return cls(name, "unknown")


# Nobody said who acts (a script calling the core directly): recorded as such, never as
# the CLI or an administrator.
UNKNOWN_ACTOR = Actor("mailstack:unknown", "unknown")
ACTOR: ContextVar[Actor] = ContextVar("mailstack_actor", default=UNKNOWN_ACTOR)


@contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Every psql session started inside the block acts as `actor` (a request, a job)."""
    token = ACTOR.set(actor)
    try:
        yield
    finally:
        ACTOR.reset(token)


class Executor(Protocol):
    """What psql (and the other container commands of the directory) need from
    mailstack.adapters.compose.Compose."""

    def exec(
        self,
        service: str,
        argv: list[str],
        *,
        input: bytes | None = None,  # mirrors Compose.exec
        user: str | None = None,
        timeout: float = 60,
    ) -> bytes: ...


@runtime_checkable
class SqlRunner(Protocol):
    """An executor with a database connection of its own (the admin service's
    adapters.pgconnection): query() hands it the script it would pipe into psql, and it runs
    it with psql's semantics instead of starting psql."""

    def run_sql(
        self,
        script: str,
        variables: Mapping[str, str],
        *,
        actor: Actor,
        single_transaction: bool,
        timeout: float,
    ) -> list[list[str]]:
        """The script's rows, as parse_rows would give them from psql's output."""
        ...


def psql_argv(
    variables: Mapping[str, str],
    *,
    single_transaction: bool = False,
) -> list[str]:
    """The psql command line of the host's way in (the superuser over the db container's own
    socket, through Compose exec): CSV output without headers, stop at the first error."""
    argv = [
        "psql",
        "--no-psqlrc",
        "--quiet",
        "--csv",
        "--tuples-only",
        "--host=/run/postgresql",
        "--username=postgres",
        f"--dbname={DATABASE}",
        "--set=ON_ERROR_STOP=1",
        "--file=-",
    ]
    if single_transaction:
        argv.append("--single-transaction")
    for name, value in sorted(variables.items()):
        argv.append(f"--set={_variable_name(name)}={_variable_value(name, value)}")
    return argv


def set_secret_variable(name: str, value: str) -> str:
    r"""A `\set` line for stdin; only for values whose shape excludes quotes and backslashes."""
    if not _QUOTE_SAFE.match(value):
        raise UsageError("the password hash has an unexpected form; nothing was changed")
    return f"\\set {_variable_name(name)} '{value}'\n"


def parse_rows(output: bytes) -> list[list[str]]:
    """psql --csv --tuples-only output as rows of strings (NULL is the empty string)."""
    text = output.decode("utf-8")
    return [row for row in csv.reader(io.StringIO(text)) if row]


def _variable_name(name: str) -> str:
    if not _VARIABLE.match(name):
        raise ValueError(f"not a psql variable name: {name!r}")
    return name


def _variable_value(name: str, value: str) -> str:
    # Values pass through argv: refuse anything that could not be a single clean argument.
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise UsageError(f"{name}: {value[:80]!r} contains a control character")
    return value


def query(
    compose: Executor,
    sql: str,
    variables: Mapping[str, str] | None = None,
    *,
    prelude: str = "",
    single_transaction: bool = False,
    timeout: float = 60,
) -> list[list[str]]:
    """Run constant SQL as the current ACTOR; its output as rows (parse_rows). An executor
    that is a SqlRunner runs the script itself; any other gets psql through exec."""
    given = dict(variables or {})
    if any(name in given for name in ACTOR_VARIABLES):
        raise ValueError(f"the psql variables {ACTOR_VARIABLES} are the adapter's own")
    for name, value in given.items():  # the same refusals whichever way the SQL goes
        _variable_value(_variable_name(name), value)
    actor = ACTOR.get()
    if isinstance(compose, SqlRunner):
        return compose.run_sql(
            prelude + sql,
            given,
            actor=actor,
            single_transaction=single_transaction,
            timeout=timeout,
        )
    given.update(mailstack_actor=actor.name, mailstack_source=actor.source)
    argv = psql_argv(given, single_transaction=single_transaction)
    stdin = (SESSION_PRELUDE + prelude + sql).encode("utf-8")
    output = compose.exec(DB_SERVICE, argv, input=stdin, user="postgres", timeout=timeout)
    return parse_rows(output)
