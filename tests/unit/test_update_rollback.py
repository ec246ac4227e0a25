"""`mailstack update`'s rollback decisions, against the fakes: which failures roll back, what
a rollback restores (the .env image references, the rendered files, the database when a
migration ran, the services the update recreated), what it leaves alone, and what the
operator is told. The real flow runs (render and merge, records, recreation, rollback) over
a stack directory rendered by an older release; only the image build and the mail round trip
are stand-ins. The same flow against Docker is tests/e2e/test_update.py."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

import mailstack.stack.stackdir as stack_package
from mailstack import __version__
from mailstack.accounts import migrations
from mailstack.adapters import docker
from mailstack.adapters.compose import ServiceState
from mailstack.errors import ExternalCommandFailed, MailstackError, UsageError
from mailstack.images import builder, imagerefs
from mailstack.runtime import lifecycle, probe, update
from mailstack.stack import stackfiles
from mailstack.stack.stackdir import CANDIDATE_SUFFIX, Stack, StackDir
from tests.unit.fakes import FakeContainers, FakeEngine

OLD_VERSION = "0.0.1"
# A file whose template the new release changed: the old render had one more line.
CHANGED_FILE = "config/rspamd/actions.conf"
OLD_LINE = b"# a setting the new release drops\n"
APPLIED_MIGRATIONS = "FROM schema_migrations ORDER BY version"  # migrations' bootstrap query
DOCKER_GONE = ExternalCommandFailed("docker compose up", "Cannot connect to the Docker daemon")
_IMAGE = re.compile(r"^\$\{(?P<variable>\w+):-(?P<default>[^}]*)\}$")


@dataclass
class StackProject(FakeContainers):
    """FakeContainers that also plays Compose for one stack directory: `images()` reads
    compose.yaml with .env's references, as `docker compose config` does, and `up` puts each
    service it names (every service when it names none) on its reference's image in the
    engine, recreating a container only when its image changed or --force-recreate says so
    (and `ps` shows it running from then on). An `up` whose command line contains a marker of `broken_up` raises that error instead."""

    root: Path = Path()
    engine: FakeEngine = field(default_factory=FakeEngine)
    broken_up: list[tuple[str, BaseException]] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)  # containers (re)created, in order

    def images(self) -> dict[str, str]:
        recorded = {
            imagerefs.variable(image): reference
            for image, reference in imagerefs.read(self.root).items()
        }
        document = yaml.safe_load((self.root / "compose.yaml").read_text())
        found: dict[str, str] = {}
        for name, spec in document["services"].items():
            match = _IMAGE.match(spec["image"])
            found[name] = (
                recorded.get(match["variable"], match["default"]) if match else spec["image"]
            )
        return found

    def run(self, args: list[str], **options: object) -> None:
        super().run(args, **options)
        if args[0] != "up":
            return
        command = " ".join(args)
        for marker, error in self.broken_up:
            if marker in command:
                raise error
        named = [argument for argument in args[1:] if not argument.startswith("--")]
        wanted = self.images()
        for service in named or sorted(wanted):
            image = self.engine.image_id(wanted[service]) or ""
            container = f"c-{service}"
            if "--force-recreate" in args or self.engine.containers.get(container) != image:
                self.engine.containers[container] = image
                self.restarted.append(service)
                if service not in self.running:
                    self.running += (service,)

    def ps_with_checks(self) -> list[ServiceState]:
        return self.ps()

    def logs(self, service: str, tail: int = 40) -> str:
        return ""


@dataclass
class OldStack:
    """A stack rendered and running at OLD_VERSION behind the fakes, and the stand-ins of the
    new release's build and of the mail round trip."""

    root: Path
    project: StackProject
    engine: FakeEngine
    rebuilt: set[str]  # images whose packages changed: the build gives them a new tag
    build_failure: Exception | None = None  # raised after the first new image is recorded
    probe_failure: Exception | None = None

    @property
    def records(self) -> update.UpdateRecords:
        return update.UpdateRecords(StackDir(self.root))

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def manifest_version(self) -> str:
        return StackDir(self.root).manifest().version

    def build(self, stack: Stack, progress: object = None, names: object = None) -> None:
        for image in sorted(self.rebuilt):
            reference = f"mailstack/{image}:new"
            self.engine.images[reference] = f"sha256:new-{image}"
            imagerefs.write(self.root, {image: reference})
            if self.build_failure is not None:
                raise self.build_failure

    def round_trip(self, *_: object, **__: object) -> probe.ProbeResult:
        if self.probe_failure is not None:
            raise self.probe_failure
        return probe.ProbeResult("probe@example.test", 1.0)


def applied_migrations(pending: int = 0) -> bytes:
    """The bootstrap query's rows: every shipped migration but the last `pending`."""
    shipped = migrations.available_migrations()
    applied = shipped[: len(shipped) - pending]
    return "".join(f"{m.version},{m.name},{m.checksum}\n" for m in applied).encode()


