"""Measure `mailstack check health` on a running stack: the command's wall time (a new
process each run, as an operator or a timer runs it) and the check's own time, min / median /
max over several runs, and the slowest items of the last run. Goal: ≤ 5 s on the default
stack (issue 18).

Usage (as root, a stack up and healthy, e.g. the one an e2e session of slot N runs):
    .venv/bin/python bench/health.py --dir STACK [--runs N]

Prints one figure per line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run_once(root: Path) -> tuple[float, dict[str, Any]]:
    """(wall seconds, the --json report) of one `check health`."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mailstack", "check", "health", "--json", "--dir", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    if result.returncode not in (0, 1, 6):
        raise SystemExit(f"check health exited {result.returncode}: {result.stderr.strip()}")
    report: dict[str, Any] = json.loads(result.stdout)
    return wall, report


def spread(values: list[float]) -> str:
    return (
        f"min {min(values):.2f} s, median {statistics.median(values):.2f} s, "
        f"max {max(values):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="the running stack's directory")
    parser.add_argument("--runs", type=int, default=7)
    options = parser.parse_args()
    walls: list[float] = []
    checks: list[float] = []
    report: dict[str, Any] = {}
    for _ in range(options.runs):
        wall, report = run_once(options.dir)
        walls.append(wall)
        checks.append(float(report["seconds"]))
    print(f"runs: {options.runs}")
    print(f"check health, the command (wall): {spread(walls)}")
    print(f"check health, the check itself: {spread(checks)}")
    print(f"items: {len(report['items'])}, verdict of the last run: {report['verdict']}")
    slowest = sorted(report["items"], key=lambda item: -float(item["seconds"]))[:5]
    print(
        "slowest probes of the last run: "
        + ", ".join(f"{item['name']} {float(item['seconds']):.2f} s" for item in slowest)
    )
    loadavg = Path("/proc/loadavg").read_text(encoding="ascii").split()[:3]
    print(f"load average: {' '.join(loadavg)}")


if __name__ == "__main__":
    main()
