"""Measure a security fix's way into a running stack: from the fix appearing in the suite to
the patched service healthy, the banner gap on port 25, other services' gaps, mail lost.

Usage (as root, on a host prepared by `scripts/setup-host.sh --dev`, with no other stack on
the ports 39xx or the subnets 172.29.103-104):
    .venv/bin/python bench/security_update.py

A sandbox stack builds from the host's Debian sources plus a signed repository served on
this machine (tests/e2e/aptrepo.py) standing in for Debian's security suite. Twice, a newer
build of postsrsd (in the postfix image only) appears there:
  1. `mailstack update --security` (safety snapshot, build, health-gated recreate, round trip);
  2. the baseline: `mailstack build` then `mailstack up`, the plain path (no snapshot, no gate,
     no verification).
Meanwhile probes open a connection every 100 ms to 25 and 587 (waiting for the 220 banner)
and to 993 and 443 (connect), and an outside sender delivers a message every 200 ms,
retrying on 4xx and connection errors as an MTA would. Prints one figure per line.
"""

from __future__ import annotations

import datetime
import itertools
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mailstack.images import aptsources  # noqa: E402
from mailstack.images.imagetags import DEBIAN_IMAGE  # noqa: E402
from tests.e2e.aptrepo import LocalAptRepository, changelog_entry, download, repack  # noqa: E402
from tests.e2e.sidestack import PASSWORD, SideStack  # noqa: E402
from tests.e2e.steady import SteadySender  # noqa: E402

PROJECT = "mailstack-bench-security"
PORTS = {
    "smtp": 3925, "submission": 3987, "submissions": 3965, "imap": 3943,
    "imaps": 3993, "http": 3980, "https": 3944, "managesieve": 3990,
}  # fmt: skip
DOMAIN = "example.test"
PACKAGE = "postsrsd"


@dataclass
class PortProbe:
    """Connects every 100 ms; records when the port answered (with `banner`, if given)."""

    port: int
    banner: bytes = b""
    stop: threading.Event = field(default_factory=threading.Event)
    seen: list[float] = field(default_factory=list)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.settimeout(1)
                    if not self.banner or sock.recv(64).startswith(self.banner):
                        self.seen.append(time.monotonic())
            except OSError:
                pass
            time.sleep(0.1)

    def longest_gap(self, start: float, end: float) -> float:
        points = [start, *[t for t in self.seen if start <= t <= end], end]
        return max(b - a for a, b in itertools.pairwise(points))


