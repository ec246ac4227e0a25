"""Debian version comparison, as dpkg does it (deb-version(7)): epoch, upstream, revision."""

from __future__ import annotations

import functools


def compare(left: str, right: str) -> int:
    """-1, 0 or 1 as `left` sorts before, equal to or after `right`."""
    left_epoch, left_upstream, left_revision = _split(left)
    right_epoch, right_upstream, right_revision = _split(right)
    if left_epoch != right_epoch:
        return -1 if left_epoch < right_epoch else 1
    return _compare_part(left_upstream, right_upstream) or _compare_part(
        left_revision, right_revision
    )


def newer(candidate: str, installed: str) -> bool:
    return compare(candidate, installed) > 0


sort_key = functools.cmp_to_key(compare)


def _split(version: str) -> tuple[int, str, str]:
    epoch, colon, rest = version.partition(":")
    if not colon:
        epoch, rest = "0", version
    upstream, dash, revision = rest.rpartition("-")
    if not dash:
        upstream, revision = rest, ""
    return (int(epoch) if epoch.isdigit() else 0), upstream, revision


def _order(character: str) -> int:
    """dpkg's order of a non-digit: ~ before everything, even the end; letters before others."""
    if character == "~":
        return -1
    if character.isalpha():
        return ord(character)
    return ord(character) + 256


def _compare_part(left: str, right: str) -> int:
    i = j = 0
    while i < len(left) or j < len(right):
        # The non-digit runs, character by character (the end of a run sorts as 0).
        while (i < len(left) and not left[i].isdigit()) or (
            j < len(right) and not right[j].isdigit()
        ):
            a = _order(left[i]) if i < len(left) and not left[i].isdigit() else 0
            b = _order(right[j]) if j < len(right) and not right[j].isdigit() else 0
            if a != b:
                return -1 if a < b else 1
            i += 1
            j += 1
        # Then the digit runs, as numbers.
        start_i, start_j = i, j
        while i < len(left) and left[i].isdigit():
            i += 1
        while j < len(right) and right[j].isdigit():
            j += 1
        a_number = int(left[start_i:i] or "0")
        b_number = int(right[start_j:j] or "0")
        if a_number != b_number:
            return -1 if a_number < b_number else 1
    return 0
