"""The stack directory on disk: atomic writes, the .mailstack/ records, applying a render.

Layout of a stack directory:
    mailstack.yaml         the operator's file
    secrets/               generated secrets (0700 / 0600)
    tls/                   the stack's CA and certificates (keys 0600)
    overrides/<service>/   the operator's own settings; mailstack never writes here
    compose.yaml, config/  generated files (operator edits are merged on re-render)
    .mailstack/            manifest.json, base/ (last clean render), pending/ (conflicts)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailstack.adapters.compose import Compose
from mailstack.errors import MailstackError, StackNotInitialized, UnresolvedConflicts, UsageError
from mailstack.stack.config import CONFIG_FILE, Config, load_config
from mailstack.stack.merge import Action, decide, has_conflict_markers

STATE_DIR = ".mailstack"
MANIFEST_SCHEMA = 1
CANDIDATE_SUFFIX = ".mailstack-merge"
OVERRIDE_SERVICES = (
    "postfix", "dovecot", "rspamd", "front", "resolver", "redis", "bans", "webmail", "dav",
)  # fmt: skip


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write via a temp file in the same directory and rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)  # noqa: PTH101  # on the temp path before it becomes visible
        os.replace(temporary, path)  # noqa: PTH105  # one syscall on two str paths
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)  # noqa: PTH108
        raise


@dataclass
class Manifest:
    """What mailstack last rendered, and what needs the operator's attention."""

    version: str = ""
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of the base
    conflicts: list[str] = field(default_factory=list)
    deleted_by_operator: list[str] = field(default_factory=list)
    kept_dropped: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        document = {"schema": MANIFEST_SCHEMA, **self.__dict__}
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        document = migrate_manifest(json.loads(raw))
        document.pop("schema")
        return cls(**document)


def migrate_manifest(document: dict[str, Any]) -> dict[str, Any]:
    """Bring an older manifest to the current schema (schema 1 is the first)."""
    schema = document.get("schema", 1)
    if schema > MANIFEST_SCHEMA:
        raise MailstackError(
            f"{STATE_DIR}/manifest.json was written by a newer mailstack (schema {schema})",
            hint="upgrade mailstack before working on this stack",
        )
    return document


@dataclass(frozen=True)
class FileOutcome:
    path: str
    action: Action


@dataclass(frozen=True)
class RenderReport:
    outcomes: tuple[FileOutcome, ...]
    conflicts: tuple[str, ...]
    deleted_by_operator: tuple[str, ...]
    kept_dropped: tuple[str, ...]

    def changed(self) -> list[FileOutcome]:
        quiet = {Action.UNCHANGED, Action.KEEP}
        return [outcome for outcome in self.outcomes if outcome.action not in quiet]

    def services_with_changed_config(self) -> set[str]:
        """The services whose config/<service>/ tree this render changed."""
        changed: set[str] = set()
        for outcome in self.changed():
            parts = outcome.path.split("/")
            if len(parts) > 2 and parts[0] == "config":
                changed.add(parts[1])
        return changed


