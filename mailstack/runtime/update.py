"""`mailstack update`: move a running stack to the installed mailstack version.

The flow (each step recorded in .mailstack/update/state.json before it starts):

1. preflight: healthy, no unresolved conflicts, disk for images, Docker and Compose usable;
2. safety snapshot of the tree (rendered files + .mailstack records) and, unless skipped,
   a backup snapshot tagged pre-update-<from>-<to>;
3. re-render with the three-way merge: a conflict restores the previous tree and stops
   here, before anything running is touched;
4. build the new images while the old stack serves;
5. schema migrations (after a pg_dump of the directory, kept for a rollback);
6. recreate, one at a time and health-gated, only the services whose image or config
   changed: back end first, the MTA last (its senders retry through the gap);
7. verify: every service healthy and a real round trip on 587 -> 993.

Any failure from step 4 on rolls back: the previous tree, the previous images (their tags
are never removed by an update) and, if a migration ran, the dumped database. A state file
left behind by an interrupted run is rolled back by the next `mailstack update`, which then
starts over: the update converges however often it is cut off.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from mailstack import __version__, services
from mailstack.accounts import migrations
from mailstack.adapters import docker, psql
from mailstack.adapters.docker import DOCKER
from mailstack.backup import creation
from mailstack.errors import MailstackError, UsageError
from mailstack.images import builder, imagerefs, packageplan
from mailstack.runtime import lifecycle, probe
from mailstack.stack import stackfiles
from mailstack.stack.stackdir import CANDIDATE_SUFFIX, STATE_DIR, Stack, StackDir, atomic_write

Progress = Callable[[str], None]

UPDATE_DIR = "update"
# The registry's order: the back end first, the MTA last (services.SERVICES).
SERVICE_ORDER = tuple(service.name for service in services.SERVICES)
MIN_FREE_BYTES = 3 * 1024**3  # new images of every service, with margin
HEALTH_TIMEOUT = 240.0


class UpdateFailed(MailstackError):
    """An update step failed; the stack was rolled back to the previous version."""


@dataclass
class UpdateState:
    from_version: str
    to_version: str
    step: str = "preflight"
    started: str = ""
    migrated: bool = False
    recreated: list[str] = field(default_factory=list)
    kind: str = "release"  # or "security": images rebuilt for Debian's fixes (securityupdate)

    def to_json(self) -> bytes:
        return (json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class UpdateResult:
    from_version: str
    to_version: str
    steps: tuple[str, ...]
    recreated: tuple[str, ...]
    migrations: tuple[str, ...]
    backup: str | None
    probe: str | None
    seconds: float
    rolled_back_first: str | None = None

    def __str__(self) -> str:
        if self.from_version == self.to_version and not self.recreated:
            return f"the stack is already at mailstack {self.to_version}; nothing to do"
        lines = []
        if self.rolled_back_first:
            lines.append(self.rolled_back_first)
        lines.append(
            f"updated from {self.from_version} to {self.to_version} in {self.seconds:.0f} s"
        )
        lines.append(
            "recreated: " + (", ".join(self.recreated) if self.recreated else "no service")
        )
        if self.migrations:
            lines.append("schema migrations: " + ", ".join(self.migrations))
        if self.backup:
            lines.append(f"safety snapshot: {self.backup}")
        if self.probe:
            lines.append(self.probe)
        return "\n".join(lines)


# --- the flow --------------------------------------------------------------------------------


def update(
    root: Path,
    *,
    skip_backup: bool = False,
    progress: Progress | None = None,
    health_timeout: float = HEALTH_TIMEOUT,
) -> UpdateResult:
    started = time.monotonic()
    records = UpdateRecords(StackDir(root).require())
    rolled_back = roll_back_interrupted(root, records, progress, health_timeout)
    current = Stack.load(root)
    from_version = current.dir.manifest().version or "0.0.0"
    to_version = __version__
    _refuse_downgrade(from_version, to_version)
    if from_version == to_version:
        return UpdateResult(from_version, to_version, (), (), (), None, None, 0.0, rolled_back)
    _say(progress, "preflight: health, conflicts, disk, Docker and Compose")
    preflight(current)
    run = UpdateRun(root, records, UpdateState(from_version, to_version, "snapshot", _now()),
               progress, health_timeout)  # fmt: skip
    records.begin(run.state)
    try:
        # Steps that change nothing running: a refusal here restores the tree and stops.
        backup_name = None if skip_backup else run.safety_backup()
        config_changed = run.render()
    except UsageError:
        records.restore_tree()
        records.clear()
        raise
    try:
        run.build()
        migrations = run.migrate()
        run.recreate(config_changed)
        probe_line = run.verify()
    except BaseException as failure:  # Ctrl-C included: never leave a half-updated stack
        raise run.roll_back(failure) from None
    records.clear()
    return UpdateResult(
        from_version,
        to_version,
        ("preflight", *run.steps),
        tuple(run.state.recreated),
        tuple(migrations),
        backup_name,
        probe_line,
        time.monotonic() - started,
        rolled_back,
    )


class UpdateRun:
    """The steps of one update, each recorded in the state file before it starts."""

    def __init__(
        self,
        root: Path,
        records: UpdateRecords,
        state: UpdateState,
        progress: Progress | None,
        health_timeout: float,
    ) -> None:
        self.root = root
        self.records = records
        self.state = state
        self.progress = progress
        self.health_timeout = health_timeout
        self.steps: list[str] = []

    def _begin(self, step: str, message: str) -> Stack:
        self.records.step(self.state, step)
        _say(self.progress, message)
        self.steps.append(step)
        return Stack.load(self.root)

    def safety_backup(self, tag: str | None = None) -> str:
        tag = tag or f"pre-update-{self.state.from_version}-{self.state.to_version}"
        current = self._begin("backup", f"safety snapshot {tag}")
        return _safety_backup(current, tag, self.progress)

    def render(self) -> set[str]:
        self._begin("render", "re-rendering with your edits merged")
        report = stackfiles.render(self.root)
        if report.conflicts:
            raise UsageError(
                "update stopped before touching the running stack: the new version's "
                f"templates conflict with your edits in {', '.join(report.conflicts)}",
                hint=f"the merged candidate is beside each file as FILE{CANDIDATE_SUFFIX}; "
                "edit FILE to the result you want, then run `mailstack update` again",
            )
        return report.services_with_changed_config()

    def build(self) -> None:
        new = self._begin("build", "building the new images (the stack keeps serving)")
        lifecycle.build(new, self.progress)

    def build_images(self, names: list[str], plans: Mapping[str, packageplan.Plan]) -> None:
        """Only these images, from these plans (the security path); recorded in .env."""
        new = self._begin("build", f"building {', '.join(names)} (the stack keeps serving)")
        result = builder.build_current(
            names,
            apt_sources=new.config.images.apt_sources_path,
            progress=self.progress,
            plans=plans,
        )
        imagerefs.write(self.root, result.references)

    def migrate(self) -> list[str]:
        new = self._begin("migrate", "schema migrations")
        if not migrations.pending_in(new.compose):
            return []
        self.records.dump_database(new)
        self.state.migrated = True
        self.records.save(self.state)
        return migrations.migrate(new.compose)

    def recreate(self, config_changed: set[str]) -> None:
        new = self._begin("recreate", "recreating the services that changed, one at a time")
        for service in recreate_order(new):
            if not _needs_recreate(new, service, config_changed):
                continue
            _say(self.progress, f"recreating {service}")
            self.state.recreated.append(service)
            self.records.save(self.state)
            force = ["--force-recreate"] if service in config_changed else []
            new.compose.run(["up", "--detach", "--no-deps", *force, service], timeout=600)
            lifecycle.wait_healthy(new, [service], self.health_timeout, self.progress)
        new.compose.run(["up", "--detach", "--remove-orphans"], timeout=600)

    def verify(self) -> str:
        new = self._begin("verify", "verifying: every service healthy, a real mail round trip")
        lifecycle.wait_healthy(new, None, self.health_timeout, self.progress)
        return str(probe.stack_round_trip(new))

    def roll_back(self, failure: BaseException) -> BaseException:
        """Roll back after `failure`; return the error to raise."""
        _say(self.progress, f"update failed at '{self.state.step}': rolling back")
        try:
            _rollback(
                Stack.load(self.root),
                self.records,
                self.state,
                self.progress,
                self.health_timeout,
            )
        except MailstackError as second:
            return error_after_rollback(self.state, failure, second)
        return error_after_rollback(self.state, failure, None)


def error_after_rollback(
    state: UpdateState, failure: BaseException, rollback_failure: MailstackError | None
) -> BaseException:
    """What a failed update raises once its rollback ran (pure): the interruption itself
    after Ctrl-C, else what failed and what serves now; when the rollback failed too, both
    failures and how to retry (the state file is kept for that)."""
    step, to_version = state.step, state.to_version
    if rollback_failure is not None:
        return UpdateFailed(
            f"update to {to_version} failed at '{step}' ({_first_line(failure)}), and the "
            f"rollback failed too: {rollback_failure.message}",
            hint=f"the state is kept in {STATE_DIR}/{UPDATE_DIR}/; run `mailstack update` "
            "again to retry the rollback",
        )
    if isinstance(failure, KeyboardInterrupt):
        return failure
    if state.kind == "security":
        return UpdateFailed(
            f"security update failed at '{step}': {_first_line(failure)}; rolled back, the "
            "previous images are serving again",
            hint="see `mailstack logs SERVICE` for the failing service's logs",
        )
    return UpdateFailed(
        f"update to {to_version} failed at '{step}': {_first_line(failure)}; rolled back, "
        f"mailstack {state.from_version} is serving again",
        hint="see `mailstack logs SERVICE` for the failing service's logs",
    )


def roll_back_interrupted(
    root: Path, records: UpdateRecords, progress: Progress | None, health_timeout: float
) -> str | None:
    leftover = records.load()
    if leftover is None:
        return None
    what = "security update" if leftover.kind == "security" else f"update to {leftover.to_version}"
    _say(progress, f"an earlier {what} stopped at step '{leftover.step}': rolling it back first")
    _rollback(Stack.load(root), records, leftover, progress, health_timeout)
    return f"rolled back the interrupted update (it had reached '{leftover.step}')"


def preflight(current: Stack) -> None:
    current.dir.require_no_conflicts()
    docker.available()
    status = lifecycle.status(current)
    unhealthy = [
        s.service
        for s in status.services
        if not (s.state == "running" and s.health in ("healthy", ""))
    ]
    if not status.services:
        raise UsageError(
            "the stack is not running: update moves a running stack",
            hint="`mailstack up` first (or `mailstack render` + `up` for a stopped stack)",
        )
    if unhealthy:
        raise UsageError(
            f"the stack is not healthy ({', '.join(unhealthy)}): update starts only from a "
            "healthy stack",
            hint="see `mailstack status` and `mailstack logs SERVICE`",
        )
    free = _docker_free_bytes()
    if free is not None and free < MIN_FREE_BYTES:
        raise UsageError(
            f"only {free // 1024**2} MiB free for Docker's images; an update needs at least "
            f"{MIN_FREE_BYTES // 1024**3} GiB",
            hint="free disk space (e.g. `docker image prune` for unused images), then retry",
        )


def recreate_order(current: Stack) -> list[str]:
    defined = sorted(current.compose.images())
    known = [name for name in SERVICE_ORDER if name in defined]
    others = [name for name in defined if name not in SERVICE_ORDER]
    # Unknown (newer) services go before the MTA, which stays last.
    mta = services.POSTFIX.name
    return [*[n for n in known if n != mta], *others, *[n for n in known if n == mta]]


def _needs_recreate(new: Stack, service: str, config_changed: set[str]) -> bool:
    if service in config_changed:
        return True
    running = _running_image_ids(new).get(service)
    wanted = new.compose.images().get(service, "")
    return running is None or running != DOCKER.image_id(wanted)


# --- rollback ----------------------------------------------------------------------------------


def _rollback(
    current: Stack,
    records: UpdateRecords,
    state: UpdateState,
    progress: Progress | None,
    health_timeout: float,
) -> None:
    records.restore_tree()
    previous = Stack.load(current.dir.root)
    if state.migrated:
        _say(progress, "restoring the database from before the migrations")
        records.restore_database(previous)
    touched = sorted(set(state.recreated))
    _say(progress, "bringing back the previous version's services")
    previous.compose.run(["up", "--detach", "--remove-orphans"], timeout=600)
    if touched:
        previous.compose.run(
            ["up", "--detach", "--no-deps", "--force-recreate", *touched], timeout=600
        )
    lifecycle.wait_healthy(previous, None, health_timeout, progress)
    records.clear()


# --- records of one update ---------------------------------------------------------------------


class UpdateRecords:
    """.mailstack/update/: the state file, the tree as it was, the database dump."""

    def __init__(self, stack_dir: StackDir) -> None:
        self.stack_dir = stack_dir
        self.dir = stack_dir.state_dir / UPDATE_DIR

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def load(self) -> UpdateState | None:
        if not self.state_file.exists():
            return None
        try:
            return UpdateState(**json.loads(self.state_file.read_text()))
        except (ValueError, TypeError) as e:
            raise MailstackError(
                f"{self.state_file} is damaged ({e})",
                hint="restore the stack directory from a backup",
            ) from None

    def begin(self, state: UpdateState) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(mode=0o700, parents=True)
        self._save_tree()
        self.save(state)

    def save(self, state: UpdateState) -> None:
        atomic_write(self.state_file, state.to_json(), 0o600)

    def step(self, state: UpdateState, step: str) -> None:
        state.step = step
        self.save(state)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # The tree: every file the manifest knows, compose.yaml, and .mailstack's own records.
    def _tracked(self) -> set[str]:
        return set(self.stack_dir.manifest().files) | {"compose.yaml", imagerefs.ENV_FILE}

    def _save_tree(self) -> None:
        files = self.dir / "tree"
        listing: dict[str, int] = {}
        for path in sorted(self._tracked()):
            source = self.stack_dir.root / path
            if source.is_file():
                target = files / path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
                listing[path] = source.stat().st_mode & 0o777
        atomic_write(self.dir / "tree.json", json.dumps(listing, sort_keys=True).encode(), 0o600)
        records = self.dir / "records"
        state_dir = self.stack_dir.state_dir
        for name in ("manifest.json", "base", "pending"):
            source = state_dir / name
            if source.is_dir():
                shutil.copytree(source, records / name)
            elif source.is_file():
                records.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, records / name)

    def restore_tree(self) -> None:
        listing_file = self.dir / "tree.json"
        if not listing_file.exists():
            return  # the update stopped before it saved anything: nothing was changed
        listing: dict[str, int] = json.loads(listing_file.read_text())
        for path in sorted(self._tracked() - set(listing)):
            # Written by the new render only.
            with contextlib.suppress(FileNotFoundError):
                (self.stack_dir.root / path).unlink()
        for path, mode in listing.items():
            atomic_write(self.stack_dir.root / path, (self.dir / "tree" / path).read_bytes(), mode)
        records = self.dir / "records"
        state_dir = self.stack_dir.state_dir
        for name in ("base", "pending"):
            shutil.rmtree(state_dir / name, ignore_errors=True)
            if (records / name).is_dir():
                shutil.copytree(records / name, state_dir / name)
        if (records / "manifest.json").is_file():
            atomic_write(
                state_dir / "manifest.json", (records / "manifest.json").read_bytes(), 0o600
            )

    # The database, dumped before migrations (custom format, restored with pg_restore).
    @property
    def dump_file(self) -> Path:
        return self.dir / "mail-before-migrations.pgdump"

    def dump_database(self, current: Stack) -> None:
        dump = current.compose.exec(
            psql.DB_SERVICE,
            ["pg_dump", "--format=custom", "--dbname", psql.DATABASE],
            user="postgres",
            timeout=600,
        )
        atomic_write(self.dump_file, dump, 0o600)

    def restore_database(self, current: Stack) -> None:
        """Put the directory back exactly as dumped: whatever the migrations created goes
        too (a plain --clean restore would leave their new tables behind)."""
        current.compose.run(["up", "--detach", "--no-deps", psql.DB_SERVICE], timeout=600)
        lifecycle.wait_healthy(current, [psql.DB_SERVICE], HEALTH_TIMEOUT, None)
        sql = current.compose.exec(
            psql.DB_SERVICE,
            ["pg_restore", "--file=-"],
            input=self.dump_file.read_bytes(),
            user="postgres",
            timeout=600,
        )
        reset = b"DROP SCHEMA public CASCADE;\n"
        if b"CREATE SCHEMA public;" not in sql:
            # PostgreSQL's own defaults for the public schema, which pg_dump does not dump.
            reset += (
                b"CREATE SCHEMA public;\nALTER SCHEMA public OWNER TO pg_database_owner;\n"
                b"GRANT USAGE ON SCHEMA public TO PUBLIC;\n"
            )
        current.compose.exec(
            psql.DB_SERVICE,
            ["psql", "--quiet", "--no-psqlrc", "--set", "ON_ERROR_STOP=1",
             "--single-transaction", "--dbname", psql.DATABASE],
            input=reset + sql,
            user="postgres",
            timeout=600,
        )  # fmt: skip


# --- small adapters ----------------------------------------------------------------------------


def _safety_backup(current: Stack, tag: str, progress: Progress | None) -> str:
    def report(fraction: float, message: str) -> None:
        _say(progress, f"safety snapshot: {message} ({fraction:.0%})")

    try:
        result = creation.create(current, tag=tag, progress=report)
    except MailstackError as e:
        raise UsageError(
            f"the safety snapshot failed: {e.message}",
            hint="fix the backup (`mailstack backup create` shows the same error), or run "
            "`mailstack update --skip-backup` if you have a recent backup of your own",
        ) from None
    return f"{result.snapshot} (tag {tag})"


def _running_image_ids(current: Stack) -> dict[str, str]:
    ids: dict[str, str] = {}
    for state in current.compose.ps():
        if state.state != "running":
            continue
        image = DOCKER.container_image_id(state.container)
        if image is not None:
            ids[state.service] = image
    return ids


def _docker_free_bytes() -> int | None:
    root = DOCKER.root_dir()
    if root is None:
        return None
    try:
        return shutil.disk_usage(root).free
    except OSError:
        return None


def _refuse_downgrade(from_version: str, to_version: str) -> None:
    try:
        older = Version(to_version) < Version(from_version)
    except InvalidVersion:
        return
    if older:
        raise UsageError(
            f"this mailstack is {to_version}, older than the {from_version} that rendered the "
            "stack: update does not downgrade",
            hint=f"install mailstack {from_version} or newer; to go back, restore the "
            "pre-update backup snapshot (`mailstack backup list`)",
        )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _first_line(error: BaseException) -> str:
    if isinstance(error, MailstackError):
        return error.message.splitlines()[0]
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return (str(error) or type(error).__name__).splitlines()[0]


def _say(progress: Progress | None, message: str) -> None:
    if progress:
        progress(message)
