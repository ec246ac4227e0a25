"""The databases in a snapshot: pg_dump of the mail directory and of Roundcube's database out
of the running db container, and pg_restore of a snapshot's dumps back into it."""

from __future__ import annotations

import json

from mailstack.adapters import psql
from mailstack.adapters.compose import Compose
from mailstack.backup.layout import DB_DUMP, DUMP_PATH, MANIFEST, WEBMAIL_DUMP
from mailstack.backup.restic import Repository

WEBMAIL_DATABASE = "roundcube"


def dump_mail_database(compose: Compose) -> bytes:
    """The mail directory as a custom-format dump (one transaction: consistent)."""
    return _pg_dump(compose, psql.DATABASE)


def dump_webmail(compose: Compose) -> bytes | None:
    """Roundcube's database as a custom-format dump, or None when the stack has none."""
    if not _has_database(compose, WEBMAIL_DATABASE):
        return None
    return _pg_dump(compose, WEBMAIL_DATABASE)


def _pg_dump(compose: Compose, database: str) -> bytes:
    return compose.exec(
        psql.DB_SERVICE,
        ["pg_dump", "--format=custom", "--username=postgres", f"--dbname={database}"],
        user="postgres",
        timeout=3600,
    )


def restore_db_dump(
    repository: Repository, snapshot_id: str, compose: Compose, *, lock: bool = True
) -> None:
    """The snapshot's dump into the running db: one transaction, objects replaced."""
    args = ["dump", snapshot_id, f"{DUMP_PATH}/{DB_DUMP}"]
    dump = repository.run(args if lock else ["--no-lock", *args], what="restic dump", timeout=3600)
    compose.exec(
        psql.DB_SERVICE,
        [
            "pg_restore", "--username=postgres", f"--dbname={psql.DATABASE}", "--clean",
            "--if-exists", "--single-transaction", "--exit-on-error", "--no-owner",
        ],
        input=dump,
        user="postgres",
        timeout=3600,
    )  # fmt: skip
    manifest_args = ["dump", snapshot_id, f"{DUMP_PATH}/{MANIFEST}"]
    recorded = json.loads(
        repository.run(manifest_args if lock else ["--no-lock", *manifest_args], what="restic dump")
    )
    if recorded.get("webmail_dump_sha256") and _has_database(compose, WEBMAIL_DATABASE):
        args = ["dump", snapshot_id, f"{DUMP_PATH}/{WEBMAIL_DUMP}"]
        webmail = repository.run(
            args if lock else ["--no-lock", *args], what="restic dump", timeout=3600
        )
        compose.exec(
            psql.DB_SERVICE,
            [
                "pg_restore", "--username=postgres", f"--dbname={WEBMAIL_DATABASE}", "--clean",
                "--if-exists", "--single-transaction", "--exit-on-error", "--no-owner",
                f"--role={WEBMAIL_DATABASE}",
            ],
            input=webmail,
            user="postgres",
            timeout=3600,
        )  # fmt: skip


def _has_database(compose: Compose, name: str) -> bool:
    found = compose.exec(
        psql.DB_SERVICE,
        ["psql", "--no-psqlrc", "--tuples-only", "--no-align", "--dbname=postgres",
         "--set", f"name={name}", "--file=-"],
        input=b"SELECT 1 FROM pg_database WHERE datname = :'name';\n",
        user="postgres",
    )  # fmt: skip
    return found.strip() == b"1"
