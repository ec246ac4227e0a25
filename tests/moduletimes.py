"""Per-module time, printed at the end of every run: where CI's minutes go.

A module's time is the sum of its tests' setup, call and teardown, so it includes the module's
own fixtures (a browser, a side stack) and, for the first module that asks for it, the shared
stack's start. Summed from the tests' reports, it is the same under pytest-xdist, where two
modules run at once. `MAILSTACK_MODULE_TIMES=FILE` also writes every module's seconds as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_SHOWN = 25


class ModuleTimes:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        module = report.nodeid.split("::", 1)[0]
        self.seconds[module] = self.seconds.get(module, 0.0) + report.duration

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        target = os.environ.get("MAILSTACK_MODULE_TIMES")
        if target:
            Path(target).write_text(json.dumps(self.seconds, indent=1, sort_keys=True) + "\n")
        slowest = sorted(self.seconds.items(), key=lambda item: -item[1])[:_SHOWN]
        if not slowest:
            return
        terminalreporter.section("slowest modules (setup, call and teardown summed)")
        for module, seconds in slowest:
            terminalreporter.write_line(f"{seconds:8.1f} s  {module}")
        terminalreporter.write_line(f"{sum(self.seconds.values()):8.1f} s  in all")


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller alone, under pytest-xdist
        config.pluginmanager.register(ModuleTimes(), "mailstack-module-times")
