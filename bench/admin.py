"""Measure the admin service (issue 16): its idle memory, the REST API's latency and the web
admin's page load.

Usage (as root, on a host prepared by scripts/setup-host.sh, with no other stack using
the ports 37xx or the subnets 172.29.105-106):
    .venv/bin/python bench/admin.py [--requests 50] [--mailboxes 1000] [--settle 30]

A sandbox stack of its own (project mailstack-bench-admin) is started. Figures:
1. the admin container's memory (`docker stats`) after --settle seconds idle, before any
   request, and again after the requests below;
2. GET /api/v1/mailboxes listing --mailboxes mailboxes (loaded with `mailstack accounts
   import` of a generated file: one Argon2id hash shared by all, made once), --requests
   sequential requests;
3. POST /api/v1/mailboxes creating one mailbox, --requests sequential requests; beside it,
   passwords.hash_password alone in the admin container (Debian's python3-argon2), the
   share of a creation that is the Argon2id hash;
4. the web admin's mailbox list (/admin/mailboxes, all of them on one page) loaded in
   Debian's Chromium (Playwright, the end-to-end tests' network namespace), signed in as an
   administrator with password and TOTP (pyotp): --page-loads loads, each timed from the
   navigation's start to its load event.
Requests go over HTTPS through the front (stack CA checked, Host header), each on a new
connection (TLS handshake included, as a script with curl would) and each on one kept-alive
connection (the API's own cost). Times are the client's, from request to the full body.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyotp
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mailstack.accounts import passwords  # noqa: E402

PROJECT = "mailstack-bench-admin"
PORTS = {
    "smtp": 3725, "submission": 3787, "submissions": 3765, "imap": 3743,
    "imaps": 3793, "http": 3780, "https": 3744, "managesieve": 3790,
}  # fmt: skip
SUBNETS = ("172.29.105.0/24", "172.29.106.0/24")
DOMAIN = "example.test"
HOSTNAME = f"mail.{DOMAIN}"
PASSWORD = "Bench-admin 42 mailbox"  # noqa: S105  # bench accounts
GOAL_MEMORY_MIB = 60
GOAL_P99_MS = 100
GOAL_PAGE_LOAD_MS = 1000
CHROMIUM = "/usr/bin/chromium"
BROWSER = REPO / "tests" / "e2e" / "chromium_netns.py"  # see that file
CONNECTIONS = ((False, "a new TLS connection each"), (True, "one kept-alive connection"))


def cli(root: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        [sys.executable, "-m", "mailstack", *args, "--dir", str(root)],
        cwd=REPO, input=stdin, text=True, check=True, capture_output=True,
    ).stdout  # fmt: skip


def compose(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", "--project-name", PROJECT, "--project-directory", str(root),
         "--file", str(root / "compose.yaml"), *args],
        text=True, capture_output=True, check=check,
    )  # fmt: skip


def machine() -> str:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    kib = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
    return f"machine: {os.cpu_count()} cores, {kib / 2**20:.1f} GiB memory, load {_load()}"


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: p99 of 50 values is the largest."""
    ordered = sorted(values)
    rank = max(1, -(-int(fraction * 1000) * len(ordered) // 1000))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: list[float], unit: str = "ms") -> str:
    return (
        f"min {min(values):.1f} / median {statistics.median(values):.1f} / "
        f"p50 {percentile(values, 0.50):.1f} / p99 {percentile(values, 0.99):.1f} / "
        f"max {max(values):.1f} {unit} (n={len(values)})"
    )


def verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "NOT met"


# --- memory -------------------------------------------------------------------------------


def memory_mib(container: str) -> float:
    usage = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container],
        capture_output=True, text=True, check=True,
    ).stdout.split("/")[0].strip()  # fmt: skip
    units = {"GiB": 1024.0, "MiB": 1.0, "KiB": 1 / 1024, "B": 1 / 2**20}
    for unit, factor in units.items():
        if usage.endswith(unit):
            return float(usage[: -len(unit)]) * factor
    raise ValueError(f"docker stats: unexpected memory figure {usage!r}")


def memory_samples(container: str, count: int = 5) -> list[float]:
    samples = []
    for _ in range(count):
        samples.append(memory_mib(container))
        time.sleep(1)
    return samples


# --- the API ------------------------------------------------------------------------------


