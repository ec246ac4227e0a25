"""Measure the stack: cold build → healthy, warm `up --wait` → healthy, idle memory.

Usage (as root, on a host prepared by scripts/setup-host.sh):
    .venv/bin/python bench/stack.py [--cold] [--antivirus] [--runs N]

--cold removes mailstack's images first (the base image too), so the build starts from
debootstrap; otherwise only the warm path is measured. Prints one figure per line.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT = "mailstack-bench"
PORTS = {
    "smtp": 3525,
    "submission": 3587,
    "submissions": 3465,
    "imap": 3143,
    "imaps": 3993,
    "http": 3080,
    "https": 3443,
}


def cli(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "mailstack", *args], check=True, stdout=subprocess.DEVNULL
    )


def timed(*args: str) -> float:
    started = time.monotonic()
    cli(*args)
    return time.monotonic() - started


def idle_memory_mib(settle: float) -> tuple[float, dict[str, float]]:
    time.sleep(settle)
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    per: dict[str, float] = {}
    for line in out.splitlines():
        name, usage = line.split(" ", 1)
        if not name.startswith(PROJECT):
            continue
        per[name.removeprefix(PROJECT + "-")] = _mib(usage.split("/")[0].strip())
    return sum(per.values()), per


def _mib(text: str) -> float:
    units = {
        "B": 1 / 2**20,
        "KiB": 1 / 1024,
        "MiB": 1,
        "GiB": 1024,
        "kB": 1 / 1024,
        "MB": 1,
        "GB": 1024,
    }
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--antivirus", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=30.0)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp) / "stack"
        cli(
            "init",
            "--non-interactive",
            "--sandbox",
            "--bind",
            "127.0.0.1",
            "--hostname",
            "mail.example.test",
            "--domain",
            "example.test",
            "--dir",
            str(root),
        )
        config = yaml.safe_load((root / "mailstack.yaml").read_text())
        config["project"] = PROJECT
        config["features"]["antivirus"] = options.antivirus
        config["network"].update(
            frontend_subnet="172.29.95.0/24", backend_subnet="172.29.96.0/24", ports=PORTS
        )
        (root / "mailstack.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        cli("render", "--dir", str(root))
        try:
            if options.cold:
                images = subprocess.run(
                    [
                        "docker",
                        "images",
                        "--format",
                        "{{.Repository}}:{{.Tag}}",
                        "--filter",
                        "reference=mailstack/*",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()
                subprocess.run(
                    ["docker", "rmi", "--force", *images], check=False, capture_output=True
                )
                subprocess.run(
                    ["docker", "builder", "prune", "--all", "--force"],
                    check=False,
                    capture_output=True,
                )
                cold = timed("up", "--dir", str(root), "--timeout", "600")
                print(f"cold build+up to healthy: {cold:.1f} s")
                cli("down", "--dir", str(root))
            warm = []
            for _ in range(options.runs):
                warm.append(timed("up", "--dir", str(root)))
                cli("down", "--dir", str(root))
            print(
                f"warm up --wait to healthy: median {statistics.median(warm):.1f} s "
                f"(min {min(warm):.1f}, max {max(warm):.1f}, runs {len(warm)})"
            )
            cli("up", "--dir", str(root))
            total, per = idle_memory_mib(options.settle)
            label = "on" if options.antivirus else "off"
            print(f"idle memory, antivirus {label}: {total:.0f} MiB")
            for name, value in sorted(per.items()):
                print(f"  {name}: {value:.0f} MiB")
        finally:
            subprocess.run(
                ["docker", "compose", "-p", PROJECT, "down", "--volumes"],
                check=False,
                capture_output=True,
            )


if __name__ == "__main__":
    main()
