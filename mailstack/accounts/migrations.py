"""Schema migrations of the mail directory: the shipped NNNN_name.sql files (mailstack.resources),
applied in version order, each in one transaction recorded in schema_migrations with its checksum.

Everything goes through `psql` (mailstack.adapters.psql) inside the running `db` container; a
migration's version, name and checksum travel as psql variables.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import ExternalCommandFailed, MailstackError
from mailstack.resources import migrations_dir

_MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql\Z")
# _RECORD takes the advisory lock 7246118001 ("schema migrations of mailstack"): two
# concurrent `migrate` runs apply each file once; the second fails on the version key.


@dataclass(frozen=True)
class Migration:
    version: str  # "0001"
    name: str  # "0001_directory"
    path: Path

    @property
    def sql(self) -> bytes:
        return self.path.read_bytes()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql).hexdigest()


_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version  text        PRIMARY KEY,
    name     text        NOT NULL,
    checksum text        NOT NULL,
    applied  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON schema_migrations FROM PUBLIC;
SELECT version, name, checksum FROM schema_migrations ORDER BY version;
"""

_RECORD = """
SELECT pg_advisory_xact_lock(7246118001);
-- Fails (and rolls the whole file back) if another run applied this version meanwhile.
INSERT INTO schema_migrations (version, name, checksum)
    VALUES (:'migration_version', :'migration_name', :'migration_checksum');
"""


def available_migrations(directory: Path | None = None) -> list[Migration]:
    """The shipped migration files, in version order; a malformed name is a packaging bug."""
    root = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(root.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise MailstackError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(match["version"], path.stem, path))
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise MailstackError("two migration files share a version number")
    return found


def pending_migrations(
    available: Sequence[Migration], applied: Mapping[str, str]
) -> list[Migration]:
    """Migrations not yet applied; an applied file whose content changed is an error."""
    for migration in available:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MailstackError(
                f"schema migration {migration.name} was changed after it was applied",
                hint="released migrations are immutable; add a new NNNN_*.sql file instead",
            )
    return [migration for migration in available if migration.version not in applied]


def migrate(compose: Executor, directory: Path | None = None) -> list[str]:
    """Apply every pending migration, each in one transaction; return the applied names."""
    rows = psql.query(compose, _BOOTSTRAP)
    applied = {row[0]: row[2] for row in rows}
    done: list[str] = []
    for migration in pending_migrations(available_migrations(directory), applied):
        variables = {
            "migration_version": migration.version,
            "migration_name": migration.name,
            "migration_checksum": migration.checksum,
        }
        try:
            psql.query(
                compose,
                migration.sql.decode("utf-8"),
                variables,
                prelude=_RECORD,
                single_transaction=True,
                timeout=300,
            )
        except ExternalCommandFailed as e:
            raise ExternalCommandFailed(
                f"schema migration {migration.name} (rolled back, nothing of it applied)",
                e.output,
                hint="the database is as before; see the error above",
            ) from None
        done.append(migration.name)
    return done


def pending_in(compose: Executor, directory: Path | None = None) -> list[Migration]:
    """The migrations this mailstack would apply to the running database."""
    rows = psql.query(compose, _BOOTSTRAP)
    return pending_migrations(available_migrations(directory), {row[0]: row[2] for row in rows})


def applied_migrations(compose: Executor) -> list[str]:
    """Names of the applied migrations (for `status`)."""
    rows = psql.query(compose, "SELECT name FROM schema_migrations ORDER BY version;")
    return [row[0] for row in rows]
