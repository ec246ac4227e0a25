"""Schema migrations of the mail directory: only pending files run, each in one recorded
transaction; a changed, badly named or duplicate migration is refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mailstack.accounts import migrations
from mailstack.errors import ExternalCommandFailed, MailstackError
from tests.unit.fakes import FakeContainers


def write_migrations(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_shipped_migrations_are_well_formed() -> None:
    names = [migration.name for migration in migrations.available_migrations()]
    assert names[0] == "0001_directory"
    assert names == sorted(names)


def test_only_pending_migrations_run_each_in_one_recorded_transaction(tmp_path: Path) -> None:
    root = write_migrations(
        tmp_path / "m", {"0001_first.sql": "CREATE TABLE a ();\n", "0002_second.sql": "SELECT 2;\n"}
    )
    first_sum = hashlib.sha256(b"CREATE TABLE a ();\n").hexdigest()
    db = FakeContainers(answers=[f"0001,0001_first,{first_sum}\n".encode(), b""])
    applied = migrations.migrate(db, root)
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
    assert migrations.migrate(db, root) == []
    assert len(db.calls) == 1
    assert "CREATE TABLE IF NOT EXISTS schema_migrations" in db.calls[0].stdin


def test_an_applied_migration_that_changed_is_refused(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"0001_first.sql": "SELECT 'edited';\n"})
    db = FakeContainers(answers=[b"0001,0001_first,0000\n"])
    with pytest.raises(MailstackError, match="changed after it was applied"):
        migrations.migrate(db, root)
    assert len(db.calls) == 1


def test_a_failed_migration_is_reported_by_name_as_rolled_back(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"0001_first.sql": "SELECT broken();\n"})
    db = FakeContainers(answers=[b""], fail_on="broken")
    with pytest.raises(ExternalCommandFailed) as caught:
        migrations.migrate(db, root)
    assert "0001_first (rolled back" in caught.value.message


def test_a_badly_named_migration_file_is_refused(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"1_first.sql": "SELECT 1;\n"})
    with pytest.raises(MailstackError, match=r"NNNN_name\.sql"):
        migrations.available_migrations(root)


def test_two_migrations_with_one_version_are_refused(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"0001_a.sql": "", "0001_b.sql": ""})
    with pytest.raises(MailstackError, match="share a version"):
        migrations.available_migrations(root)
