"""Three-way merge of generated files: what a re-render does to one path (pure, no I/O).

Three versions of a path feed each decision: the last clean render (`base`,
stored by mailstack), the file on disk (`ours`, which the operator may have
edited or deleted) and the new render (`theirs`). `None` means absent.
Nothing the operator wrote is ever lost or silently overwritten: an edit is
kept, merged line by line, or shown as a diff3 conflict.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import merge3

_START_MARKER = b"<<<<<<<"
_BASE_MARKER = b"|||||||"
_MID_MARKER = b"======="
_END_MARKER = b">>>>>>>"


class Action(enum.Enum):
    """What a re-render does to one generated path."""

    WRITE = "write"  # write `content` to disk
    KEEP = "keep"  # leave the on-disk file as it is (operator's edit kept byte-for-byte)
    UNCHANGED = "unchanged"  # disk already equals the new render
    DELETE = "delete"  # remove the file (template dropped it and it was unedited)
    DELETED_BY_OPERATOR = "deleted-by-operator"  # operator deleted it; do not re-create; report
    KEPT_DROPPED = "kept-dropped"  # template dropped it but operator edited it: keep, report
    CONFLICT = "conflict"  # content = merge candidate with diff3 conflict markers
    MERGED = "merged"  # clean 3-way merge, write `content`


@dataclass(frozen=True)
class Decision:
    """The action for one path and the base to record afterwards."""

    action: Action
    content: bytes | None = None  # for WRITE, MERGED, CONFLICT
    new_base: bytes | None = None  # what to record as the base afterwards (None = forget the path)
    conflicts: int = 0  # number of conflict regions for CONFLICT


def decide(base: bytes | None, ours: bytes | None, theirs: bytes | None) -> Decision:
    """Decide what a re-render does to one path: the decision table of the README's
    "How your edits survive"."""
    if theirs is None:
        return _decide_dropped(base, ours)
    if ours is None:
        return _decide_missing_on_disk(base, theirs)
    if ours == theirs:
        return Decision(Action.UNCHANGED, new_base=theirs)
    if base is not None and ours == base:
        return Decision(Action.WRITE, content=theirs, new_base=theirs)
    if base == theirs:
        return Decision(Action.KEEP, new_base=theirs)
    return _decide_merge(base, ours, theirs)


def _decide_dropped(base: bytes | None, ours: bytes | None) -> Decision:
    """The template no longer produces this path: delete it only if unedited."""
    if ours is None:
        return Decision(Action.UNCHANGED)
    if ours == base:
        return Decision(Action.DELETE)
    if base is None:
        # A file mailstack never rendered: the operator's own, not ours to manage.
        return Decision(Action.KEEP)
    return Decision(Action.KEPT_DROPPED)


def _decide_missing_on_disk(base: bytes | None, theirs: bytes) -> Decision:
    """The path is not on disk: a new file, or one the operator deleted."""
    if base is None:
        return Decision(Action.WRITE, content=theirs, new_base=theirs)
    # Advance the base so later renders keep honouring the deletion.
    return Decision(Action.DELETED_BY_OPERATOR, new_base=theirs)


def _decide_merge(base: bytes | None, ours: bytes, theirs: bytes) -> Decision:
    """Both sides changed: merge, against an empty file when both added the path."""
    merged, conflicts = merge_three(b"" if base is None else base, ours, theirs)
    if conflicts:
        # Keep the old base: the conflict must reappear until the operator resolves it.
        return Decision(Action.CONFLICT, content=merged, new_base=base, conflicts=conflicts)
    return Decision(Action.MERGED, content=merged, new_base=theirs)


def merge_three(
    base: bytes,
    ours: bytes,
    theirs: bytes,
    *,
    ours_label: str = "yours (on disk)",
    theirs_label: str = "new render",
    base_label: str = "last render",
) -> tuple[bytes, int]:
    """Merge line by line with diff3 semantics; return the merged bytes and the conflict count.

    Conflicts are written in diff3 style (ours, `|||||||` base, `=======`, theirs) so the
    operator sees what the template changed. Bytes are never decoded; a last line without a
    newline is kept as it is, and gets one only where a conflict marker must follow it.
    """
    base_lines = base.splitlines(keepends=True)
    our_lines = ours.splitlines(keepends=True)
    their_lines = theirs.splitlines(keepends=True)
    newline = _newline_of(our_lines or their_lines or base_lines)
    merger = merge3.Merge3(
        base_lines, our_lines, their_lines, sequence_matcher=_ExactSequenceMatcher
    )

    output: list[bytes] = []

    def emit_marker(marker: bytes, label: str | None = None) -> None:
        if output and not output[-1].endswith((b"\n", b"\r")):
            output.append(newline)  # a marker must start its own line
        output.append(marker + (b" " + label.encode() if label else b"") + newline)

    conflicts = 0
    for group in merger.merge_groups():
        match group:
            case ("conflict", conflict_base, conflict_ours, conflict_theirs):
                conflicts += 1
                emit_marker(_START_MARKER, ours_label)
                output.extend(conflict_ours)
                emit_marker(_BASE_MARKER, base_label)
                output.extend(conflict_base)
                emit_marker(_MID_MARKER)
                output.extend(conflict_theirs)
                emit_marker(_END_MARKER, theirs_label)
            case (_, lines):
                output.extend(lines)
    return b"".join(output), conflicts


def has_conflict_markers(content: bytes) -> bool:
    """Tell whether `content` still holds a conflict block (start, separator, end, in order)."""
    expected = (_START_MARKER, _MID_MARKER, _END_MARKER)
    found = 0
    for line in content.splitlines():
        if _is_marker_line(line, expected[found]):
            found += 1
            if found == len(expected):
                return True
    return False


def _is_marker_line(line: bytes, marker: bytes) -> bool:
    return line == marker or line.startswith(marker + b" ")


def _newline_of(lines: Sequence[bytes]) -> bytes:
    """The line ending to use for conflict markers: the file's own, CRLF or LF."""
    for line in lines:
        if line.endswith(b"\r\n"):
            return b"\r\n"
        if line.endswith(b"\n"):
            return b"\n"
    return b"\n"


class _ExactSequenceMatcher:
    """difflib's matcher with the autojunk heuristic off, shaped as merge3 expects.

    With autojunk, lines frequent in a file of 200+ lines (blank lines, `}`) cannot anchor a
    match, so nearby edits fuse into needless conflicts in long daemon configs.
    """

    def __init__(
        self,
        isjunk: Callable[[bytes], bool] | None = None,
        a: Sequence[bytes] = (),
        b: Sequence[bytes] = (),
        autojunk: bool = False,  # accepted for merge3's protocol; always off
    ) -> None:
        self._matcher = difflib.SequenceMatcher(isjunk, a, b, autojunk=False)

    def get_matching_blocks(self) -> list[tuple[int, int, int]]:
        return [(block.a, block.b, block.size) for block in self._matcher.get_matching_blocks()]
