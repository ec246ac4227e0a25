"""Measure mail throughput and delivery latency through the running stack, port 25 to mailbox.

Usage (as root, on a host prepared by scripts/setup-host.sh):
    .venv/bin/python bench/throughput.py [--messages 1000] [--sessions 10] [--antivirus]

A sandbox stack of its own (project mailstack-bench-throughput, ports 36xx, subnets
172.29.97.0/24 and 172.29.98.0/24) is started; the load generator is Postfix's smtp-source,
run in a container of its own made from the stack's postfix image and attached to the
stack's frontend network only. Its address is therefore an ordinary outside client: not in
Postfix's mynetworks (postscreen, the recipient checks and the milter all apply) and not in
rspamd's local_addrs (every inbound check runs). smtp-source inside the postfix container
would connect from 127.0.0.1, which both trust, and skip most of the work being measured.

Every message is distinct (subject, Message-ID, a 6 KB PDF attachment with random content),
so no cache (rspamd's antivirus verdicts in Redis) makes repeated mail cheaper than real mail.
smtp-source sends each prepared message; a small bash driver in the load container starts
one smtp-source per message, keeping --sessions of them in flight (throughput) or starting
one every 1/rate seconds (latency). Delivery time is when Dovecot stored the message: the
maildir file name (seconds and microseconds, the host's clock) of each delivered message on
the mail volume; the subject read back with doveadm maps it to its send time.

Phases, in one run:
  1. full path, rspamd on (the default stack; antivirus off): --messages as fast as possible
  2. raw path: the same with the milter switched off by an operator override
     (overrides/postfix/main.cf: smtpd_milters = / non_smtpd_milters =, postfix restarted)
  3. latency: full path, a steady --rate messages per second for --latency-seconds
  4. with --antivirus: features.antivirus on (clamav started), the full path again
The stack's rate limits are turned off in its mailstack.yaml: from one client address the
defaults (100 messages, 60 connections a minute) would answer 4xx long before any limit of
the host is reached. Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

PROJECT = "mailstack-bench-throughput"
DOMAIN = "example.test"
SENDER = "bench@sender.example"
LOAD = f"{PROJECT}-load"
PORTS = {
    "smtp": 3625,
    "submission": 3687,
    "submissions": 3665,
    "imap": 3643,
    "imaps": 3693,
    "http": 3680,
    "https": 3644,
    "managesieve": 3690,
}
SUBNETS = ("172.29.97.0/24", "172.29.98.0/24")
PASSWORD = "Bench-only-password-42"  # noqa: S105  # throwaway sandbox mailboxes
MAILDIR_NAME = re.compile(r"^(\d+)\.M(\d+)P")

# Runs in the load container. `prepare TAG COUNT RECIPIENT` writes COUNT distinct messages;
# `send TAG COUNT SESSIONS INTERVAL_US` hands each to its own smtp-source, either keeping
# SESSIONS in flight (INTERVAL_US 0) or starting one every INTERVAL_US microseconds.
DRIVER = r"""
set -u
mode=$1 tag=$2 count=$3
dir=/tmp/$tag
if [[ $mode == prepare ]]; then
    recipient=$4
    mkdir -p "$dir"
    for ((i = 0; i < count; i++)); do
        {
            printf 'From: Bench Sender <%s>\nTo: <%s>\n' "$SENDER" "$recipient"
            printf 'Subject: bench %s %d\nDate: %s\n' "$tag" "$i" "$(date -R)"
            printf 'Message-ID: <%s.%d.%s@sender.example>\n' "$tag" "$i" "$RANDOM$RANDOM"
            printf 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b-%d"\n\n' "$i"
            printf -- '--b-%d\nContent-Type: text/plain; charset=utf-8\n\n' "$i"
            printf 'Hello,\n\nplease find the quarterly report number %d attached.\n' "$i"
            printf 'Let me know if anything is missing.\n\nRegards,\nBench Sender\n\n'
            printf -- '--b-%d\nContent-Type: application/pdf; name="report-%d.pdf"\n' "$i" "$i"
            printf 'Content-Disposition: attachment; filename="report-%d.pdf"\n' "$i"
            printf 'Content-Transfer-Encoding: base64\n\n'
            { printf '%%PDF-1.4\n%% report %d\n' "$i"; head -c 4500 /dev/urandom | base64;
              printf '%%%%EOF\n'; } | base64 -w 76
            printf -- '\n--b-%d--\n' "$i"
        } > "$dir/$i.eml"
    done
    exit 0
