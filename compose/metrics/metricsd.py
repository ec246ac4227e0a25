#!/usr/bin/python3
"""metricsd: the stack's Prometheus endpoint (monitoring.metrics in mailstack.yaml).

On each scrape it collects the daemons' own metrics over the back-end network and serves
their union at /metrics in Prometheus's text format (0.0.4), to a client that shows the
bearer token (Authorization: Bearer <secrets/metrics_token>); anything else gets 401. The
sources, each asked with a short timeout (a source that does not answer is
mailstack_metrics_source_up 0, the others are still served):

    dovecot   Dovecot's stats service (OpenMetrics: sign-ins, failures, deliveries, IMAP)
    rspamd    rspamd's controller /metrics (OpenMetrics; a read-only password of its own)
    postfix   Debian's prometheus-postfix-exporter, run by this daemon as its child on the
              container's loopback: the mail queue through Postfix's showq socket, and its
              counters (deliveries, delays, rejects by SMTP code, SASL failures) from the
              copy of Postfix's log the postfix container keeps (compose/postfix/logtap)
    postfix_log  rejects by program and reason, counted here from the same log copy
    redis     Debian's prometheus-redis-exporter (a child, as above): INFO, as an ACL user
              that may run INFO and PING only
    postgres  Debian's prometheus-postgres-exporter (a child, as above): the server's
              statistics, as a login with pg_monitor that reaches the `postgres` database only
    health    `check health`'s items as gauges: a file the host's health timer writes
              (monitoring.schedule, mounted read-only); missing or stale: source_up 0

Python standard library only (Debian's python3). Commands:
    metricsd serve ...   run (the container's entrypoint; starts as root, reads the secrets,
                         drops to the metrics user with the postdrop group for showq, starts
                         the exporters; the passwords reach them in their environment)
    metricsd health      exit 0 when /metrics answers with the token (the healthcheck)
"""

from __future__ import annotations

import argparse
import hmac
import http
import http.server
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

TOKEN_FILE = Path("/run/secrets/metrics_token")
RSPAMD_PASSWORD_FILE = Path("/run/secrets/rspamd_metrics_password")
REDIS_PASSWORD_FILE = Path("/run/secrets/redis_metrics_password")
POSTGRES_PASSWORD_FILE = Path("/run/secrets/db_metrics_password")
REDIS_USER = "metrics"  # the ACL user compose/redis/entrypoint makes (INFO and PING only)
POSTGRES_USER = "mailstack_metrics"  # compose/db/db-roles.sql: pg_monitor, no table
SERVICE_UID = 978
SERVICE_GID = 978
POSTDROP_GID = 201  # the postfix image's postdrop: showq admits it (public/ is 2710)
EXPORTER = "/usr/bin/prometheus-postfix-exporter"
EXPORTER_ADDRESS = "127.0.0.1:9155"
REDIS_EXPORTER_ADDRESS = "127.0.0.1:9156"
POSTGRES_EXPORTER_ADDRESS = "127.0.0.1:9157"
SOURCE_TIMEOUT = 5.0  # seconds per source: a scrape answers within Prometheus's default 10 s
MAX_SOURCE_BYTES = 4 * 1024 * 1024
OPENMETRICS_ONLY_TYPES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram"}
PROMETHEUS_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
# Of the Redis and PostgreSQL exporters, the basics an operator watches (each exporter serves
# hundreds more: every setting, every command's latency); docs/metrics.md lists them.
REDIS_FAMILIES = frozenset(
    {
        "redis_up",
        "redis_uptime_in_seconds",
        "redis_connected_clients",
        "redis_blocked_clients",
        "redis_rejected_connections_total",
        "redis_memory_used_bytes",
        "redis_memory_max_bytes",
        "redis_commands_processed_total",
        "redis_keyspace_hits_total",
        "redis_keyspace_misses_total",
        "redis_evicted_keys_total",
        "redis_expired_keys_total",
        "redis_db_keys",
        "redis_rdb_last_bgsave_status",
        "redis_rdb_changes_since_last_save",
        "redis_aof_last_write_status",
    }
)
POSTGRES_FAMILIES = frozenset(
    {
        "pg_up",
        "pg_settings_max_connections",
        "pg_stat_activity_count",
        "pg_stat_activity_max_tx_duration",
        "pg_database_size_bytes",
        "pg_locks_count",
        "pg_stat_database_numbackends",
        "pg_stat_database_xact_commit",
        "pg_stat_database_xact_rollback",
        "pg_stat_database_deadlocks",
        "pg_stat_database_conflicts",
        "pg_stat_database_blks_hit",
        "pg_stat_database_blks_read",
        "pg_stat_database_temp_bytes",
        "pg_stat_database_tup_inserted",
        "pg_stat_database_tup_updated",
        "pg_stat_database_tup_deleted",
        "pg_stat_database_tup_fetched",
    }
)
# What each source contributes: its own families only (not the exporters' go_*/process_*,
# which would collide). Postfix's exporter serves its log-based counters only when it reads
# the log copy (--postfix-log): without it they would stay zero and pass for quiet.
KEEP: dict[str, Callable[[str], bool]] = {
    "dovecot": lambda name: name.startswith("dovecot_"),
    "rspamd": lambda name: name.startswith("rspamd_"),
    "postfix": lambda name: name.startswith("postfix_"),
    "postfix_log": lambda name: name.startswith("mailstack_postfix_"),
    "redis": lambda name: name in REDIS_FAMILIES,
    "postgres": lambda name: name in POSTGRES_FAMILIES,
    "health": lambda name: name.startswith("mailstack_health_"),
}
QUEUE_ONLY = {**KEEP, "postfix": lambda name: name.startswith(("postfix_showq_", "postfix_up"))}
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)")


