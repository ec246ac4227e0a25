"""Backup's job sequence against the fakes: what a backup, a restore and a recovery do, in which
order, and what they leave when a step fails. Docker is FakeEngine (restic's jobs answer by
their command line), the stack's containers are FakeProject; the stack directory is real."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

import mailstack.stack.stackdir
from mailstack import services
from mailstack.adapters.docker import OneShot
from mailstack.backup import creation, recovery, restic, restoration
from mailstack.backup.layout import DB_DUMP, DUMP_PATH, MANIFEST, STACK_PATH
from mailstack.errors import ExternalCommandFailed, MailstackError, UsageError
from mailstack.images import builder, imagerefs
from mailstack.stack.config import Config
from mailstack.stack.stackdir import Stack, StackDir
from mailstack.stack.stackfiles import init_stack, initial_config
from tests.unit.fakes import Answer, Call, FakeEngine, FakeProject, JobAnswer

PROJECT = "jobs"
BACKUP_IMAGE = "mailstack/backup:test"
DB_IMAGE = "mailstack/db:test"
EVERY_SERVICE = tuple(service.name for service in services.SERVICES)
PAUSED = [service.name for service in services.SERVICES if service.paused_for_backup]
SNAPSHOT = "0123456789abcdef" * 4  # the snapshot in the repository
WARM = "aa" * 32
FINAL = "ff" * 32
DUMP = b"PGDMP the mail directory"
MANIFEST_JSON = b'{"mailstack_version": "0.1.0"}'
INVENTORY_TSV = b"joe@example.org\t3\t300\nann@example.org\t1\t100\n"
NO_SPACE = b"Fatal: unable to save snapshot: write /repo/data/x: no space left on device\n"


# --- the fakes as a stack sees them ------------------------------------------------------------


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """Docker, for every module of a backup job that reaches it (images: built already)."""
    fake = FakeEngine(images={BACKUP_IMAGE: "sha256:backup", DB_IMAGE: "sha256:db"})
    for module in (restic, creation, recovery, builder):
        monkeypatch.setattr(module, "DOCKER", fake)
    return fake


def by_program(answers: Mapping[str, Answer]) -> Callable[[Call], bytes | Exception]:
    """Answer an exec by its program: the fake's markers look at psql's SQL, and neither
    pg_dump nor pg_restore sends any."""

    def answer(call: Call) -> bytes | Exception:
        found = answers.get(call.argv[0], b"")
        return found(call) if callable(found) else found

    return answer


def project(running: tuple[str, ...] = EVERY_SERVICE, **programs: Answer) -> FakeProject:
    return FakeProject(
        by_marker=[("", by_program({"pg_dump": DUMP, **programs}))],
        running=running,
        service_images={"db": DB_IMAGE},
    )


def stack_directory(root: Path, repository: Path) -> Config:
    """A stack directory with its images recorded, backing up to `repository`."""
    config = initial_config(
        "mail.example.org",
        "example.org",
        {
            "mode": "sandbox",
            "project": PROJECT,
            "features": {"antivirus": False, "webmail": False},
            "backup": {"target": str(repository)},
        },
    )
    init_stack(root, config, check_ports=False)
    imagerefs.write(root, {"backup": BACKUP_IMAGE, "db": DB_IMAGE})
    return config


def running_stack(tmp_path: Path, containers: FakeProject) -> Stack:
    root = tmp_path / "stack"
    config = stack_directory(root, tmp_path / "repository")
    return Stack(StackDir(root), config, containers)  # type: ignore[arg-type]


def summary(snapshot: str) -> bytes:
    """The last line of `restic backup --json`."""
    line = {"message_type": "summary", "snapshot_id": snapshot, "total_files_processed": 3}
    return json.dumps(line).encode() + b"\n"


def restic_answers(*answers: tuple[str, JobAnswer]) -> list[tuple[str, JobAnswer]]:
    """restic's answers: the test's (after `forget`, whose --tag warm-pass is the warm pass's
    marker too), then a repository holding SNAPSHOT. A backup's final pass carries
    --inventory; the warm pass is the other `backup`."""
    listing = [{"id": SNAPSHOT, "short_id": SNAPSHOT[:8], "time": "2026-12-01T02:15:00Z"}]
    return [
        ("forget --tag warm-pass", b""),
        *answers,
        ("--inventory", summary(FINAL)),
        ("--compression off", summary(WARM)),
        ("snapshots --json", json.dumps(listing).encode()),
        (f"{DUMP_PATH}/{DB_DUMP}", DUMP),
        (f"{DUMP_PATH}/{MANIFEST}", MANIFEST_JSON),
        (f"{DUMP_PATH}/mail-inventory.tsv", INVENTORY_TSV),
    ]


def bound(job: OneShot, target: str) -> Path:
    """The host directory a job sees at `target`."""
    return Path(next(bind.source for bind in job.binds if bind.target == target))


def last_of(containers: FakeProject, *verbs: str) -> list[str]:
    """The last `docker compose` command given with one of these verbs ([] for none)."""
    return next((c for c in reversed(containers.commands) if c[0] in verbs), [])


def ran(engine: FakeEngine) -> list[str]:
    """What each one-shot job was, in order."""
    return [what for kind, what in engine.events if kind == "run"]


def after_last(jobs: list[str], what: str) -> list[str]:
    """The jobs that ran after the last one of `what`."""
    return jobs[max(index for index, job in enumerate(jobs) if job == what) + 1 :]


def counting(calls: list[Call]) -> Callable[[Call], bytes]:
    """An exec that succeeds, remembering each call."""

    def answer(call: Call) -> bytes:
        calls.append(call)
        return b""

    return answer


# --- create ----------------------------------------------------------------------------------


def test_the_database_dump_is_staged_before_restic_reads_anything(
    tmp_path: Path, engine: FakeEngine
) -> None:
    stack = running_stack(tmp_path, project())
    staged: list[tuple[bytes, dict[str, object]]] = []

    def warm_pass(job: OneShot) -> bytes:
        dump = bound(job, DUMP_PATH)
        staged.append(((dump / DB_DUMP).read_bytes(), json.loads((dump / MANIFEST).read_text())))
        return summary(WARM)

    engine.jobs = restic_answers(("--tag warm-pass", warm_pass))
    creation.create(stack)
    [(dump, manifest)] = staged
    assert dump == DUMP
    assert manifest["db_dump_sha256"] == hashlib.sha256(DUMP).hexdigest()


def test_the_final_pass_runs_while_the_registry_paused_services_are_frozen(
    tmp_path: Path, engine: FakeEngine
) -> None:
    containers = project()
    stack = running_stack(tmp_path, containers)
    during: dict[str, list[str]] = {}

    def pass_seeing(name: str, snapshot: str) -> Callable[[OneShot], bytes]:
        def answer(job: OneShot) -> bytes:
            during[name] = last_of(containers, "pause", "unpause")
            return summary(snapshot)

        return answer

    engine.jobs = restic_answers(
        ("--inventory", pass_seeing("final", FINAL)),
        ("--tag warm-pass", pass_seeing("warm", WARM)),
    )
    result = creation.create(stack, tag="daily")
    assert PAUSED and "postfix" not in PAUSED  # the MTA keeps accepting mail meanwhile
    assert during["warm"][:1] != ["pause"]
    assert during["final"] == ["pause", *PAUSED]
    assert last_of(containers, "pause", "unpause") == ["unpause", *PAUSED]
    # The snapshot is the final pass; the warm one is forgotten once the final one is taken.
    assert result.snapshot == FINAL
    assert "restic forget (warm pass)" in after_last(ran(engine), "restic backup")


FREEZE_FAILED = ExternalCommandFailed(
    "docker compose pause (exit 1)",
    "Error response from daemon: Cannot pause container 0cb0: OCI runtime pause failed: "
    "unable to freeze: unknown",
)


def test_a_freeze_runc_gave_up_on_is_thawed_and_tried_again(
    tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(creation, "PAUSE_RETRY_SECONDS", 0)
    containers = project()
    containers.run_failures = [("pause", FREEZE_FAILED)]
    stack = running_stack(tmp_path, containers)
    engine.jobs = restic_answers(
        ("--inventory", summary(FINAL)), ("--tag warm-pass", summary(WARM))
    )
    assert creation.create(stack).snapshot == FINAL
    freezes = [args for args in containers.commands if args[0] in ("pause", "unpause")]
    freezes = freezes[freezes.index(["pause", *PAUSED]) :]  # before: the job's own start
    assert freezes == [["pause", *PAUSED], ["unpause", *PAUSED], ["pause", *PAUSED],
                       ["unpause", *PAUSED]]  # fmt: skip


def test_a_pause_failing_otherwise_is_not_tried_again(tmp_path: Path, engine: FakeEngine) -> None:
    containers = project()
    refused = ExternalCommandFailed("docker compose pause (exit 1)", "no such service: dovecot")
    containers.run_failures = [("pause", refused)]
    stack = running_stack(tmp_path, containers)
    engine.jobs = restic_answers(("--tag warm-pass", summary(WARM)))
    with pytest.raises(ExternalCommandFailed, match="pause"):
        creation.create(stack)
    assert [args[0] for args in containers.commands if args[0] == "pause"] == ["pause"]


def test_a_failed_final_pass_unpauses_forgets_the_warm_pass_and_keeps_no_dump(
    tmp_path: Path, engine: FakeEngine
) -> None:
    containers = project()
    stack = running_stack(tmp_path, containers)
    staging: list[Path] = []

    def out_of_space(job: OneShot) -> tuple[int, bytes, bytes]:
        staging.append(bound(job, DUMP_PATH))
        return (1, b"", NO_SPACE)

    engine.jobs = restic_answers(("--inventory", out_of_space))
    with pytest.raises(MailstackError, match="is full"):
        creation.create(stack)
    assert last_of(containers, "pause", "unpause") == ["unpause", *PAUSED]
    # The lock a killed job would leave goes first, then every warm pass (none is a snapshot).
    after_failure = after_last(ran(engine), "restic backup")
    assert after_failure == ["restic unlock", "restic forget (warm pass)"]
    assert not staging[0].exists()  # the decrypted dump left with the job


def test_a_backup_of_a_stopped_stack_is_refused_before_anything_runs(
    tmp_path: Path, engine: FakeEngine
) -> None:
    containers = project(running=("postfix", "front"))
    stack = running_stack(tmp_path, containers)
    engine.jobs = restic_answers()
    with pytest.raises(MailstackError, match=r"not running \(db, dovecot stopped\)"):
        creation.create(stack)
    assert engine.ran == [] and containers.commands == []


# --- restore ---------------------------------------------------------------------------------


def test_restoring_over_a_running_stack_needs_force_and_touches_nothing_without_it(
    tmp_path: Path, engine: FakeEngine
) -> None:
    containers = project()
    stack = running_stack(tmp_path, containers)
    engine.jobs = restic_answers()
    with pytest.raises(UsageError, match="the stack is running"):
        restoration.restore(stack, "latest")
    assert ran(engine) == ["restic snapshots"]
    assert containers.commands == []


def test_a_forced_restore_saves_the_state_first_then_stops_only_what_holds_the_volumes(
    tmp_path: Path, engine: FakeEngine
) -> None:
    pg_restores: list[Call] = []
    containers = project(pg_restore=counting(pg_restores))
    stack = running_stack(tmp_path, containers)
    seen: dict[str, list[list[str]]] = {}
    database_restores_before_files: list[int] = []

    def safety_pass(job: OneShot) -> bytes:
        seen["safety"] = [list(command) for command in containers.commands]
        return summary(FINAL)

    def restore_files(job: OneShot) -> bytes:
        seen["restore"] = [list(command) for command in containers.commands]
        database_restores_before_files.append(len(pg_restores))
        return b""

    engine.jobs = restic_answers(
        ("--tag safety", safety_pass), (f"restore {SNAPSHOT}", restore_files)
    )
    result = restoration.restore(stack, "latest", force=True)
    assert result.safety_snapshot == FINAL
    assert not any(command[0] == "stop" for command in seen["safety"])
    # Mail, calendars, Redis and rspamd data; not db, not postfix.
    holders = ["dav", "dovecot", "redis", "rspamd"]
    assert seen["restore"][-1] == ["stop", *holders]
    assert last_of(containers, "stop", "start") == ["start", *holders]
    assert database_restores_before_files == [0] and len(pg_restores) == 1


def test_a_failed_restore_starts_the_stopped_service_again_and_leaves_the_database(
    tmp_path: Path, engine: FakeEngine
) -> None:
    pg_restores: list[Call] = []
    containers = project(pg_restore=counting(pg_restores))
    stack = running_stack(tmp_path, containers)
    damaged = b"Pack ID does not match, want 34, got a3\nFatal: repository contains errors\n"
    engine.jobs = restic_answers((f"restore {SNAPSHOT}", (1, b"", damaged)))
    with pytest.raises(MailstackError, match="is damaged"):
        restoration.restore(stack, SNAPSHOT[:8], only=["mail"], force=True)
    stops = [command for command in containers.commands if command[0] == "stop"]
    # Mail only (users' data: mail and calendars): Redis and rspamd keep running.
    assert stops == [["stop", "dav", "dovecot"]]
    assert containers.commands[-1] == ["start", "dav", "dovecot"]
    assert not pg_restores


# --- disaster recovery -----------------------------------------------------------------------


@pytest.fixture
def snapshot_of_a_stack(tmp_path: Path) -> Path:
    """The stack directory the snapshot holds (what its stack/ restores)."""
    old = tmp_path / "old"
    stack_directory(old, tmp_path / "repository")
    return old


def restore_stack_directory(old: Path) -> Callable[[OneShot], bytes]:
    def answer(job: OneShot) -> bytes:
        shutil.copytree(old, bound(job, f"/restore{STACK_PATH}"), dirs_exist_ok=True)
        return b""

    return answer


def recover(tmp_path: Path) -> recovery.DisasterRecoveryResult:
    source = recovery.Source(target=str(tmp_path / "repository"), password="secret")
    return recovery.recover(source, tmp_path / "new", registry="registry.example.org")


@pytest.fixture
def new_host_containers(monkeypatch: pytest.MonkeyPatch) -> FakeProject:
    """The containers of the stack recovery brings up (its db only)."""
    containers = project(running=("db",))
    monkeypatch.setattr(mailstack.stack.stackdir, "Compose", lambda root, name: containers)
    return containers


def test_recovery_refuses_to_overwrite_the_volumes_of_a_stack_living_here(
    tmp_path: Path, engine: FakeEngine, snapshot_of_a_stack: Path, new_host_containers: FakeProject
) -> None:
    engine.volumes = {f"{PROJECT}_mail"}
    engine.jobs = restic_answers(
        ("--include /backup/stack", restore_stack_directory(snapshot_of_a_stack))
    )
    with pytest.raises(UsageError, match=f"volumes of project {PROJECT} already exist"):
        recover(tmp_path)
    assert engine.volumes == {f"{PROJECT}_mail"}
    assert not [kind for kind, _ in engine.events if kind.endswith("_volume")]
    assert "restic restore (volumes)" not in ran(engine)
    assert not (tmp_path / "new").exists() and new_host_containers.commands == []


def test_recovery_makes_the_volumes_before_restoring_into_them_and_stops_the_db_after(
    tmp_path: Path, engine: FakeEngine, snapshot_of_a_stack: Path, new_host_containers: FakeProject
) -> None:
    volumes_seen: list[set[str]] = []
    commands_seen: list[list[str]] = []

    def pg_restore(call: Call) -> bytes:
        commands_seen.extend(new_host_containers.commands)
        return b""

    new_host_containers.by_marker = [("", by_program({"pg_restore": pg_restore}))]

    def restore_volumes(job: OneShot) -> bytes:
        volumes_seen.append(set(engine.volumes))
        return b""

    engine.jobs = restic_answers(
        ("--include /backup/stack", restore_stack_directory(snapshot_of_a_stack)),
        ("--include /backup/volumes/mail", restore_volumes),
    )
    result = recover(tmp_path)
    assert volumes_seen == [{f"{PROJECT}_{name}" for name in ("mail", "redis", "rspamd", "dav")}]
    assert commands_seen == [["up", "--detach", "db"]]  # the dump goes into the running db
    assert new_host_containers.commands[-1] == ["down", "--remove-orphans"]
    assert (result.project, result.mailboxes) == (PROJECT, 2)
    assert (tmp_path / "new" / "mailstack.yaml").is_file()


def test_a_failed_recovery_removes_the_volumes_and_the_directory_it_made(
    tmp_path: Path, engine: FakeEngine, snapshot_of_a_stack: Path, new_host_containers: FakeProject
) -> None:
    failure = ExternalCommandFailed("docker compose exec (exit 1)", "pg_restore: error")
    new_host_containers.by_marker = [("", by_program({"pg_restore": failure}))]
    engine.jobs = restic_answers(
        ("--include /backup/stack", restore_stack_directory(snapshot_of_a_stack))
    )
    with pytest.raises(ExternalCommandFailed):
        recover(tmp_path)
    removed = {name for kind, name in engine.events if kind == "remove_volume"}
    assert removed == {f"{PROJECT}_{name}" for name in ("mail", "redis", "rspamd", "dav", "db")}
    assert not engine.volumes
    assert not (tmp_path / "new").exists()
    assert new_host_containers.commands[-1] == ["down", "--remove-orphans"]
