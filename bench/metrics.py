"""Measure the metrics service (monitoring.metrics) on a running stack: its memory at idle
and after scrapes, and how long a scrape takes.

Usage (as root, with a stack up whose mailstack.yaml has monitoring.metrics: true):
    .venv/bin/python bench/metrics.py --dir STACK [--scrapes N]

It starts nothing: it reads the stack's project, port and token, asks `docker stats` for the
metrics container's memory, scrapes N times and prints one figure per line.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml


def container_memory_mib(project: str, service: str) -> float:
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        name, usage = line.split(" ", 1)
        if name == f"{project}-{service}-1":
            return mib(usage.split("/")[0].strip())
    raise SystemExit(f"no running container {project}-{service}-1")


def mib(text: str) -> float:
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / 1024 / 1024}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text.removesuffix(unit)) * factor
    raise ValueError(text)


def scrape_seconds(url: str, token: str) -> float:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310  # the stack's own port
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310  # as above
        response.read()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--scrapes", type=int, default=20)
    arguments = parser.parse_args()
    config = yaml.safe_load((arguments.dir / "mailstack.yaml").read_text())
    monitoring = config.get("monitoring") or {}
    if not monitoring.get("metrics"):
        raise SystemExit("monitoring.metrics is off in that stack")
    project = config.get("project", "mailstack")
    url = (
        f"http://{monitoring.get('metrics_address', '127.0.0.1')}:"
        f"{monitoring.get('metrics_port', 9154)}/metrics"
    )
    token = (arguments.dir / "secrets" / "metrics_token").read_text().strip()
    print(f"metrics container, idle: {container_memory_mib(project, 'metrics'):.1f} MiB")
    times = [scrape_seconds(url, token) for _ in range(arguments.scrapes)]
    print(f"scrape, median of {len(times)}: {statistics.median(times) * 1000:.0f} ms")
    print(f"scrape, slowest: {max(times) * 1000:.0f} ms")
    print(
        f"metrics container, after the scrapes: {container_memory_mib(project, 'metrics'):.1f} MiB"
    )


if __name__ == "__main__":
    main()