class Client:
    """HTTPS requests to the API through the front's published port."""

    def __init__(self, context: ssl.SSLContext, token: str, *, keep_alive: bool) -> None:
        self.context = context
        self.token = token
        self.keep_alive = keep_alive
        self.connection: http.client.HTTPSConnection | None = None

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Host": HOSTNAME, "Authorization": f"Bearer {self.token}"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.connection is None or not self.keep_alive:
            self.close()
            self.connection = http.client.HTTPSConnection(
                "127.0.0.1", PORTS["https"], context=self.context, timeout=60
            )
        self.connection.request(method, path, body=payload, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
        if not self.keep_alive:
            self.close()
        return json.loads(data)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def timed_ms(requests: int, one: Callable[[int], object]) -> list[float]:
    times = []
    for number in range(requests):
        started = time.perf_counter()
        one(number)
        times.append((time.perf_counter() - started) * 1000)
    return times


def load_mailboxes(root: Path, count: int) -> float:
    """Add `count` mailboxes in one `accounts import` (the export plus generated entries);
    returns the import's seconds."""
    shared_hash = passwords.hash_password(PASSWORD)  # one hash: listing never verifies it
    with tempfile.TemporaryDirectory() as temp:
        path = Path(temp) / "accounts.yaml"
        cli(root, "accounts", "export", str(path))
        document = yaml.safe_load(path.read_text())
        document["mailboxes"] += [
            {"address": f"user{number:04d}@{DOMAIN}", "password_hash": shared_hash, "quota": "1G"}
            for number in range(count)
        ]
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        started = time.monotonic()
        cli(root, "accounts", "import", str(path))
        return time.monotonic() - started


HASH_TIMING = """
import time, statistics
from mailstack.accounts import passwords
times = []
for _ in range({count}):
    started = time.perf_counter()
    passwords.hash_password({password!r})
    times.append((time.perf_counter() - started) * 1000)
print(" ".join(f"{{t:.3f}}" for t in times))
"""


QUERY_TIMING = """
import time
from mailstack.adapters import psql
from mailstack.adapters.pgconnection import PgConnection
executor = PgConnection()
psql.query(executor, {sql!r})  # the connection opened, not counted (the service keeps it)
times = []
for _ in range({count}):
    started = time.perf_counter()
    psql.query(executor, {sql!r})
    times.append((time.perf_counter() - started) * 1000)
print(" ".join(f"{{t:.3f}}" for t in times))
"""


def in_container_ms(root: Path, script: str) -> list[float]:
    # As the API's user, in the running container (its Python, python3-argon2, python3-psycopg).
    out = compose(root, "exec", "-T", "--user", "977", "admin", "python3", "-c", script).stdout
    return [float(value) for value in out.split()]


def hash_times_in_container(root: Path, count: int) -> list[float]:
    return in_container_ms(root, HASH_TIMING.format(count=count, password=PASSWORD))


def query_times_in_container(root: Path, count: int, sql: str) -> list[float]:
    return in_container_ms(root, QUERY_TIMING.format(count=count, sql=sql))


def hash_times_on_host(count: int) -> list[float]:
    return timed_ms(count, lambda _: passwords.hash_password(PASSWORD))


# --- the run ------------------------------------------------------------------------------


def breakdown(root: Path, context: ssl.SSLContext, token: str, requests: int) -> None:
    """Where a GET's time goes: the same connection, less and less work behind it."""
    client = Client(context, token, keep_alive=True)
    steps = (
        ("no token check, no database (GET /api/v1/openapi.json)", "/api/v1/openapi.json"),
        ("token check + an empty list (?domain= a domain with no mailboxes)",
         "/api/v1/mailboxes?domain=empty.example.test"),
    )  # fmt: skip
    for label, path in steps:
        client.request("GET", path)

        def get(_: int, path: str = path) -> None:
            client.request("GET", path)

        print(f"   breakdown, kept-alive: {label}: {summary(timed_ms(requests, get))}")
    client.close()
    selects = query_times_in_container(root, 20, "SELECT 1;")
    print(
        f"   one psql.query('SELECT 1') in the admin container (on its kept-open connection): "
        f"{summary(selects)}"
    )


def spki_pin(cert_file: Path) -> str:
    """Chromium's --ignore-certificate-errors-spki-list value for the stack's certificate."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def page_loads_ms(root: Path, count: int) -> tuple[list[float], int]:
    """Sign in to the web admin as a new administrator (enrolling TOTP), then load the
    mailbox list `count` times; the load times and the rows shown."""
    name = f"bench-{uuid.uuid4().hex[:6]}"
    cli(root, "admin", "add", name, "--password-stdin", stdin=PASSWORD + "\n")
    base = f"https://{HOSTNAME}:{PORTS['https']}/admin/"
    args = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--host-resolver-rules=MAP {HOSTNAME} 127.0.0.1",
        f"--ignore-certificate-errors-spki-list={spki_pin(root / 'tls' / 'cert.pem')}",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(BROWSER),
            env={**os.environ, "MAILSTACK_BROWSER_PORT": str(PORTS["https"])},
            headless=True,
            args=args,
            viewport={"width": 390, "height": 844},
        )
        try:
            page = context.new_page()
            page.goto(base + "signin")
            page.get_by_label("Name").fill(name)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/admin/enrol")
            secret = page.locator("#secret").inner_text().strip()
            page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
            page.get_by_role("button", name="Confirm").click()
            page.wait_for_selector("#recovery-codes")
            page.goto(base + "mailboxes", wait_until="load")  # warm-up, not counted
            times = []
            for _ in range(count):
                page.goto(base + "mailboxes", wait_until="load")
                times.append(
                    float(
                        page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
                    )
                )
            rows = page.locator("tbody tr").count()
        finally:
            context.close()
    return times, rows


def prepare(root: Path) -> None:
    cli(root, "init", "--non-interactive", "--sandbox", "--bind", "127.0.0.1",
        "--hostname", HOSTNAME, "--domain", DOMAIN)  # fmt: skip
    config = yaml.safe_load((root / "mailstack.yaml").read_text())
    config["project"] = PROJECT
    config["features"]["antivirus"] = False
    config["features"]["admin"] = True
    config["network"].update(frontend_subnet=SUBNETS[0], backend_subnet=SUBNETS[1], ports=PORTS)
    (root / "mailstack.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cli(root, "render")


def run(root: Path, options: argparse.Namespace) -> None:
    started = time.monotonic()
    cli(root, "up", "--timeout", "600")
    print(f"stack up (build from cache, every service healthy): {time.monotonic() - started:.1f} s")
    container = compose(root, "ps", "--quiet", "admin").stdout.strip()
    time.sleep(options.settle)
    idle = memory_samples(container)
    print(
        f"1. admin container memory, {options.settle:.0f} s idle after start (docker stats, "
        f"5 samples): {summary(idle, 'MiB')}; goal <= {GOAL_MEMORY_MIB} MiB: "
        f"{verdict(max(idle), GOAL_MEMORY_MIB)}"
    )

    context = ssl.create_default_context(cafile=str(root / "tls" / "ca.pem"))
    context.check_hostname = False  # we connect to 127.0.0.1; the chain is still verified
    created = cli(root, "api", "token", "create", "bench", "--scope", "accounts", "--json")
    token = json.loads(created)["token"]

    seconds = load_mailboxes(root, options.mailboxes)
    listed = Client(context, token, keep_alive=True).request("GET", "/api/v1/mailboxes")
    total = len(listed["mailboxes"])
    print(
        f"   {options.mailboxes} mailboxes loaded by `mailstack accounts import` of a "
        f"generated file in {seconds:.1f} s; the API lists {total}"
    )
    print(f"   load before the requests: {_load()}")
    for keep_alive, label in CONNECTIONS:
        client = Client(context, token, keep_alive=keep_alive)
        client.request("GET", "/api/v1/mailboxes")  # warm-up, not counted

        def list_all(_: int, client: Client = client) -> None:
            client.request("GET", "/api/v1/mailboxes")

        times = timed_ms(options.requests, list_all)
        client.close()
        print(
            f"2. GET /api/v1/mailboxes ({total} mailboxes, {label}): {summary(times)}; "
            f"goal p99 <= {GOAL_P99_MS} ms: {verdict(percentile(times, 0.99), GOAL_P99_MS)}"
        )

    breakdown(root, context, token, options.requests)

    run_id = uuid.uuid4().hex[:6]
    creations: dict[bool, list[float]] = {}
    for keep_alive, label in CONNECTIONS:
        client = Client(context, token, keep_alive=keep_alive)
        prefix = f"api-{run_id}-{'k' if keep_alive else 'n'}"

        def create(number: int, client: Client = client, prefix: str = prefix) -> None:
            body = {"address": f"{prefix}{number:03d}@{DOMAIN}", "password": PASSWORD}
            client.request("POST", "/api/v1/mailboxes", body)

        times = timed_ms(options.requests, create)
        client.close()
        creations[keep_alive] = times
        print(
            f"3. POST /api/v1/mailboxes (one Argon2id hash each, {label}): {summary(times)}; "
            f"goal p99 <= {GOAL_P99_MS} ms: {verdict(percentile(times, 0.99), GOAL_P99_MS)}"
        )
    in_container = hash_times_in_container(root, 20)
    on_host = hash_times_on_host(20)
    share = statistics.median(in_container) / statistics.median(creations[True])
    print(
        f"   passwords.hash_password alone (Argon2id, {passwords.MEMORY_KIB // 1024} MiB, "
        f"t={passwords.TIME_COST}, p={passwords.PARALLELISM}), in the admin container: "
        f"{summary(in_container)}"
    )
    print(f"   the same on the host (argon2-cffi of the venv): {summary(on_host)}")
    print(
        f"   the hash is {share:.0%} of a creation's median (kept-alive connection); "
        f"the rest: {statistics.median(creations[True]) - statistics.median(in_container):.1f} ms"
    )
    after = memory_samples(container)
    print(f"1b. admin container memory after the requests: {summary(after, 'MiB')}")
    print(f"   load after the requests: {_load()}")
    if not Path(CHROMIUM).exists():
        print("4. page load in Chromium: skipped, Debian's chromium is missing (setup-host --dev)")
        return
    loads, listed_rows = page_loads_ms(root, options.page_loads)
    print(
        f"4. /admin/mailboxes in Chromium ({listed_rows} rows, signed in with password + "
        f"TOTP), navigation start to load event: {summary(loads)}; goal <= "
        f"{GOAL_PAGE_LOAD_MS} ms: {verdict(max(loads), GOAL_PAGE_LOAD_MS)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--mailboxes", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--page-loads", type=int, default=20)
    options = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp) / "stack"
        prepare(root)
        try:
            run(root, options)
        finally:
            compose(root, "down", "--volumes", "--remove-orphans", check=False)


if __name__ == "__main__":
    main()