@dataclass(frozen=True)
class Family:
    """One metric family as read: its name, type, help text and sample lines."""

    name: str
    type: str
    help: str | None
    samples: tuple[str, ...]


def parse_families(text: str) -> list[Family]:
    """Families of a Prometheus or OpenMetrics text exposition, in order."""
    families: list[Family] = []
    name, type_, help_ = "", "untyped", None
    samples: list[str] = []

    def close() -> None:
        if name or samples:
            families.append(Family(name, type_, help_, tuple(samples)))

    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                if parts[2] != name:
                    close()
                    name, type_, help_, samples = parts[2], "untyped", None, []
                if parts[1] == "TYPE":
                    type_ = parts[3].strip() if len(parts) > 3 else "untyped"
                else:
                    help_ = parts[3] if len(parts) > 3 else ""
            continue  # EOF, UNIT and comments
        match = SAMPLE.match(line)
        if not match:
            continue
        if not name or not match.group(1).startswith(name):
            close()
            name, type_, help_, samples = match.group(1), "untyped", None, []
        samples.append(line.split(" # ", 1)[0])  # an OpenMetrics exemplar is dropped
    close()
    return families


def as_prometheus(family: Family) -> Family:
    """The family as Prometheus's text format 0.0.4 says it: OpenMetrics names a counter
    without _total (its samples have it) and has types 0.0.4 lacks."""
    type_ = OPENMETRICS_ONLY_TYPES.get(family.type, family.type)
    if type_ not in PROMETHEUS_TYPES:
        type_ = "untyped"
    samples = family.samples
    name = family.name
    if family.type == "counter":
        samples = tuple(s for s in samples if not sample_name(s).endswith("_created"))
    if family.type in ("counter", "info") and samples:
        first = sample_name(samples[0])
        if first in (f"{name}_total", f"{name}_info"):
            name = first
    return Family(name, type_, family.help, samples)


def sample_name(line: str) -> str:
    match = SAMPLE.match(line)
    return match.group(1) if match else ""


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for family in families:
        if family.help is not None:
            lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.type}")
        lines.extend(family.samples)
    return "\n".join(lines) + "\n"