fi
sessions=$4 interval=$5
running=0
recipient=$(head -1 "$dir/rcpt")
# Each smtp-source that fails prints "fatal:" on stderr; the caller counts those.
finish() {
    local status=0
    wait -n || status=$?
    if ((status == 127)) && [[ -z $(jobs -rp) ]]; then running=0; else running=$((running - 1)); fi
}
start=${EPOCHREALTIME/./}
echo "start $start"
for ((i = 0; i < count; i++)); do
    if ((interval > 0)); then
        target=$((start + i * interval)) now=${EPOCHREALTIME/./}
        if ((target > now)); then
            wait_us=$((target - now))
            sleep "$((wait_us / 1000000)).$(printf '%06d' $((wait_us % 1000000)))"
        fi
    fi
    while ((running >= sessions)); do finish; done
    echo "sent $i ${EPOCHREALTIME/./}"
    smtp-source -M load.sender.example -f "$SENDER" -t "$recipient" -F "$dir/$i.eml" \
        postfix:25 </dev/null &
    running=$((running + 1))
done
wait
echo "end ${EPOCHREALTIME/./}"
"""


@dataclass(frozen=True)
class Stack:
    root: Path

    def cli(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "mailstack", *args, "--dir", str(self.root)],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"mailstack {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def compose(self, *args: str) -> str:
        return subprocess.run(
            ["docker", "compose", "-p", PROJECT, "--project-directory", str(self.root), *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def set_config(self, change: dict[str, dict[str, object]]) -> None:
        path = self.root / "mailstack.yaml"
        config = yaml.safe_load(path.read_text())
        for section, values in change.items():
            config.setdefault(section, {}).update(values)
        path.write_text(yaml.safe_dump(config, sort_keys=False))


def docker(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["docker", *args], input=stdin, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"docker {' '.join(args[:3])} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def mailbox(stack: Stack, name: str) -> str:
    address = f"{name}@{DOMAIN}"
    stack.cli("mailbox", "add", address, "--password-stdin", stdin=PASSWORD + "\n")
    return address


def base_name(name: str) -> str:
    """A maildir file name without its size fields and flags: Dovecot's GUID for it."""
    return name.split(":", 1)[0].split(",", 1)[0]


def delivered(volume: Path, address: str) -> dict[str, float]:
    """{maildir base name: delivery time} of every message in every folder of the mailbox."""
    local = address.split("@", 1)[0]
    found: dict[str, float] = {}
    for folder, _, files in os.walk(volume / DOMAIN / local / "Maildir"):
        if Path(folder).name not in ("new", "cur"):
            continue
        for name in files:
            match = MAILDIR_NAME.match(name)
            if match:
                found[base_name(name)] = int(match[1]) + int(match[2]) / 1e6
    return found


def wait_delivered(volume: Path, address: str, count: int, timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        found = delivered(volume, address)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(found)} of {count} messages reached {address}")
        time.sleep(0.5)


def driver_argv(*args: str) -> list[str]:
    """`docker exec` of the load driver (DRIVER, on stdin) in the load container."""
    return ["docker", "exec", "-i", "-e", f"SENDER={SENDER}", LOAD, "bash", "-s", "--", *args]