def cli(root: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mailstack", *args, "--dir", str(root)],
        cwd=REPO, input=stdin, text=True, capture_output=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"mailstack {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def compose(root: Path, *args: str) -> str:
    return subprocess.run(
        ["docker", "compose", "--project-name", PROJECT, "--project-directory", str(root),
         "--file", str(root / "compose.yaml"), *args],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip


def healthy_with(root: Path, service: str, image: str) -> bool:
    container = compose(root, "ps", "--quiet", service).strip()
    if not container:
        return False
    out = subprocess.run(
        ["docker", "inspect", "--format", "{{.Config.Image}} {{.State.Health.Status}}", container],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    return out[:1] != [image] and out[1:] == ["healthy"]


def round_trip_figures(
    root: Path, name: str, published: float, apply: list[list[str]], sender: SteadySender
) -> None:
    old = compose(root, "images", "--format", "json")
    old_postfix = next(i for i in json.loads(old) if i["ContainerName"].endswith("-postfix-1"))
    old_image = f"{old_postfix['Repository']}:{old_postfix['Tag']}"
    probes = {
        "25 (banner)": PortProbe(PORTS["smtp"], b"220"),
        "587 (banner)": PortProbe(PORTS["submission"], b"220"),
        "993 (connect)": PortProbe(PORTS["imaps"]),
        "443 (connect)": PortProbe(PORTS["https"]),
    }
    threads = [threading.Thread(target=p.run, daemon=True) for p in probes.values()]
    for thread in threads:
        thread.start()
    patched_at: list[float] = []

    def watch() -> None:
        while not patched_at:
            if healthy_with(root, "postfix", old_image):
                patched_at.append(time.monotonic())
            time.sleep(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    for command in apply:
        cli(root, *command)
    ended = time.monotonic()
    watcher.join(timeout=120)
    time.sleep(1)
    for probe in probes.values():
        probe.stop.set()
    print(f"{name}: commands took {ended - started:.1f} s")
    if patched_at:
        print(
            f"{name}: fix published -> patched postfix healthy: {patched_at[0] - published:.1f} s"
        )
    for label, probe in probes.items():
        print(f"{name}: longest gap on {label}: {probe.longest_gap(started, ended):.1f} s")
    print(
        f"{name}: sender handed over {len(sender.sent)} messages so far ({sender.retries} retries)"
    )


def main() -> None:  # one linear scenario
    with tempfile.TemporaryDirectory() as temp:
        base = Path(temp)
        repository = LocalAptRepository(base / "repository")
        repository.publish([])
        with repository.serve():
            root = base / "stack"
            subprocess.run(
                [sys.executable, "-m", "mailstack", "init", "--non-interactive", "--sandbox",
                 "--bind", "127.0.0.1", "--hostname", f"mail.{DOMAIN}", "--domain", DOMAIN,
                 "--dir", str(root)], cwd=REPO, check=True, capture_output=True,
            )  # fmt: skip
            entries = aptsources.image_sources(aptsources.configured_sources(None))
            host = base / "host.sources"
            host.write_text(
                aptsources.render_deb822(entries, {k: k for k in aptsources.keyring_files(entries)})
            )
            sources = base / "apt.sources"
            sources.write_text(host.read_text() + "\n" + repository.sources_entry())
            config = yaml.safe_load((root / "mailstack.yaml").read_text())
            config["project"] = PROJECT
            config["features"]["antivirus"] = False
            config["network"].update(
                frontend_subnet="172.29.103.0/24", backend_subnet="172.29.104.0/24", ports=PORTS
            )
            config["backup"]["target"] = str(base / "backups")
            config["images"] = {"apt_sources": str(sources)}
            config.setdefault("policy", {}).setdefault("rate_limits", {}).update(
                client_connections_per_minute=0, client_ip_burst=0
            )
            (root / "mailstack.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            cli(root, "render")
            try:
                cli(root, "up", "--timeout", "600")
                mailbox = f"bench@{DOMAIN}"
                cli(root, "mailbox", "add", mailbox, "--password-stdin", stdin=PASSWORD + "\n")
                original = download(PACKAGE, DEBIAN_IMAGE, host, base / "original")
                installed = compose(
                    root, "exec", "-T", "postfix", "dpkg-query", "-W", "-f", "${Version}", PACKAGE
                ).strip()
                side = SideStack(root, PROJECT, PORTS, mailbox)
                sender = SteadySender(side.send)
                sender.start()
                time.sleep(2)
                for number, (name, apply) in enumerate(
                    [
                        ("update --security", [["update", "--security"]]),
                        ("baseline build + up", [["build"], ["up"]]),
                    ],
                    start=1,
                ):
                    version = f"{installed.split('+b')[0]}+deb12u1bench{number}"
                    entry = changelog_entry(
                        PACKAGE, version, "bookworm-security", [f"Fix CVE-2099-{number:04d}."],
                        datetime.datetime.now(datetime.UTC),
                    )  # fmt: skip
                    repository.publish([repack(original, base / version, version, entry)])
                    round_trip_figures(root, name, time.monotonic(), apply, sender)
                time.sleep(2)
                sender.finish()
                deadline = time.monotonic() + 180
                while True:
                    received = side.subjects()
                    missing = set(sender.sent) - set(received)
                    if not missing or time.monotonic() > deadline:
                        break
                    time.sleep(2)
                duplicates = len(received) - len(set(received))
                print(
                    f"messages lost: {len(missing)} of {len(sender.sent)}; duplicated: {duplicates}"
                )
            finally:
                compose(root, "down", "--volumes", "--remove-orphans")
                subprocess.run(["docker", "volume", "rm", "--force", f"{PROJECT}-backup-cache"],
                               check=False, capture_output=True)  # fmt: skip


if __name__ == "__main__":
    main()
