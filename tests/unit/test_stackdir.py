"""Re-rendering a stack directory keeps operator edits (the README's decision table)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailstack.errors import UnresolvedConflicts, UsageError
from mailstack.stack.merge import Action
from mailstack.stack.stackdir import CANDIDATE_SUFFIX, StackDir, atomic_write

V1 = {"a.conf": b"one\ntwo\nthree\n", "config/x/b.conf": b"alpha\nbeta\n"}


def apply(root: Path, rendered: dict[str, bytes]) -> dict[str, Action]:
    report = StackDir(root).apply_render(rendered, "test", {})
    return {outcome.path: outcome.action for outcome in report.outcomes}


def test_first_render_writes_every_file(tmp_path: Path) -> None:
    actions = apply(tmp_path, V1)
    assert actions == {"a.conf": Action.WRITE, "config/x/b.conf": Action.WRITE}
    assert (tmp_path / "a.conf").read_bytes() == V1["a.conf"]


def test_rerender_without_change_touches_nothing(tmp_path: Path) -> None:
    apply(tmp_path, V1)
    before = {p: (tmp_path / p).stat().st_mtime_ns for p in V1}
    actions = apply(tmp_path, V1)
    assert set(actions.values()) == {Action.UNCHANGED}
    assert {p: (tmp_path / p).stat().st_mtime_ns for p in V1} == before


def test_edit_is_kept_byte_for_byte_when_template_unchanged(tmp_path: Path) -> None:
    apply(tmp_path, V1)
    edited = b"one\ntwo  # mine\nthree\n"
    (tmp_path / "a.conf").write_bytes(edited)
    assert apply(tmp_path, V1)["a.conf"] is Action.KEEP
    assert (tmp_path / "a.conf").read_bytes() == edited


def test_edit_and_template_change_are_merged(tmp_path: Path) -> None:
    apply(tmp_path, V1)
    (tmp_path / "a.conf").write_bytes(b"one\ntwo\nthree\nmine\n")
    new = {**V1, "a.conf": b"ONE\ntwo\nthree\n"}
    assert apply(tmp_path, new)["a.conf"] is Action.MERGED
    assert (tmp_path / "a.conf").read_bytes() == b"ONE\ntwo\nthree\nmine\n"
    # And the merged file is now the operator's: a re-render keeps it.
    assert apply(tmp_path, new)["a.conf"] is Action.KEEP


def test_conflict_leaves_file_untouched_writes_candidate_and_blocks(tmp_path: Path) -> None:
    apply(tmp_path, V1)
    mine = b"one\nTWO (mine)\nthree\n"
    (tmp_path / "a.conf").write_bytes(mine)
    new = {**V1, "a.conf": b"one\nTWO (template)\nthree\n"}
    report = StackDir(tmp_path).apply_render(new, "test", {})
    assert report.conflicts == ("a.conf",)
    assert (tmp_path / "a.conf").read_bytes() == mine
    candidate = (tmp_path / ("a.conf" + CANDIDATE_SUFFIX)).read_bytes()
    assert b"<<<<<<<" in candidate and b"TWO (mine)" in candidate and b"TWO (template)" in candidate
    with pytest.raises(UnresolvedConflicts):
        StackDir(tmp_path).require_no_conflicts()
    # Re-rendering again does not make the conflict disappear silently.
    assert StackDir(tmp_path).apply_render(new, "test", {}).conflicts == ("a.conf",)


def test_resolve_accepts_operator_result_and_next_render_keeps_it(tmp_path: Path) -> None:
    apply(tmp_path, V1)
    (tmp_path / "a.conf").write_bytes(b"one\nTWO (mine)\nthree\n")
    new = {**V1, "a.conf": b"one\nTWO (template)\nthree\n"}
    apply(tmp_path, new)
    stack = StackDir(tmp_path)
    with pytest.raises(UsageError, match="conflict markers"):
        (tmp_path / "a.conf").write_bytes((tmp_path / ("a.conf" + CANDIDATE_SUFFIX)).read_bytes())
        stack.resolve(["a.conf"])
    resolved = b"one\nTWO (both)\nthree\n"
    (tmp_path / "a.conf").write_bytes(resolved)
    assert stack.resolve([str(tmp_path / "a.conf")]) == ["a.conf"]
    stack.require_no_conflicts()
    assert not (tmp_path / ("a.conf" + CANDIDATE_SUFFIX)).exists()
    assert apply(tmp_path, new)["a.conf"] is Action.KEEP
    assert (tmp_path / "a.conf").read_bytes() == resolved


def test_resolve_refuses_a_file_without_conflict(tmp_path: Path) -> None:
    apply(tmp_path, V1)
    with pytest.raises(UsageError, match="no unresolved conflict"):
        StackDir(tmp_path).resolve(["a.conf"])


def test_operator_deleted_file_is_not_recreated_and_is_reported(tmp_path: Path) -> None:
    apply(tmp_path, V1)
    (tmp_path / "a.conf").unlink()
    report = StackDir(tmp_path).apply_render({**V1, "a.conf": b"changed\n"}, "test", {})
    assert not (tmp_path / "a.conf").exists()
    assert report.deleted_by_operator == ("a.conf",)
    assert StackDir(tmp_path).manifest().deleted_by_operator == ["a.conf"]


def test_file_dropped_by_template_deleted_only_if_unedited(tmp_path: Path) -> None:
    apply(tmp_path, V1)
    (tmp_path / "config/x/b.conf").write_bytes(b"alpha\nbeta\nmine\n")
    report = StackDir(tmp_path).apply_render({}, "test", {})
    assert not (tmp_path / "a.conf").exists()
    assert (tmp_path / "config/x/b.conf").read_bytes() == b"alpha\nbeta\nmine\n"
    assert report.kept_dropped == ("config/x/b.conf",)


def test_operator_files_under_config_are_never_touched(tmp_path: Path) -> None:
    apply(tmp_path, V1)
    own = tmp_path / "config/x/mine.conf"
    own.write_bytes(b"operator's own\n")
    apply(tmp_path, {**V1, "config/x/b.conf": b"new\n"})
    assert own.read_bytes() == b"operator's own\n"


def test_added_by_both_is_merged_against_empty_base(tmp_path: Path) -> None:
    apply(tmp_path, V1)
    (tmp_path / "new.conf").write_bytes(b"operator wrote this\n")
    report = StackDir(tmp_path).apply_render({**V1, "new.conf": b"template wrote this\n"}, "t", {})
    assert report.conflicts == ("new.conf",)
    assert (tmp_path / "new.conf").read_bytes() == b"operator wrote this\n"


def test_crash_mid_render_leaves_whole_files_and_rerender_converges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    many = {f"f{i}.conf": f"version one {i}\n".encode() for i in range(10)}
    apply(tmp_path, many)
    newer = {path: content.replace(b"one", b"two") for path, content in many.items()}
    real_replace = os.replace
    calls = {"n": 0}

    def failing_replace(src: str, dst: str) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        StackDir(tmp_path).apply_render(newer, "test", {})
    monkeypatch.setattr(os, "replace", real_replace)
    for path, old in many.items():
        assert (tmp_path / path).read_bytes() in (old, newer[path])
    assert not list(tmp_path.glob(".*.tmp"))
    apply(tmp_path, newer)
    for path in many:
        assert (tmp_path / path).read_bytes() == newer[path]
    assert set(apply(tmp_path, newer).values()) == {Action.UNCHANGED}


def test_atomic_write_sets_mode_before_the_file_appears(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    atomic_write(target, b"x", 0o600)
    assert target.stat().st_mode & 0o777 == 0o600