def union(sources: dict[str, str | None], keep: dict[str, Callable[[str], bool]] = KEEP) -> str:
    """The text served: each source's own families, then whether each source answered."""
    families: list[Family] = []
    seen: set[str] = set()
    for source, text in sources.items():
        for family in parse_families(text or ""):
            converted = as_prometheus(family)
            if keep[source](converted.name) and converted.name not in seen:
                seen.add(converted.name)
                families.append(converted)
    up = Family(
        "mailstack_metrics_source_up",
        "gauge",
        "Whether the source answered this scrape (1) or not (0).",
        tuple(
            f'mailstack_metrics_source_up{{source="{source}"}} {0 if text is None else 1}'
            for source, text in sources.items()
        ),
    )
    return render([*families, up])


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the token (compared in constant time)."""
    if not header or not token:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


# --- collecting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    name: str
    url: str  # or a file's absolute path (read_file_source)
    headers: tuple[tuple[str, str], ...] = ()
    max_age: float = 0.0  # a file source: stale when its last write is older (seconds)
    read: Callable[[], str | None] | None = None  # counted in this process (PostfixLog)


def read_file_source(source: Source, now: float | None = None) -> str | None:
    """A file of gauges written elsewhere (the health timer's): None when missing, unreadable
    or older than its max_age (stale values would pass for current); else its text and its
    age as mailstack_health_age_seconds."""
    try:
        with open(source.url, "rb") as handle:  # noqa: PTH123  # one descriptor: stat and read
            age = (time.time() if now is None else now) - os.fstat(handle.fileno()).st_mtime
            body = handle.read(MAX_SOURCE_BYTES + 1)
    except OSError as error:
        print(f"metricsd: {source.name}: {error}", file=sys.stderr, flush=True)
        return None
    if age > source.max_age or len(body) > MAX_SOURCE_BYTES:
        print(f"metricsd: {source.name}: stale ({age:.0f} s) or too large", file=sys.stderr)
        return None
    return body.decode("utf-8", "replace") + (
        "# HELP mailstack_health_age_seconds How old the health gauges are.\n"
        f"# TYPE mailstack_health_age_seconds gauge\nmailstack_health_age_seconds {age:.0f}\n"
    )


def fetch(source: Source) -> str | None:
    if source.read is not None:
        return source.read()
    if source.url.startswith("/"):
        return read_file_source(source)
    request = urllib.request.Request(source.url, headers=dict(source.headers))  # noqa: S310  # http URLs from the command line
    try:
        with urllib.request.urlopen(request, timeout=SOURCE_TIMEOUT) as response:  # noqa: S310  # as above
            body: bytes = response.read(MAX_SOURCE_BYTES + 1)
    except (OSError, urllib.error.URLError) as error:
        print(f"metricsd: {source.name}: {error}", file=sys.stderr, flush=True)
        return None
    if len(body) > MAX_SOURCE_BYTES:
        print(f"metricsd: {source.name}: answer over {MAX_SOURCE_BYTES} bytes", file=sys.stderr)
        return None
    return body.decode("utf-8", "replace")


def collect(sources: list[Source], keep: dict[str, Callable[[str], bool]] = KEEP) -> str:
    results: dict[str, str | None] = {source.name: None for source in sources}

    def one(source: Source) -> None:
        results[source.name] = fetch(source)

    threads = [threading.Thread(target=one, args=(source,)) for source in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SOURCE_TIMEOUT + 1)
    return union(results, keep)


# --- Postfix's refusals and deliveries, from its log -------------------------------------------

# A refusal in Postfix's log: smtpd's and postscreen's "NOQUEUE: reject: RCPT from
# host[address]: 554 5.7.1 <rcpt>: Relay access denied; from=…", a milter's (rspamd's)
# "milter-reject: END-OF-MESSAGE from host[address]: 5.7.1 Spam message rejected; …".
REJECT = re.compile(
    r" postfix/(?P<program>[\w/.-]+)\[\d+\]: \w+: (?:milter-)?reject: \S+ from "
    r"\S*?\[[^\]]*\](?::\d+)?: (?P<reply>.*?)(?:; from=|$)"
)
# The first phrase a reply contains names its reason (lower case; the order matters: a
# "Recipient address rejected: User unknown" is an unknown recipient).
REASONS = (
    ("relay access denied", "relay_denied"),
    ("user unknown", "unknown_recipient"),
    ("not owned by user", "sender_login_mismatch"),
    ("not logged in", "sender_login_mismatch"),
    ("blocked using", "dnsbl"),
    ("mailbox is full", "quota"),
    ("spam message rejected", "spam"),
    ("try again later", "greylisted"),
    ("helo command rejected", "helo"),
    ("sender address rejected", "sender"),
    ("recipient address rejected", "recipient"),
    ("client host rejected", "client"),
    ("improper use of smtp command pipelining", "pipelining"),
    ("protocol error", "protocol"),
)
# A delivery attempt: "postfix/lmtp[340]: 4QxY…: to=<c@example.com>, relay=…, status=sent (…)"
# (a transport's program is its master.cf name: smtp, lmtp, relay, error, …).
DELIVERY = re.compile(
    r" postfix/(?:[\w.-]+/)*(?P<transport>[\w.-]+)\[\d+\]: \w+: to=<[^>]*>,.*? "
    r"status=(?P<status>\w+)"
)
MAX_LOG_READ = 8 * 1024 * 1024  # per poll; the rest waits for the next one
MAX_LINE = 64 * 1024  # a line without its end yet, kept at most this long


def reject_of(line: str) -> tuple[str, str, str] | None:
    """(program, reason, status) of a Postfix log line that records a refusal, else None;
    status is temporary (4xx) or permanent (5xx), reason one of REASONS' or "other"."""
    match = REJECT.search(line)
    if not match:
        return None
    reply = match["reply"]
    status = "temporary" if reply.startswith("4") else "permanent"
    lowered = reply.lower()
    reason = next((name for phrase, name in REASONS if phrase in lowered), "other")
    return match["program"], reason, status


def delivery_of(line: str) -> tuple[str, str] | None:
    """(transport, status) of a Postfix log line that records a delivery attempt, else None;
    status is Postfix's: sent, deferred, bounced, expired, …"""
    match = DELIVERY.search(line)
    return (match["transport"], match["status"]) if match else None


class PostfixLog:
    """Follows the copy of Postfix's log the postfix container keeps (compose/postfix/logtap:
    FILE, renamed FILE.1 past 4 MiB and begun anew) and counts its refusals and deliveries.
    It starts at the end of a file already there (as the exporter does), at the start of one
    that appears."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.inode: int | None = None
        self.offset = 0
        self.partial = b""
        self.present = False
        self.was_missing = False  # an earlier poll found no file: all of it is new
        self.rejects: dict[tuple[str, str, str], int] = {}
        self.deliveries: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()

    def poll(self) -> None:
        try:
            stat = Path(self.path).stat()
        except OSError:
            self.present = False
            self.was_missing = self.was_missing or self.inode is None
            return
        if self.inode is None:
            self.inode, self.offset = stat.st_ino, 0 if self.was_missing else stat.st_size
        elif stat.st_ino != self.inode:  # renamed to FILE.1: its rest first, then the new one
            self.read(f"{self.path}.1")
            self.inode, self.offset, self.partial = stat.st_ino, 0, b""
        elif stat.st_size < self.offset:  # emptied
            self.offset, self.partial = 0, b""
        self.present = True
        self.read(self.path)

    def read(self, path: str) -> None:
        try:
            with open(path, "rb") as handle:  # noqa: PTH123  # one descriptor: stat and read
                if os.fstat(handle.fileno()).st_ino != self.inode:
                    return
                handle.seek(self.offset)
                data = handle.read(MAX_LOG_READ)
        except OSError:
            return
        self.offset += len(data)
        *lines, rest = (self.partial + data).split(b"\n")
        self.partial = rest[-MAX_LINE:]
        texts = [line.decode("utf-8", "replace") for line in lines]
        with self.lock:
            for text in texts:
                if (reject := reject_of(text)) is not None:
                    self.rejects[reject] = self.rejects.get(reject, 0) + 1
                elif (delivery := delivery_of(text)) is not None:
                    self.deliveries[delivery] = self.deliveries.get(delivery, 0) + 1

    def text(self) -> str | None:
        """The counters as exposition text; None while the log copy is missing."""
        if not self.present:
            return None
        with self.lock:
            rejects, deliveries = sorted(self.rejects.items()), sorted(self.deliveries.items())
        return render(
            [
                Family(
                    "mailstack_postfix_rejects_total",
                    "counter",
                    "Refusals in Postfix's log by program, reason and status (since metricsd "
                    "started).",
                    tuple(
                        f'mailstack_postfix_rejects_total{{program="{program}",'
                        f'reason="{reason}",status="{status}"}} {count}'
                        for (program, reason, status), count in rejects
                    ),
                ),
                Family(
                    "mailstack_postfix_deliveries_total",
                    "counter",
                    "Delivery attempts in Postfix's log by transport and status (since "
                    "metricsd started).",
                    tuple(
                        f'mailstack_postfix_deliveries_total{{transport="{transport}",'
                        f'status="{status}"}} {count}'
                        for (transport, status), count in deliveries
                    ),
                ),
            ]
        )

    def follow(self, interval: float = 5.0) -> None:
        while True:
            self.poll()
            time.sleep(interval)


# --- serving ---------------------------------------------------------------------------------


def handler(
    token: str, sources: list[Source], keep: dict[str, Callable[[str], bool]] = KEEP
) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "metricsd"
        sys_version = ""
        timeout = 10

        def do_GET(self) -> None:  # the stdlib's name
            if not bearer_matches(self.headers.get("Authorization"), token):
                self.answer(http.HTTPStatus.UNAUTHORIZED, "unauthorized: a bearer token\n")
                return
            if self.path.split("?", 1)[0] != "/metrics":
                self.answer(http.HTTPStatus.NOT_FOUND, "not found: /metrics\n")
                return
            self.answer(http.HTTPStatus.OK, collect(sources, keep), "text/plain; version=0.0.4")

        def answer(self, status: http.HTTPStatus, body: str, kind: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            if status == http.HTTPStatus.UNAUTHORIZED:
                self.send_header("WWW-Authenticate", 'Bearer realm="metrics"')
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # the stdlib's name
            if not str(args[1] if len(args) > 1 else "").startswith("2"):
                sys.stderr.write(f"metricsd: {self.client_address[0]} {format % args}\n")

    return Handler


def read_secret(path: Path) -> str:
    value = path.read_text().strip()
    if not value:
        raise SystemExit(f"metricsd: secret {path.name} is empty")
    return value


def drop_privileges() -> None:
    os.setgroups([POSTDROP_GID])
    os.setgid(SERVICE_GID)
    os.setuid(SERVICE_UID)


@dataclass(frozen=True)
class Exporter:
    """A Debian exporter this daemon runs as its child, listening on the container's
    loopback; its secrets reach it in its environment (never its command line)."""

    source: str
    program: str
    address: str  # host:port on the loopback
    options: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    waits_for: str = ""  # a file it reads from its start: it is started once that exists

    @property
    def argv(self) -> list[str]:
        # Go's flag package and kingpin both take the double dash.
        return [self.program, f"--web.listen-address={self.address}", *self.options]

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"


def exporters(
    arguments: argparse.Namespace, redis_password: str, db_password: str
) -> list[Exporter]:
    """The exporters to run: Postfix's queue and log, Redis and PostgreSQL."""
    one_thread = (("GOMAXPROCS", "1"),)  # a scrape a minute or so: one thread each is plenty
    return [
        # Without the log copy, /dev/null keeps it from waiting for a file: the queue only.
        Exporter(
            "postfix",
            EXPORTER,
            EXPORTER_ADDRESS,
            (
                "--postfix.showq_path=/var/spool/postfix/public/showq",
                f"--postfix.logfile_path={arguments.postfix_log or '/dev/null'}",
            ),
            one_thread,
            waits_for=arguments.postfix_log,
        ),
        Exporter(
            "redis",
            "/usr/bin/prometheus-redis-exporter",
            REDIS_EXPORTER_ADDRESS,
            # Its ACL user may run INFO and PING only: no CLIENT SETNAME, no CONFIG (it also
            # asks LATENCY LATEST, refused: it logs that once and serves the rest).
            (
                f"--redis.addr=redis://{arguments.redis}",
                f"--redis.user={REDIS_USER}",
                "--redis-only-metrics",
                "--set-client-name=false",
                "--config-command=-",
            ),
            (*one_thread, ("REDIS_PASSWORD", redis_password)),
        ),
        Exporter(
            "postgres",
            "/usr/bin/prometheus-postgres-exporter",
            POSTGRES_EXPORTER_ADDRESS,
            ("--log.level=warn",),
            (
                *one_thread,
                ("DATA_SOURCE_URI", f"{arguments.postgres}/postgres?sslmode=disable"),
                ("DATA_SOURCE_USER", POSTGRES_USER),
                ("DATA_SOURCE_PASS", db_password),
            ),
        ),
    ]


def start(exporter: Exporter) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # a fixed program and arguments
        exporter.argv,
        stdout=subprocess.DEVNULL,
        env={**os.environ, **dict(exporter.environment)},  # metricsd's own holds no secret
    )


