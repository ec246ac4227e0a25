"""The adapter to PostgreSQL's psql inside the db container: every statement is constant SQL
on stdin, every value a psql variable (`:'name'`), never formatted into the SQL text."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from mailstack import services
from mailstack.errors import UsageError

DB_SERVICE = services.DB.name
DATABASE = "mail"
_VARIABLE = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")
# A `\set` value is quoted on stdin: printable ASCII without a quote, a backslash or a space
# (a password hash's alphabet: $, base64, '=', ',') cannot end the quotes or the line.
_QUOTE_SAFE = re.compile(r"^[!#-&(-\[\]-~]{1,512}\Z")


@dataclass(frozen=True)
class Connection:
    """Where psql connects and as whom."""

    host: str
    user: str


# The host's way in: the superuser over the db container's own socket (Compose exec).
SUPERUSER_SOCKET = Connection("/run/postgresql", "postgres")


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


def psql_argv(
    variables: Mapping[str, str],
    *,
    single_transaction: bool = False,
    connection: Connection = SUPERUSER_SOCKET,
) -> list[str]:
    """The psql command line: CSV output without headers, stop at the first error."""
    argv = [
        "psql",
        "--no-psqlrc",
        "--quiet",
        "--csv",
        "--tuples-only",
        f"--host={connection.host}",
        f"--username={connection.user}",
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
    # An executor that runs psql elsewhere (the admin service's) says how it connects.
    connection = getattr(compose, "psql_connection", SUPERUSER_SOCKET)
    argv = psql_argv(variables or {}, single_transaction=single_transaction, connection=connection)
    stdin = (prelude + sql).encode("utf-8")
    output = compose.exec(DB_SERVICE, argv, input=stdin, user="postgres", timeout=timeout)
    return parse_rows(output)
