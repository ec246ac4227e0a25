"""The admin service's way to PostgreSQL: a few connections kept open (Debian's
python3-psycopg 3.1), as the role mailstack_admin, instead of one psql process per query
(about 26 ms each; docs/benchmarks.md).

`PgConnection` is the executor the admin service hands to mailstack's core. psql.query sees
its `run_sql` (psql.SqlRunner) and gives it the script it would have piped into psql; it runs
here with psql's semantics (adapters.psqlscript: the same statements, the same quoting of
variables) and returns the rows as `psql --csv --tuples-only` would have printed them:
every value is the server's text form (the simple query protocol, nothing converted on the
way), NULL is the empty string, and a one-column row whose value is empty is dropped
(psql prints it as an empty line, which psql.parse_rows skips).

Transactions: with single_transaction the whole script is one transaction, else each
statement is its own (psql's autocommit). Each begins by setting the audit actor and source
with set_config(..., true), which ends with the transaction, so a connection that serves
one request next serves another without carrying its actor over (0003_admin.sql). An error
rolls back the transaction it happened in and stops the script (ON_ERROR_STOP), raising
ExternalCommandFailed with psql's error line ("psql:<stdin>:LINE: ERROR:  message").

Connections: up to POOL_SIZE at once (uvicorn runs sync routes in threads), opened when
needed and kept. One found dead when its transaction begins (the database restarted) is
replaced and the script run on a fresh one: nothing of it had reached the database.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from mailstack.adapters import psql, psqlscript
from mailstack.errors import ExternalCommandFailed, MailstackError

ADMIN_ROLE = "mailstack_admin"
POOL_SIZE = 4
APPLICATION = "mailstack-admin"
WHAT = "SQL on the admin service's database connection"

Row = list[str | None]


@dataclass(frozen=True)
class Rows:
    """What a statement that returns rows returned: its column names and its rows."""

    columns: tuple[str, ...]
    rows: list[Row]


class ConnectionLost(Exception):
    """The connection is gone (or could not be made); the text says why."""


@dataclass
class StatementFailed(Exception):
    """The server refused a statement; the connection is still usable."""

    severity: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        return self.message


class DatabaseSession(Protocol):
    """One open connection in autocommit mode, as this module needs it (psycopg's below;
    unit tests use their own)."""

    def execute(self, sql: str) -> Rows | None:
        """Run SQL (no parameters): the rows of a statement that returns rows, in the server's
        text form (None for NULL), else None. Raises StatementFailed or ConnectionLost."""
        ...

    def usable(self) -> bool:
        """Open, and not inside a transaction: fit to serve the next script."""
        ...

    def close(self) -> None: ...


def connect_admin_role() -> DatabaseSession:
    """A connection to db as mailstack_admin: libpq reads the password from PGPASSFILE and
    the connect timeout from PGCONNECT_TIMEOUT (both set by the admin image)."""
    import psycopg  # noqa: PLC0415  # only the admin image has it (python3-psycopg)

    try:
        connection = psycopg.connect(
            # A cluster names db by the admin service's link (docs/cluster.md).
            host=os.environ.get("MAILSTACK_DB_HOST", psql.DB_SERVICE),
            dbname=psql.DATABASE,
            user=ADMIN_ROLE,
            application_name=APPLICATION,
            client_encoding="UTF8",
            autocommit=True,
        )
    except psycopg.Error as error:
        raise ConnectionLost(str(error).strip()) from None
    return _PsycopgSession(connection)


class _PsycopgSession:
    """DatabaseSession on a psycopg 3 connection. Values are read raw from libpq's result, so
    psycopg converts nothing: what arrives is what psql would have printed."""

    def __init__(self, connection: object) -> None:
        self._connection = connection

    def execute(self, sql: str) -> Rows | None:
        import psycopg  # noqa: PLC0415  # see connect_admin_role
        from psycopg import pq  # noqa: PLC0415

        connection = self._connection
        try:
            with connection.cursor() as cursor:  # type: ignore[attr-defined]
                # No parameters, never prepared: psycopg sends it as a simple query (the
                # protocol psql uses: several statements allowed, results as text).
                cursor.execute(sql, prepare=False)
                result = cursor.pgresult
        except psycopg.Error as error:
            if not self.usable_connection():
                raise ConnectionLost(str(error).strip()) from None
            diagnostic = error.diag
            raise StatementFailed(
                diagnostic.severity or "ERROR",
                diagnostic.message_primary or str(error).strip(),
                diagnostic.message_hint,
            ) from None
        if result is None or result.status != pq.ExecStatus.TUPLES_OK:
            return None
        columns = range(result.nfields)
        return Rows(
            tuple(_text(result.fname(column)) or "" for column in columns),
            [
                [_text(result.get_value(row, column)) for column in columns]
                for row in range(result.ntuples)
            ],
        )

    def usable_connection(self) -> bool:
        from psycopg import pq  # noqa: PLC0415  # see connect_admin_role

        connection = self._connection
        return bool(
            not connection.closed  # type: ignore[attr-defined]
            and connection.pgconn.status == pq.ConnStatus.OK  # type: ignore[attr-defined]
        )

    def usable(self) -> bool:
        from psycopg import pq  # noqa: PLC0415  # see connect_admin_role

        return self.usable_connection() and bool(
            self._connection.pgconn.transaction_status  # type: ignore[attr-defined]
            == pq.TransactionStatus.IDLE
        )

    def close(self) -> None:
        self._connection.close()  # type: ignore[attr-defined]


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8")


class PgConnection:
    """The admin service's Executor: psql.query runs its scripts here (run_sql); anything
    else the core would run in a container (doveadm for mailbox usage) is refused."""

    def __init__(
        self,
        connect: Callable[[], DatabaseSession] = connect_admin_role,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self._connect = connect
        self._idle: list[DatabaseSession] = []
        self._idle_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(pool_size)

    def exec(
        self,
        service: str,
        argv: list[str],
        *,
        input: bytes | None = None,  # mirrors Compose.exec
        user: str | None = None,
        timeout: float = 60,
    ) -> bytes:
        raise MailstackError(
            f"the admin service cannot run {argv[0] if argv else 'nothing'} in {service}"
        )

    def run_sql(
        self,
        script: str,
        variables: Mapping[str, str],
        *,
        actor: psql.Actor,
        single_transaction: bool,
        timeout: float,
    ) -> list[list[str]]:
        """Run a psql script as psql would (see the module's docstring); its rows."""
        steps = psqlscript.parse(script)  # a refused script never reaches the database
        known = dict(variables)
        rows: list[Row] = []
        line = 0
        with self._session(timeout) as take:
            transaction = _Transaction(take, actor, timeout)
            try:
                for step in steps:
                    if isinstance(step, psqlscript.SetVariable):
                        known[step.name] = step.value
                        continue
                    line = step.line
                    transaction.begin()
                    answer = transaction.session().execute(psqlscript.render(step, known))
                    if step.gset is not None:
                        _gset(known, step.gset, answer)
                    elif answer:
                        rows += answer.rows
                    if not single_transaction:
                        transaction.commit()
                transaction.commit()
            except StatementFailed as failure:
                transaction.rollback()
                raise _failed(failure, line) from None
            except ConnectionLost as lost:
                raise ExternalCommandFailed(
                    WHAT, f"the connection to the database: {lost}"
                ) from None
        return [_csv_row(row) for row in rows if _printed(row)]

    @contextmanager
    def _session(self, timeout: float) -> Iterator[Callable[[bool], DatabaseSession]]:
        """A pool slot; inside it, take(fresh) gives an idle session (or a new one when fresh
        or none is idle). The session goes back to the pool only when usable."""
        if not self._slots.acquire(timeout=timeout):
            raise ExternalCommandFailed(WHAT, f"no database connection free within {timeout:.0f}s")
        current: list[DatabaseSession] = []

        def take(fresh: bool) -> DatabaseSession:
            for stale in current:
                stale.close()
            current.clear()
            if fresh:
                self._discard_idle()  # the others opened before the same restart
            session = None if fresh else self._pop_idle()
            current.append(session or self._connect())
            return current[0]

        try:
            yield take
        finally:
            for session in current:
                if session.usable():
                    with self._idle_lock:
                        self._idle.append(session)
                else:
                    session.close()
            self._slots.release()

    def _pop_idle(self) -> DatabaseSession | None:
        with self._idle_lock:
            return self._idle.pop() if self._idle else None

    def _discard_idle(self) -> None:
        with self._idle_lock:
            stale, self._idle = self._idle, []
        for session in stale:
            session.close()


class _Transaction:
    """The open transaction of one script: begun on demand, on a session taken on demand,
    with the actor."""

    def __init__(
        self, take: Callable[[bool], DatabaseSession], actor: psql.Actor, timeout: float
    ) -> None:
        self._take = take
        self._begin = begin_sql(actor, timeout)
        self._current: DatabaseSession | None = None
        self.open = False

    def session(self) -> DatabaseSession:
        if self._current is None:
            self._current = self._take(False)
        return self._current

    def begin(self) -> None:
        if self.open:
            return
        first = self._current is None
        try:
            self.session().execute(self._begin)
        except ConnectionLost:
            if not first:
                raise
            # Dead before anything of the script was sent (the database restarted): again,
            # on a new connection.
            self._current = self._take(True)
            self._current.execute(self._begin)
        self.open = True

    def commit(self) -> None:
        if self.open:
            self.open = False
            self.session().execute("COMMIT")

    def rollback(self) -> None:
        if self.open:
            self.open = False
            try:
                self.session().execute("ROLLBACK")
            except (StatementFailed, ConnectionLost):
                self.session().close()  # not returned to the pool: usable() is now false


def begin_sql(actor: psql.Actor, timeout: float) -> str:
    """A transaction's first round trip: begin, then who acts and from where (the audit
    triggers read these; local to the transaction) and how long a statement may take."""
    literal = psqlscript.quote_literal
    milliseconds = str(max(1, round(timeout * 1000)))
    return (
        "BEGIN; SELECT "
        f"set_config('mailstack.actor', {literal(actor.name)}, true), "
        f"set_config('mailstack.source', {literal(actor.source)}, true), "
        f"set_config('statement_timeout', {literal(milliseconds)}, true)"
    )


def _gset(known: dict[str, str], prefix: str, answer: Rows | None) -> None:
    r"""\gset: one variable per column of the statement's one row (prefix + column name);
    a NULL unsets it. No row or several fail, as in psql."""
    if answer is None or len(answer.rows) != 1:
        count = "no rows" if answer is None or not answer.rows else "more than one row"
        raise StatementFailed("ERROR", f"{count} returned for \\gset")
    for name, value in zip(answer.columns, answer.rows[0], strict=True):
        if value is None:
            known.pop(prefix + name, None)
        else:
            known[prefix + name] = value


def _failed(failure: StatementFailed, line: int) -> ExternalCommandFailed:
    output = f"psql:<stdin>:{line}: {failure.severity}:  {failure.message}"
    if failure.hint:
        output += f"\nHINT:  {failure.hint}"
    return ExternalCommandFailed(WHAT, output)


def _printed(row: Row) -> bool:
    # psql --csv prints a one-column empty (or NULL) value as an empty line; parse_rows
    # drops empty lines.
    return not (len(row) <= 1 and not (row[0] if row else None))


def _csv_row(row: Row) -> list[str]:
    return ["" if value is None else value for value in row]