def serve(arguments: argparse.Namespace) -> None:
    token = read_secret(TOKEN_FILE)
    rspamd_password = read_secret(RSPAMD_PASSWORD_FILE)
    children = exporters(
        arguments, read_secret(REDIS_PASSWORD_FILE), read_secret(POSTGRES_PASSWORD_FILE)
    )
    drop_privileges()
    running: list[tuple[str, subprocess.Popen[bytes]]] = []
    sources = [
        *(Source(exporter.source, exporter.url) for exporter in children),
        Source("dovecot", arguments.dovecot),
        Source("rspamd", arguments.rspamd, (("Password", rspamd_password),)),
    ]
    if arguments.postfix_log:
        postfix_log = PostfixLog(arguments.postfix_log)
        threading.Thread(target=postfix_log.follow, daemon=True).start()
        sources.append(Source("postfix_log", arguments.postfix_log, read=postfix_log.text))
    if arguments.health:
        sources.append(Source("health", arguments.health, max_age=arguments.health_max_age))
    keep = KEEP if arguments.postfix_log else QUEUE_ONLY
    server = http.server.ThreadingHTTPServer(
        (arguments.address, arguments.port), handler(token, sources, keep)
    )
    server.daemon_threads = True

    def stop(*_: object) -> None:
        for _source, process in running:
            if process.poll() is None:
                process.terminate()
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)

    def watch(source: str, process: subprocess.Popen[bytes]) -> None:
        # The exporters are part of the service: without one, restart.
        code = process.wait()
        print(f"metricsd: the {source} exporter exited ({code})", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    def run(exporter: Exporter) -> None:
        # Postfix's exporter needs the log copy at its start; the postfix container makes it
        # when it starts (after an update, maybe after this service): meanwhile it is down.
        while exporter.waits_for and not Path(exporter.waits_for).exists():
            print(f"metricsd: waiting for {exporter.waits_for}", file=sys.stderr, flush=True)
            time.sleep(5)
        process = start(exporter)
        running.append((exporter.source, process))
        watch(exporter.source, process)

    for exporter in children:
        threading.Thread(target=run, args=(exporter,), daemon=True).start()
    print(f"metricsd: serving on {arguments.address}:{arguments.port}", flush=True)
    server.serve_forever()


def health(arguments: argparse.Namespace) -> int:
    request = urllib.request.Request(  # the container's own address
        f"http://{arguments.address}:{arguments.port}/metrics",
        headers={"Authorization": f"Bearer {read_secret(TOKEN_FILE)}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=8) as response:  # noqa: S310  # as above
            body = response.read().decode()
    except OSError as error:
        print(f"metricsd: /metrics: {error}")
        return 1
    down = re.findall(r'mailstack_metrics_source_up\{source="(\w+)"\} 0', body)
    if down:  # healthy when the endpoint answers; a source down shows in its own series
        print(f"metricsd: answering; down: {', '.join(down)}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="metricsd")
    parser.add_argument("command", choices=("serve", "health"))
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9154)
    parser.add_argument("--dovecot", default="http://dovecot:9900/metrics")
    parser.add_argument("--rspamd", default="http://rspamd:11334/metrics")
    parser.add_argument("--redis", default="redis:6379")
    parser.add_argument("--postgres", default="db:5432")
    parser.add_argument("--postfix-log", default="")  # Postfix's log copy (a file)
    parser.add_argument("--health", default="")  # check health's gauges (a file)
    parser.add_argument("--health-max-age", type=float, default=960.0)
    arguments = parser.parse_args(argv)
    if arguments.command == "health":
        return health(arguments)
    serve(arguments)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
