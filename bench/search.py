"""Measure IMAP SEARCH BODY on a running stack, with or without full-text search
(features.search): how long a search over N messages takes, and how big the index is
beside the mail.

Usage (as root, with a stack up; run it once with features.search on and once off for the
figures side by side — the mailbox and its mail stay between runs):
    .venv/bin/python bench/search.py --dir STACK [--messages 10000] [--searches 20]

It makes the mailbox bench-search@<the stack's first domain> if missing (a fixed password:
never on a stack that serves real users), appends messages until it holds N (each body with
ordinary words and one rare word of 200), then times SEARCH BODY for different rare words and
prints one figure per line.
"""

from __future__ import annotations

import argparse
import imaplib
import random
import ssl
import statistics
import subprocess
import time
from pathlib import Path

import yaml

PASSWORD = "Bench-search-42-quokka"  # noqa: S105  # a bench account on a bench stack
RARE_WORDS = 200
COMMON = [
    "budget",
    "figures",
    "quarterly",
    "meeting",
    "report",
    "invoice",
    "project",
    "schedule",
    "review",
    "update",
]


def mailstack(root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mailstack", *args, "--dir", str(root)],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def rare(number: int) -> str:
    return f"rareword{number % RARE_WORDS:03d}x"


def message(number: int) -> bytes:
    chooser = random.Random(number)  # filler text, not security
    words = " ".join(chooser.choice(COMMON) for _ in range(60))
    return (
        f"From: Bench <bench@sender.example>\r\nTo: bench-search@example.test\r\n"
        f"Subject: note {number}\r\nMessage-ID: <bench-{number}@sender.example>\r\n\r\n"
        f"{words} {rare(number)} {words}\r\n"
    ).encode()


def connect(port: int, context: ssl.SSLContext, address: str) -> imaplib.IMAP4_SSL:
    imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context)
    imap.login(address, PASSWORD)
    return imap


def fill(imap: imaplib.IMAP4_SSL, wanted: int) -> float:
    """Append until INBOX holds `wanted` messages; the seconds it took (0 when it did)."""
    have = int(imap.select("INBOX")[1][0] or 0)
    started = time.monotonic()
    for number in range(have, wanted):
        status, _ = imap.append("INBOX", "", None, message(number))
        if status != "OK":
            raise SystemExit(f"APPEND failed at message {number}")
        if number and number % 1000 == 0:
            print(f"  appended {number} messages", flush=True)
    return time.monotonic() - started if have < wanted else 0.0


def du_kib(root: Path, path: str) -> int | None:
    out = subprocess.run(
        # As the mail user: root in the container has no DAC override (docs: SECURITY.md).
        ["docker", "compose", "exec", "-T", "--user", "vmail", "dovecot", "du", "-sk", path],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    return int(out.stdout.split()[0]) if out.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--searches", type=int, default=20)
    arguments = parser.parse_args()
    root = arguments.dir.resolve()
    config = yaml.safe_load((root / "mailstack.yaml").read_text())
    search_on = bool((config.get("features") or {}).get("search"))
    port = int(((config.get("network") or {}).get("ports") or {}).get("imaps", 993))
    domain = str(config["domain"])
    address = f"bench-search@{domain}"
    added = mailstack(root, "mailbox", "add", address, "--password-stdin", stdin=PASSWORD + "\n")
    if added.returncode != 0 and "exists" not in added.stdout + added.stderr:
        raise SystemExit(f"mailbox add: {added.stderr.strip()}")
    context = ssl.create_default_context(cafile=str(root / "tls" / "ca.pem"))
    context.check_hostname = False  # 127.0.0.1; the chain is still verified
    print(f"features.search: {'on' if search_on else 'off'}; {arguments.messages} messages")
    with connect(port, context, address) as imap:
        took = fill(imap, arguments.messages)
        if took:
            print(f"appending: {took:.1f} s ({arguments.messages / took:.0f} messages/s)")
        imap.select("INBOX", readonly=True)
        first = time.monotonic()
        status, data = imap.uid("SEARCH", "BODY", rare(1))
        print(f"first SEARCH BODY (indexes what is missing): {time.monotonic() - first:.2f} s")
        if status != "OK" or len(data[0].split()) != arguments.messages // RARE_WORDS:
            raise SystemExit(f"SEARCH BODY {rare(1)}: {status} {len(data[0].split())} hits")
        times = []
        for word in range(2, 2 + arguments.searches):
            started = time.monotonic()
            status, data = imap.uid("SEARCH", "BODY", rare(word))
            times.append(time.monotonic() - started)
            assert status == "OK" and data[0]
    print(f"SEARCH BODY, median of {len(times)}: {statistics.median(times) * 1000:.0f} ms")
    print(f"SEARCH BODY, slowest: {max(times) * 1000:.0f} ms")
    local = "bench-search"
    mail = du_kib(root, f"/var/mail/{domain}/{local}/Maildir")
    index = du_kib(root, f"/var/mail-index/{domain}/{local}/xapian-indexes") if search_on else None
    print(f"the mail (encrypted): {mail} KiB" if mail is not None else "the mail: unknown")
    if index is not None:
        print(
            f"the full-text index: {index} KiB ({index / mail * 100:.0f} % of the mail)"
            if mail
            else f"the full-text index: {index} KiB"
        )


if __name__ == "__main__":
    main()
