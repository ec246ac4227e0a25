"""Per-module wall time, printed at the end of every run: where CI's minutes go.

A module's time runs from its first test's setup to its last test's teardown, so it includes
the module's own fixtures (a browser, a side stack) and, for the first module that asks for
it, the shared stack's start. The slowest are listed; `MAILSTACK_MODULE_TIMES=FILE` also
writes every module's seconds as JSON.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

_SHOWN = 25


class ModuleTimes:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._module = ""
        self._started = 0.0

    def _close(self) -> None:
        if self._module:
            spent = time.monotonic() - self._started
            self.seconds[self._module] = self.seconds.get(self._module, 0.0) + spent

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        module = nodeid.split("::", 1)[0]
        if module != self._module:
            self._close()
            self._module, self._started = module, time.monotonic()

    def pytest_sessionfinish(self) -> None:
        self._close()
        self._module = ""
        target = os.environ.get("MAILSTACK_MODULE_TIMES")
        if target:
            Path(target).write_text(json.dumps(self.seconds, indent=1, sort_keys=True) + "\n")

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        slowest = sorted(self.seconds.items(), key=lambda item: -item[1])[:_SHOWN]
        if not slowest:
            return
        terminalreporter.section("slowest modules (wall time)")
        for module, seconds in slowest:
            terminalreporter.write_line(f"{seconds:8.1f} s  {module}")
        terminalreporter.write_line(f"{sum(self.seconds.values()):8.1f} s  in all")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(ModuleTimes(), "mailstack-module-times")