def send(tag: str, count: int, sessions: int, interval_us: int) -> tuple[list[str], int]:
    """Run the driver's send phase; return its output lines and the number of failures."""
    result = subprocess.run(
        driver_argv("send", tag, str(count), str(sessions), str(interval_us)),
        input=DRIVER,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = result.stdout.splitlines()
    if result.returncode != 0 or not lines or not lines[-1].startswith("end "):
        raise SystemExit(f"the load driver failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    errors = [line for line in result.stderr.splitlines() if "fatal:" in line]
    for line in errors[:5]:
        sys.stderr.write(line + "\n")
    return lines, len(errors)


def prepare(tag: str, count: int, recipient: str) -> None:
    docker(*driver_argv("prepare", tag, str(count), recipient)[1:], stdin=DRIVER)
    docker("exec", "-i", LOAD, "bash", "-c", f"cat > /tmp/{tag}/rcpt", stdin=recipient + "\n")


@dataclass(frozen=True)
class Throughput:
    accepted_per_s: float
    delivered_per_s: float
    failed: int


def throughput(volume: Path, tag: str, recipient: str, count: int, sessions: int) -> Throughput:
    prepare(tag, count, recipient)
    lines, failed = send(tag, count, sessions, 0)
    start = int(lines[0].split()[1]) / 1e6
    end = int(lines[-1].split()[1]) / 1e6
    found = wait_delivered(volume, recipient, count - failed, timeout=600)
    last = max(found.values())
    return Throughput((count - failed) / (end - start), len(found) / (last - start), failed)


def warm_up(volume: Path, recipient: str) -> None:
    """One message first: postscreen's greeting test delays a new client's first connection
    (postscreen_greet_wait) and then remembers it; that is not throughput."""
    before = len(delivered(volume, recipient))
    tag = f"warm{before}"
    prepare(tag, 1, recipient)
    send(tag, 1, 1, 0)
    wait_delivered(volume, recipient, before + 1, timeout=120)


def latency(stack: Stack, volume: Path, recipient: str, rate: float, seconds: int) -> list[float]:
    count = int(rate * seconds)
    prepare("latency", count, recipient)
    lines, failed = send("latency", count, 1000, int(1e6 / rate))
    if failed:
        raise SystemExit(f"{failed} of {count} messages were refused during the latency run")
    sent = {
        int(index): int(stamp) / 1e6
        for _, index, stamp in (line.split() for line in lines if line.startswith("sent "))
    }
    found = wait_delivered(volume, recipient, count, timeout=300)
    # The subject (bench latency <i>) of each stored file, read back through Dovecot (the
    # files are encrypted at rest); for maildir, Dovecot's message GUID is the file's base name.
    fetched = stack.compose(
        "exec",
        "-T",
        "dovecot",
        "doveadm",
        "-f",
        "tab",
        "fetch",
        "-u",
        recipient,
        "guid hdr.subject",
        "all",
    )
    latencies = []
    for line in fetched.splitlines()[1:]:
        guid, _, subject = line.partition("\t")
        words = subject.split()
        guid = base_name(guid)
        if guid in found and len(words) == 3 and words[1] == "latency":
            latencies.append(found[guid] - sent[int(words[2])])
    if len(latencies) != count:
        raise SystemExit(
            f"matched {len(latencies)} of {count} delivered messages to their send time"
        )
    return latencies


def milter(stack: Stack, on: bool) -> None:
    override = stack.root / "overrides" / "postfix" / "main.cf"
    if on:
        override.unlink(missing_ok=True)
    else:
        override.parent.mkdir(parents=True, exist_ok=True)
        override.write_text(
            "# bench/throughput.py: the raw Postfix -> Dovecot path, no rspamd\n"
            "smtpd_milters =\nnon_smtpd_milters =\n"
        )
    stack.cli("restart", "postfix")
    value = stack.compose("exec", "-T", "postfix", "postconf", "-h", "smtpd_milters").strip()
    if bool(value) != on:
        raise SystemExit(f"postfix smtpd_milters is {value!r} after the override")


def report(label: str, result: Throughput) -> None:
    failed = f", {result.failed} refused" if result.failed else ""
    print(
        f"{label}: accepted on 25 {result.accepted_per_s:.1f} msg/s, "
        f"delivered to the mailbox {result.delivered_per_s:.1f} msg/s{failed}",
        flush=True,
    )


def create(root: Path) -> Stack:
    """A sandbox stack of this benchmark's own, its rate limits off (see the docstring)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mailstack",
            "init",
            "--non-interactive",
            "--sandbox",
            "--bind",
            "127.0.0.1",
            "--hostname",
            f"mail.{DOMAIN}",
            "--domain",
            DOMAIN,
            "--dir",
            str(root),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    config = yaml.safe_load((root / "mailstack.yaml").read_text())
    config["project"] = PROJECT
    config["features"]["antivirus"] = False
    config["network"].update(frontend_subnet=SUBNETS[0], backend_subnet=SUBNETS[1], ports=PORTS)
    config.setdefault("policy", {}).setdefault("rate_limits", {}).update(
        client_ip_burst=0, client_connections_per_minute=0
    )
    (root / "mailstack.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return Stack(root)


def start_load(stack: Stack) -> None:
    """The load container: the stack's postfix image (for smtp-source), on the frontend
    network only, unprivileged, read-only but for a tmpfs with the prepared messages."""
    image = docker(
        "inspect", "--format", "{{.Config.Image}}", stack.compose("ps", "-q", "postfix").strip()
    ).strip()
    docker(
        "run",
        "--detach",
        "--rm",
        "--name",
        LOAD,
        "--network",
        f"{PROJECT}_frontend",
        "--read-only",
        "--tmpfs",
        "/tmp:size=512m",  # noqa: S108  # the container's own tmpfs
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges:true",
        "--user",
        "65534:65534",
        "--entrypoint",
        "sleep",
        image,
        "infinity",
    )


def run(stack: Stack, options: argparse.Namespace) -> None:
    volume = Path(
        docker("volume", "inspect", "--format", "{{.Mountpoint}}", f"{PROJECT}_mail").strip()
    )
    print(
        f"host: {os.cpu_count()} CPUs (shared); {options.messages} messages per throughput "
        f"phase, {options.sessions} sessions; load: smtp-source on the frontend network",
        flush=True,
    )
    warm = mailbox(stack, "bench-warm")
    warm_up(volume, warm)
    filtered = throughput(
        volume, "filtered", mailbox(stack, "bench-filtered"), options.messages, options.sessions
    )
    report("full path (postscreen, rspamd milter, antivirus off)", filtered)

    milter(stack, on=False)
    warm_up(volume, warm)
    raw = throughput(volume, "raw", mailbox(stack, "bench-raw"), options.messages, options.sessions)
    report("raw path (milter off: Postfix -> Dovecot LMTP)", raw)
    milter(stack, on=True)
    print(
        f"filtered / raw: accepted {100 * filtered.accepted_per_s / raw.accepted_per_s:.0f}%, "
        f"delivered {100 * filtered.delivered_per_s / raw.delivered_per_s:.0f}% (goal >= 50%)",
        flush=True,
    )

    warm_up(volume, warm)
    latencies = latency(
        stack, volume, mailbox(stack, "bench-latency"), options.rate, options.latency_seconds
    )
    percentiles = statistics.quantiles(latencies, n=100, method="inclusive")
    print(
        f"latency at {options.rate:g} msg/s for {options.latency_seconds} s "
        f"({len(latencies)} messages, full path): p50 {percentiles[49]:.3f} s, "
        f"p99 {percentiles[98]:.3f} s, max {max(latencies):.3f} s (goal p99 <= 2 s)",
        flush=True,
    )

    if options.antivirus:
        stack.set_config({"features": {"antivirus": True}})
        stack.cli("render")
        stack.cli("up", "--timeout", "600")
        stack.cli("restart", "rspamd")  # rspamd loads its antivirus config at start
        warm_up(volume, warm)
        scanned = throughput(
            volume,
            "antivirus",
            mailbox(stack, "bench-antivirus"),
            options.messages,
            options.sessions,
        )
        report("full path with antivirus on (ClamAV scans each attachment)", scanned)
        print(
            f"antivirus on / raw: delivered "
            f"{100 * scanned.delivered_per_s / raw.delivered_per_s:.0f}%",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--latency-seconds", type=int, default=30)
    parser.add_argument("--antivirus", action="store_true")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        stack = create(Path(temp) / "stack")
        try:
            stack.cli("render")
            stack.cli("up", "--timeout", "600")
            start_load(stack)
            run(stack, options)
        finally:
            subprocess.run(["docker", "rm", "--force", LOAD], capture_output=True, check=False)
            subprocess.run(
                ["docker", "compose", "-p", PROJECT, "down", "--volumes", "--remove-orphans"],
                capture_output=True,
                check=False,
            )


if __name__ == "__main__":
    main()