@pytest.fixture
def old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OldStack:
    config = stackfiles.initial_config("mail.example.test", "example.test")
    stackfiles.init_stack(tmp_path / "stack", config, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    root = stack_dir.root
    # What the older release rendered: its version, and CHANGED_FILE with one more line.
    old_render = (root / CHANGED_FILE).read_bytes() + OLD_LINE
    (root / CHANGED_FILE).write_bytes(old_render)
    (stack_dir.state_dir / "base" / CHANGED_FILE).write_bytes(old_render)
    manifest: dict[str, Any] = json.loads((stack_dir.state_dir / "manifest.json").read_text())
    manifest["version"] = OLD_VERSION
    (stack_dir.state_dir / "manifest.json").write_text(json.dumps(manifest))
    # Its images, built and running.
    engine = FakeEngine(docker_root=None)
    project = StackProject(root=root, engine=engine)
    images = {imagerefs.image_name(ref) for ref in project.images().values()} | {"backup"}
    imagerefs.write(root, {image: f"mailstack/{image}:old" for image in images})
    engine.images = {f"mailstack/{image}:old": f"sha256:old-{image}" for image in images}
    services = project.images()
    engine.containers = {f"c-{name}": engine.images[ref] for name, ref in services.items()}
    project.running = tuple(services)
    project.by_marker = [(APPLIED_MIGRATIONS, applied_migrations())]
    stack = OldStack(root, project, engine, rebuilt={"db", "dovecot", "postfix"})

    monkeypatch.setattr(stack_package, "Compose", lambda *_: project)
    monkeypatch.setattr(update, "DOCKER", engine)
    monkeypatch.setattr(builder, "DOCKER", engine)
    monkeypatch.setattr(docker, "available", lambda: None)
    monkeypatch.setattr(lifecycle, "build", stack.build)
    monkeypatch.setattr(probe, "ensure_probe_account", lambda *_: ("probe@example.test", "x"))
    monkeypatch.setattr(probe, "round_trip", stack.round_trip)
    return stack


def test_a_conflict_stops_the_update_before_anything_running_is_touched(old: OldStack) -> None:
    # The operator edited the very line the new release drops.
    edited = old.read(CHANGED_FILE).replace(OLD_LINE, b"# the operator's setting\n")
    (old.root / CHANGED_FILE).write_bytes(edited)
    env_before, containers_before = old.read(".env"), dict(old.engine.containers)

    with pytest.raises(UsageError, match=f"conflict with your edits in {CHANGED_FILE}"):
        update.update(old.root, skip_backup=True)

    assert old.project.commands == []  # no build, no `up`: the old stack keeps serving
    assert old.read(".env") == env_before and old.engine.containers == containers_before
    assert old.read(CHANGED_FILE) == edited
    # The candidate stays for the operator; the records are the old release's, so the next
    # `mailstack update` is not refused for an unresolved conflict.
    assert (old.root / (CHANGED_FILE + CANDIDATE_SUFFIX)).is_file()
    assert StackDir(old.root).manifest().conflicts == []
    assert old.manifest_version() == OLD_VERSION
    assert old.records.load() is None


def test_only_changed_services_are_recreated_back_end_first_and_the_mta_last(
    old: OldStack,
) -> None:
    redis_before = old.engine.containers["c-redis"]

    result = update.update(old.root, skip_backup=True)

    # db, dovecot and postfix have new images; rspamd only new config, which Compose cannot
    # see (a bind mount), so it is recreated by force. No other container is touched.
    assert old.project.restarted == ["db", "rspamd", "dovecot", "postfix"]
    assert "recreated: db, rspamd, dovecot, postfix" in str(result)
    assert old.engine.containers["c-postfix"] == "sha256:new-postfix"
    assert old.engine.containers["c-redis"] == redis_before
    assert OLD_LINE not in old.read(CHANGED_FILE)
    assert old.manifest_version() == __version__
    assert old.records.load() is None


def test_a_service_that_was_not_running_is_started_though_its_image_is_unchanged(
    old: OldStack,
) -> None:
    old.rebuilt = set()
    old.project.running = tuple(name for name in old.project.running if name != "clamav")
    del old.engine.containers["c-clamav"]

    result = update.update(old.root, skip_backup=True)

    assert result.recreated == ("clamav", "rspamd")
    assert old.engine.containers["c-clamav"] == "sha256:old-clamav"


def test_a_failed_round_trip_rolls_back_images_files_and_the_recreated_services(
    old: OldStack,
) -> None:
    env_before, file_before = old.read(".env"), old.read(CHANGED_FILE)
    containers_before = dict(old.engine.containers)
    old.probe_failure = MailstackError("the probe message did not arrive within 90 s")

    with pytest.raises(update.UpdateFailed) as failed:
        update.update(old.root, skip_backup=True)

    assert failed.value.message == (
        f"update to {__version__} failed at 'verify': the probe message did not arrive within "
        f"90 s; rolled back, mailstack {OLD_VERSION} is serving again"
    )
    assert old.read(".env") == env_before
    assert old.read(CHANGED_FILE) == file_before
    assert old.manifest_version() == OLD_VERSION
    assert old.engine.containers == containers_before
    rollback = old.project.restarted[4:]  # after the update's own four
    # rspamd's image never changed: only a forced recreation gives it its old config back.
    assert set(rollback) == {"db", "rspamd", "dovecot", "postfix"}
    assert old.project.sent("DROP SCHEMA") == []  # no migration ran: the database stays
    assert old.records.load() is None and not old.records.dir.exists()


def test_a_failed_build_rolls_back_without_restarting_a_service(old: OldStack) -> None:
    env_before, containers_before = old.read(".env"), dict(old.engine.containers)
    old.build_failure = ExternalCommandFailed("docker build mailstack/dovecot", "E: no space")

    with pytest.raises(update.UpdateFailed, match=r"failed at 'build': docker build mailstack/do"):
        update.update(old.root, skip_backup=True)

    assert old.read(".env") == env_before  # the image the build had recorded is forgotten
    assert old.project.restarted == []
    assert old.engine.containers == containers_before
    assert old.records.load() is None


def test_a_rollback_after_migrations_restores_the_dumped_database(old: OldStack) -> None:
    old.project.by_marker = [
        (APPLIED_MIGRATIONS, applied_migrations(pending=1)),
        ("PGDMP", b"CREATE TABLE domains_as_dumped ();\n"),  # pg_restore of the dump
    ]
    old.project.answers = [b"PGDMP the directory before the migrations"]  # pg_dump
    old.probe_failure = MailstackError("the probe message did not arrive within 90 s")

    with pytest.raises(update.UpdateFailed, match="rolled back"):
        update.update(old.root, skip_backup=True)

    (restore,) = old.project.sent("PGDMP")
    assert restore.argv[0] == "pg_restore"
    (reset,) = old.project.sent("DROP SCHEMA")
    # Whatever the migration created goes with the schema; the dump comes back whole.
    assert reset.stdin.startswith("DROP SCHEMA public CASCADE;\nCREATE SCHEMA public;\n")
    assert reset.stdin.endswith("CREATE TABLE domains_as_dumped ();\n")
    assert old.records.load() is None


def test_ctrl_c_while_recreating_rolls_back_and_stays_an_interrupt(old: OldStack) -> None:
    env_before, containers_before = old.read(".env"), dict(old.engine.containers)
    # Only the update's own `up` of postfix: the rollback names it after --force-recreate.
    old.project.broken_up = [("--no-deps postfix", KeyboardInterrupt())]

    with pytest.raises(KeyboardInterrupt):
        update.update(old.root, skip_backup=True)

    assert old.read(".env") == env_before
    assert old.engine.containers == containers_before
    assert old.records.load() is None


def test_a_failed_rollback_keeps_its_state_and_the_next_update_finishes_it(
    old: OldStack,
) -> None:
    old.project.broken_up = [("--remove-orphans", DOCKER_GONE)]  # Docker goes away mid-update

    with pytest.raises(update.UpdateFailed) as failed:
        update.update(old.root, skip_backup=True)

    assert "failed at 'recreate'" in failed.value.message
    assert "and the rollback failed too: docker compose up failed" in failed.value.message
    assert "run `mailstack update` again to retry the rollback" in str(failed.value.hint)
    left = old.records.load()
    assert left is not None and left.step == "recreate"
    assert left.recreated == ["db", "rspamd", "dovecot", "postfix"]

    old.project.broken_up = []  # Docker is back
    result = update.update(old.root, skip_backup=True)

    assert result.rolled_back_first == (
        "rolled back the interrupted update (it had reached 'recreate')"
    )
    assert str(result).startswith(result.rolled_back_first)
    assert old.engine.containers["c-postfix"] == "sha256:new-postfix"
    assert old.manifest_version() == __version__
    assert old.records.load() is None


@pytest.mark.parametrize(
    ("kind", "serving"),
    [
        ("release", f"rolled back, mailstack {OLD_VERSION} is serving again"),
        ("security", "rolled back, the previous images are serving again"),
    ],
)
def test_after_a_rollback_the_error_says_what_failed_and_what_serves(
    kind: str, serving: str
) -> None:
    state = update.UpdateState(OLD_VERSION, __version__, "recreate", kind=kind)
    failure = MailstackError("service dovecot is not healthy (unhealthy); last log lines:\n…")

    error = update.error_after_rollback(state, failure, None)

    assert isinstance(error, update.UpdateFailed)
    assert "failed at 'recreate': service dovecot is not healthy (unhealthy); last" in error.message
    assert error.message.endswith(serving)


def test_ctrl_c_is_reported_as_a_failure_only_when_its_rollback_failed() -> None:
    state = update.UpdateState(OLD_VERSION, __version__, "verify")
    interrupt = KeyboardInterrupt()

    assert update.error_after_rollback(state, interrupt, None) is interrupt
    error = update.error_after_rollback(state, interrupt, DOCKER_GONE)
    assert isinstance(error, update.UpdateFailed)
    assert error.message.startswith(
        f"update to {__version__} failed at 'verify' (interrupted), and the rollback failed too"
    )
    assert "state is kept in .mailstack/update/" in str(error.hint)
