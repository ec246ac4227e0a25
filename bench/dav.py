"""Measure calendars and contacts (features.dav) on a running stack: the dav container's
memory at idle and after a burst of requests, and how long a signed-in PROPFIND takes (the
first asks Dovecot; the rest are remembered for a minute).

Usage (as root, with a stack up whose features.dav is on):
    .venv/bin/python bench/dav.py --dir STACK [--requests 50]

It makes the mailbox bench-dav@<the stack's first domain> if missing (a fixed password: never
on a stack that serves real users) and prints one figure per line.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import ssl
import statistics
import subprocess
import time
from pathlib import Path

import yaml
from metrics import container_memory_mib  # bench/metrics.py, beside this script

PASSWORD = "Bench-dav-42-calendar"  # noqa: S105  # a bench account on a bench stack


def propfind_seconds(port: int, context: ssl.SSLContext, host: str, address: str) -> float:
    token = base64.b64encode(f"{address}:{PASSWORD}".encode()).decode()
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60)
    started = time.monotonic()
    connection.request(
        "PROPFIND",
        f"/dav/{address}/",
        headers={"Host": host, "Authorization": f"Basic {token}", "Depth": "1"},
    )
    response = connection.getresponse()
    response.read()
    connection.close()
    if response.status != 207:
        raise SystemExit(f"PROPFIND answered {response.status}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=50)
    arguments = parser.parse_args()
    root = arguments.dir.resolve()
    config = yaml.safe_load((root / "mailstack.yaml").read_text())
    project = str(config.get("project", "mailstack"))
    port = int(((config.get("network") or {}).get("ports") or {}).get("https", 443))
    address = f"bench-dav@{config['domain']}"
    subprocess.run(
        ["mailstack", "mailbox", "add", address, "--password-stdin", "--dir", str(root)],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    context = ssl.create_default_context(cafile=str(root / "tls" / "ca.pem"))
    context.check_hostname = False  # 127.0.0.1; the chain is still verified
    print(f"dav container, idle: {container_memory_mib(project, 'dav'):.1f} MiB")
    first = propfind_seconds(port, context, config["hostname"], address)
    print(f"first PROPFIND (Dovecot checks the password): {first * 1000:.0f} ms")
    times = [
        propfind_seconds(port, context, config["hostname"], address)
        for _ in range(arguments.requests)
    ]
    print(f"PROPFIND, median of {len(times)}: {statistics.median(times) * 1000:.0f} ms")
    print(f"PROPFIND, slowest: {max(times) * 1000:.0f} ms")
    print(f"dav container, after: {container_memory_mib(project, 'dav'):.1f} MiB")


if __name__ == "__main__":
    main()