class StackDir:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def compose_file(self) -> Path:
        return self.root / "compose.yaml"

    def is_initialized(self) -> bool:
        return self.config_path.is_file()

    def require(self) -> StackDir:
        if not self.is_initialized():
            raise StackNotInitialized(self.root)
        return self

    def load_config(self) -> Config:
        self.require()
        return load_config(self.config_path)

    # --- records ------------------------------------------------------------------------------

    def manifest(self) -> Manifest:
        path = self.state_dir / "manifest.json"
        if not path.exists():
            return Manifest()
        try:
            return Manifest.from_json(path.read_bytes())
        except (ValueError, TypeError) as e:
            raise MailstackError(
                f"{path} is damaged ({e})", hint="restore it from a backup"
            ) from None

    def _save_manifest(self, manifest: Manifest) -> None:
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        atomic_write(self.state_dir / "manifest.json", manifest.to_json(), 0o600)

    def _base(self, path: str) -> bytes | None:
        return _read_or_none(self.state_dir / "base" / path)

    def _set_base(self, path: str, content: bytes | None) -> None:
        target = self.state_dir / "base" / path
        if content is None:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
        elif _read_or_none(target) != content:
            atomic_write(target, content, 0o600)

    def ensure_override_dirs(self) -> None:
        for service in OVERRIDE_SERVICES:
            (self.root / "overrides" / service).mkdir(parents=True, exist_ok=True)

    # --- applying a render -----------------------------------------------------------------------

    def apply_render(
        self, rendered: Mapping[str, bytes], version: str, inputs: dict[str, Any]
    ) -> RenderReport:
        """Write a new render, merging operator edits (README: "How your edits survive")."""
        previous = self.manifest()
        paths = sorted(set(previous.files) | set(rendered))
        outcomes: list[FileOutcome] = []
        conflicts: list[str] = []
        deleted: list[str] = []
        kept_dropped: list[str] = []
        files: dict[str, str] = {}
        for path in paths:
            _check_relative(path)
            on_disk = self.root / path
            decision = decide(self._base(path), _read_or_none(on_disk), rendered.get(path))
            action = decision.action
            if action in (Action.WRITE, Action.MERGED):
                assert decision.content is not None  # noqa: S101  # decide() contract
                atomic_write(on_disk, decision.content, _mode_of(on_disk))
            elif action is Action.DELETE:
                on_disk.unlink()
            elif action is Action.CONFLICT:
                assert decision.content is not None  # noqa: S101  # decide() contract
                atomic_write(self.root / (path + CANDIDATE_SUFFIX), decision.content)
                atomic_write(self.state_dir / "pending" / path, rendered[path], 0o600)
                conflicts.append(path)
            elif action is Action.DELETED_BY_OPERATOR:
                deleted.append(path)
            elif action is Action.KEPT_DROPPED:
                kept_dropped.append(path)
            if action is not Action.CONFLICT:
                self._clear_pending(path)
            self._set_base(path, decision.new_base)
            if decision.new_base is not None:
                files[path] = hashlib.sha256(decision.new_base).hexdigest()
            outcomes.append(FileOutcome(path, action))
        self._save_manifest(Manifest(version, files, conflicts, deleted, kept_dropped, inputs))
        return RenderReport(tuple(outcomes), tuple(conflicts), tuple(deleted), tuple(kept_dropped))

    def _clear_pending(self, path: str) -> None:
        for leftover in (self.state_dir / "pending" / path, self.root / (path + CANDIDATE_SUFFIX)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()

    def require_no_conflicts(self) -> None:
        conflicts = self.manifest().conflicts
        if conflicts:
            raise UnresolvedConflicts(conflicts)

    def resolve(self, paths: Iterable[str]) -> list[str]:
        """Mark conflicts resolved: the operator's file becomes the accepted result."""
        manifest = self.manifest()
        resolved: list[str] = []
        for given in paths:
            path = self._relative(given)
            if path not in manifest.conflicts:
                raise UsageError(
                    f"{path}: has no unresolved conflict",
                    hint=f"conflicts: {', '.join(manifest.conflicts) or 'none'}",
                )
            current = _read_or_none(self.root / path)
            if current is not None and has_conflict_markers(current):
                raise UsageError(
                    f"{path}: still contains conflict markers (<<<<<<< … >>>>>>>)",
                    hint="edit the file to the content you want, then resolve again",
                )
            pending = _read_or_none(self.state_dir / "pending" / path)
            self._set_base(path, pending)
            if pending is not None:
                manifest.files[path] = hashlib.sha256(pending).hexdigest()
            self._clear_pending(path)
            manifest.conflicts.remove(path)
            resolved.append(path)
        self._save_manifest(manifest)
        return resolved

    def _relative(self, given: str) -> str:
        candidate = Path(given)
        absolute = candidate if candidate.is_absolute() else Path.cwd() / candidate
        if not absolute.exists() and not candidate.is_absolute():
            absolute = self.root / candidate
        try:
            path = absolute.resolve().relative_to(self.root).as_posix()
        except ValueError:
            raise UsageError(f"{given}: is not inside the stack directory {self.root}") from None
        return path.removesuffix(CANDIDATE_SUFFIX)


def _check_relative(path: str) -> None:
    # Defence in depth: rendered paths come from our own templates.
    if path.startswith("/") or ".." in Path(path).parts:
        raise MailstackError(f"refusing to write outside the stack directory: {path}")


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _mode_of(path: Path) -> int:
    """Keep an existing file's permissions (the operator may have tightened them)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o644


@dataclass(frozen=True)
class Stack:
    """A loaded stack: its directory, its validated config and the Compose adapter for its
    project. Every command that works on a stack starts from `Stack.load`."""

    dir: StackDir
    config: Config
    compose: Compose

    @classmethod
    def load(cls, root: Path) -> Stack:
        stack_dir = StackDir(root).require()
        config = stack_dir.load_config()
        return cls(stack_dir, config, Compose(stack_dir.root, config.project))
