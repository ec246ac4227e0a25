"""How a check judges one item: the one scale `check dns` and `check tls` (and what comes
after them) report on. Exit codes live beside the errors (mailstack.errors)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Verdict(StrEnum):
    """Written as shown: a failure stands out in a column of passes."""

    PASS = "pass"  # noqa: S105  # a verdict, not a password
    WARN = "warn"
    FAIL = "FAIL"


PASS, WARN, FAIL = Verdict.PASS, Verdict.WARN, Verdict.FAIL


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """FAIL over WARN over PASS; nothing judged is a pass."""
    found = set(verdicts)
    return FAIL if FAIL in found else WARN if WARN in found else PASS
