"""Fixtures shared by the unit tests of the CLI."""

from __future__ import annotations

import pytest

from mailstack.stack.stackdir import Stack


@pytest.fixture
def untouchable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any access to the stack (and so to the database) fails the test: the command's input
    rules must refuse before it."""

    def load(root: object) -> None:
        raise AssertionError("the stack was loaded: validation came too late")

    monkeypatch.setattr(Stack, "load", load)
