"""What `mailstack check health` finds: the services' state as `mailstack status` reads it,
one functional probe per daemon a client depends on (each run inside its container, as the
daemons' own clients ask), the mail queue, the backups, the certificate, free space, ClamAV's
signatures and the DNS report. mailstack.runtime.health judges each.

Every probe is bounded: its container command by `timeout` inside, its `docker compose exec`
by PROBE_SECONDS outside, so a hung daemon is a FAIL after a few seconds, never a hang. The
probes run side by side (threads: each waits on a subprocess), so the whole check takes about
as long as its slowest probe.

The functional probes, and what each proves:
- mail database: a query as the host's psql (one active mailbox is taken for the lookups);
- webmail database: a query in Roundcube's database (its users);
- recipient lookup: `postmap -q` of that mailbox through proxy:pgsql:virtual_mailbox_maps,
  the map and the proxymap daemon smtpd asks (an address that never exists on a stack
  without mailboxes: "not found" without an error proves the map answered);
- mailbox lookup: `doveadm user` of that mailbox, the userdb lookup every login makes
  (through Dovecot's auth process and PostgreSQL). No password is tried: a check holds no
  user's password, and a wrong one would count towards a ban (bans) like an attacker's;
- spam scan: rspamc scans a small message on the normal worker (the milter's own path);
- redis ping: the redis image's healthcheck, an authenticated PING, run now;
- dns resolution: the stack's resolver asked for the mail domain's MX (NOERROR/NXDOMAIN);
- mail round trip: submit on 587 and read back on 993 as the probe mailbox, as the update's
  verify does (mailstack.runtime.probe), bounded by ROUND_TRIP_SECONDS;
- dns blocklists (production): the resolver asked about the public addresses in each list.
Besides: the images' pending security fixes, from the stored security check (never re-run).
"""

from __future__ import annotations

import contextvars
import datetime
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mailstack import services
from mailstack.adapters import psql
from mailstack.adapters.docker import DOCKER, Engine
from mailstack.adapters.psql import Executor
from mailstack.backup import verification
from mailstack.backup.dumps import WEBMAIL_DATABASE
from mailstack.backup.target import parse_target
from mailstack.errors import MailstackError
from mailstack.images import securitycheck
from mailstack.mailauth.dnsrecords import public_ipv4
from mailstack.runtime import blocklists, hostreports, lifecycle, mailqueue, probe, relay
from mailstack.runtime.health import (
    HealthItem,
    HealthReport,
    exempt,
    first_line,
    judge_certificate,
    judge_dns_report,
    judge_free_space,
    judge_last_backup,
    judge_last_verify,
    judge_probe,
    judge_queue,
    judge_relay,
    judge_security,
    judge_services,
    judge_signatures,
    parse_time,
)
from mailstack.stack.stackdir import Stack
from mailstack.tls import certs
from mailstack.verdict import FAIL, WARN

PROBE_SECONDS = 4.0  # one `docker compose exec` (or psql) at most
INNER_SECONDS = 3  # the command inside the container, so it ends before the exec is cut
# The mail round trip: submission, the milter's scan, LMTP delivery, an IMAP search; ~1-2 s on
# a healthy stack. Bounded well above that (a loaded host), and so that a check with a
# dependency down still ends in seconds.
ROUND_TRIP_SECONDS = 6.0
POSTFIX_SQL = "/run/mailstack/postfix-sql"
CLAMAV_DATABASE = "/var/lib/clamav"
# An address that never exists (as the Postfix and Dovecot healthchecks use): looked up
# when the stack has no mailbox yet.
PROBE_ADDRESS = "mailstack-healthcheck@mailstack.invalid"
# A mailbox's address reaches argv only in this shape (never an option, never a space).
_SAFE_ADDRESS = re.compile(r"[a-z0-9][a-z0-9._+=-]{0,63}@[a-z0-9][a-z0-9.-]{0,252}")
_EXIT_LINE = "mailstack-exit="
_TIMED_OUT = 124  # timeout(1)'s status when it had to stop the command
# Runs argv (given after the seconds) under `timeout`, its stdout and stderr together, and
# says its exit status on a last line of its own: a probe needs the status (postmap's 1 is
# "not found", doveadm's 67 "unknown user"), and exec's own failure means the container.
_WITH_STATUS = (
    f'out=$(timeout "$0" "$@" 2>&1); code=$?; printf "%s\\n" "$out"; echo "{_EXIT_LINE}$code"'
)
_MAIL_DB = "SELECT count(*), coalesce(min(address), '') FROM postfix_mailboxes;"
_WEBMAIL_DB = "SELECT count(*) FROM users;"


class _Bounded:
    """The Compose adapter with every exec's timeout cut to PROBE_SECONDS (psql, postqueue)."""

    def __init__(self, inner: Executor, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds

    def exec(
        self,
        service: str,
        argv: list[str],
        *,
        input: bytes | None = None,  # mirrors Compose.exec
        user: str | None = None,
        timeout: float = 60,
    ) -> bytes:
        bound = min(timeout, self.seconds)
        return self.inner.exec(service, argv, input=input, user=user, timeout=bound)


@dataclass(frozen=True)
class Status:
    code: int
    output: str


def run_with_status(
    executor: Executor, service: str, argv: list[str], input: bytes | None = None
) -> Status:
    """argv in the service's container: its exit status and output (MailstackError: the
    container could not run it: stopped, missing, or the exec timed out)."""
    wrapped = ["sh", "-c", _WITH_STATUS, str(INNER_SECONDS), *argv]
    output = executor.exec(service, wrapped, input=input).decode("utf-8", "replace")
    body, _, last = output.rstrip("\n").rpartition("\n")
    if not last.startswith(_EXIT_LINE):
        body, last = output, ""
    try:
        code = int(last.removeprefix(_EXIT_LINE))
    except ValueError:
        raise MailstackError(
            f"{argv[0]} in {service}: no exit status: {first_line(output)}"
        ) from None
    if code == _TIMED_OUT:
        body = f"{argv[0]}: no answer within {INNER_SECONDS} s\n{body}"
    return Status(code, body)


RoundTrip = Callable[[Stack, Executor], probe.ProbeResult]


def _stack_round_trip(stack: Stack, executor: Executor) -> probe.ProbeResult:
    return probe.stack_round_trip(stack, ROUND_TRIP_SECONDS, executor)


def check_health(
    stack: Stack,
    *,
    engine: Engine = DOCKER,
    clock: Callable[[], float] = time.time,
    round_trip: RoundTrip = _stack_round_trip,
) -> HealthReport:
    """Every item, found side by side, in a fixed order (`round_trip`: the mail round trip,
    replaced in unit tests)."""
    started = time.monotonic()
    bounded = _Bounded(stack.compose, PROBE_SECONDS)
    now = clock()
    tasks: list[Callable[[], tuple[HealthItem, ...]]] = [
        lambda: _services(stack),
        lambda: _directory_probes(stack, bounded),
        lambda: (_webmail_database(stack, bounded),),
        lambda: (_spam_scan(stack, bounded),),
        lambda: (_redis_ping(bounded),),
        lambda: (_resolver(stack, bounded),),
        lambda: (_mail_round_trip(stack, bounded, round_trip),),
        lambda: (_blocklists(stack, bounded),),
        lambda: _mail_queue(stack, bounded, now),
        lambda: (_signatures(stack, bounded, now),),
        lambda: (_dns_report(bounded),),
        lambda: (_security(stack, now),),
        lambda: _backups(stack, bounded, now),
        lambda: (_certificate(stack, now),),
        lambda: _free_space(stack, engine),
    ]
    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        # Each thread runs with the caller's context (psql's ACTOR).
        futures: list[Future[tuple[HealthItem, ...]]] = [
            pool.submit(contextvars.copy_context().run, _timed, task) for task in tasks
        ]
        items = [item for future in futures for item in future.result()]
    return HealthReport(tuple(items), time.monotonic() - started)


def _timed(task: Callable[[], tuple[HealthItem, ...]]) -> tuple[HealthItem, ...]:
    started = time.monotonic()
    found = task()
    seconds = round(time.monotonic() - started, 2)
    return tuple(
        HealthItem(i.name, i.service, i.verdict, i.detail, i.fix, i.exempt, seconds) for i in found
    )


def _error(error: MailstackError) -> str:
    return first_line(error.message)


# --- services -----------------------------------------------------------------------------------


def _services(stack: Stack) -> tuple[HealthItem, ...]:
    expected = [service.name for service in services.SERVICES if service.runs_in(stack.config)]
    try:
        found = lifecycle.status(stack).services
    except MailstackError as error:
        return (HealthItem("services", "", FAIL, _error(error), "is Docker running?"),)
    return judge_services(found, expected)


# --- functional probes --------------------------------------------------------------------------


def _directory_probes(stack: Stack, executor: Executor) -> tuple[HealthItem, ...]:
    """The mail database first (it names a mailbox), then Postfix's and Dovecot's lookups of
    that mailbox side by side."""
    mailbox = ""
    try:
        rows = psql.query(executor, _MAIL_DB, timeout=PROBE_SECONDS)
        count, mailbox = rows[0][0], rows[0][1]
        database = judge_probe("mail database", "db", f"answered: {count} active mailboxes", "", "")
    except (MailstackError, IndexError) as error:
        why = _error(error) if isinstance(error, MailstackError) else "an empty answer"
        fix = "PostgreSQL (db) holds the mail directory: `mailstack logs db`"
        database = judge_probe("mail database", "db", None, why, fix)
    address = mailbox if _SAFE_ADDRESS.fullmatch(mailbox) else ""
    with ThreadPoolExecutor(max_workers=2) as pool:
        postfix = pool.submit(contextvars.copy_context().run, _recipient_lookup, executor, address)
        dovecot = pool.submit(contextvars.copy_context().run, _mailbox_lookup, executor, address)
        return database, postfix.result(), dovecot.result()


def _recipient_lookup(executor: Executor, address: str) -> HealthItem:
    fix = "Postfix's maps ask PostgreSQL (db) through proxymap: `mailstack logs postfix`"
    table = f"proxy:pgsql:{POSTFIX_SQL}/virtual_mailbox_maps.cf"
    try:
        found = run_with_status(
            executor, "postfix", ["postmap", "-q", address or PROBE_ADDRESS, table]
        )
    except MailstackError as error:
        return judge_probe("recipient lookup", "postfix", None, _error(error), fix)
    value = first_line(found.output)
    if address and found.code == 0 and value:
        return judge_probe(
            "recipient lookup", "postfix", f"virtual_mailbox_maps found {address}", "", fix
        )
    if not address and found.code == 1 and not value:
        answer = "virtual_mailbox_maps answered (no mailbox yet: an unknown address looked up)"
        return judge_probe("recipient lookup", "postfix", answer, "", fix)
    why = value or f"{address} not found (postmap exit {found.code})"
    return judge_probe("recipient lookup", "postfix", None, why, fix)


def _mailbox_lookup(executor: Executor, address: str) -> HealthItem:
    fix = "Dovecot's logins look users up in PostgreSQL (db): `mailstack logs dovecot`"
    try:
        found = run_with_status(executor, "dovecot", ["doveadm", "user", address or PROBE_ADDRESS])
    except MailstackError as error:
        return judge_probe("mailbox lookup", "dovecot", None, _error(error), fix)
    if address and found.code == 0:
        return judge_probe("mailbox lookup", "dovecot", f"userdb found {address}", "", fix)
    if not address and found.code == 67:  # EX_NOUSER: the lookup answered "unknown user"
        answer = "userdb answered (no mailbox yet: an unknown address looked up)"
        return judge_probe("mailbox lookup", "dovecot", answer, "", fix)
    why = first_line(found.output) or f"doveadm user exit {found.code}"
    return judge_probe("mailbox lookup", "dovecot", None, why, fix)


def _webmail_database(stack: Stack, executor: Executor) -> HealthItem:
    if not stack.config.features.webmail:
        return exempt("webmail database", "db", "the webmail is off (features.webmail)")
    argv = [
        "psql", "--no-psqlrc", "--quiet", "--tuples-only", "--no-align",
        "--host=/run/postgresql", "--username=postgres", f"--dbname={WEBMAIL_DATABASE}",
        "--set=ON_ERROR_STOP=1", "--file=-",
    ]  # fmt: skip
    fix = "Roundcube keeps its sessions in PostgreSQL (db): `mailstack logs db`"
    try:
        output = executor.exec(psql.DB_SERVICE, argv, input=_WEBMAIL_DB.encode(), user="postgres")
    except MailstackError as error:
        return judge_probe("webmail database", "db", None, _error(error), fix)
    users = first_line(output.decode("utf-8", "replace"))
    return judge_probe("webmail database", "db", f"answered: {users} webmail users", "", fix)


def _scan_message(domain: str) -> bytes:
    """A small message to the postmaster from a sender that is not one of the stack's own
    (a hosted sender without DKIM is rejected as forged: right, but not this probe's point)."""
    date = datetime.datetime.now(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    return (
        f"From: mailstack check health <check-health@mailstack.invalid>\r\n"
        f"To: <postmaster@{domain}>\r\nSubject: mailstack check health\r\nDate: {date}\r\n"
        f"Message-ID: <check-health-{int(time.time())}@mailstack.invalid>\r\n\r\n"
        "A scan by `mailstack check health`.\r\n"
    ).encode()


def _spam_scan(stack: Stack, executor: Executor) -> HealthItem:
    fix = "rspamd scans every message (its milter): `mailstack logs rspamd`"
    argv = [
        "rspamc",
        "--connect",
        "127.0.0.1:11333",
        "--timeout",
        str(INNER_SECONDS - 1),
        "symbols",
    ]
    try:
        found = run_with_status(executor, "rspamd", argv, input=_scan_message(stack.config.domain))
    except MailstackError as error:
        return judge_probe("spam scan", "rspamd", None, _error(error), fix)
    action = re.search(r"^Action: (.+)$", found.output, re.MULTILINE)
    if found.code == 0 and action:
        score = re.search(r"^Score: (\S+)", found.output, re.MULTILINE)
        scored = f", score {score.group(1)}" if score else ""
        return judge_probe(
            "spam scan", "rspamd", f"scanned: {action.group(1).strip()}{scored}", "", fix
        )
    return judge_probe(
        "spam scan", "rspamd", None, first_line(found.output) or f"rspamc exit {found.code}", fix
    )


def _redis_ping(executor: Executor) -> HealthItem:
    fix = "rspamd keeps its state in Redis: `mailstack logs redis`"
    try:
        found = run_with_status(executor, "redis", ["/usr/local/bin/healthcheck"])
    except MailstackError as error:
        return judge_probe("redis ping", "redis", None, _error(error), fix)
    if found.code == 0:
        return judge_probe("redis ping", "redis", "PONG (authenticated)", "", fix)
    return judge_probe(
        "redis ping", "redis", None, first_line(found.output) or f"exit {found.code}", fix
    )


def _resolver(stack: Stack, executor: Executor) -> HealthItem:
    fix = "every daemon resolves through it (DNSBLs, SPF, MX): `mailstack logs resolver`"
    domain = stack.config.domain
    try:
        found = run_with_status(executor, "resolver", ["drill", "@127.0.0.1", domain, "MX"])
    except MailstackError as error:
        return judge_probe("dns resolution", "resolver", None, _error(error), fix)
    rcode = re.search(r"rcode: (\w+)", found.output)
    if found.code == 0 and rcode and rcode.group(1) in ("NOERROR", "NXDOMAIN"):
        spent = re.search(r"Query time: (\d+ msec)", found.output)
        took = f" in {spent.group(1)}" if spent else ""
        return judge_probe(
            "dns resolution", "resolver", f"{domain} MX: {rcode.group(1)}{took}", "", fix
        )
    why = f"{domain} MX: {rcode.group(1)}" if rcode else first_line(found.output) or "no answer"
    return judge_probe("dns resolution", "resolver", None, why, fix)


def _mail_round_trip(stack: Stack, executor: Executor, round_trip: RoundTrip) -> HealthItem:
    fix = (
        "submission (postfix), the milter (rspamd), delivery and IMAP (dovecot): "
        "the failing service above, or `mailstack logs postfix`"
    )
    try:
        found = round_trip(stack, executor)
    except MailstackError as error:
        return judge_probe("mail round trip", "postfix", None, _error(error), fix)
    except OSError as error:  # the stack's CA file (tls/ca.pem) unreadable
        return judge_probe("mail round trip", "postfix", None, str(error), fix)
    answer = f"587 -> 993 as {found.address}: {found.seconds:.1f} s"
    return judge_probe("mail round trip", "postfix", answer, "", fix)


# Runs one drill per name (argv) side by side, each output line after the name it answers.
_ASK_EACH = 'for q; do drill @127.0.0.1 "$q" A 2>&1 | sed "s/^/$q /" & done; wait'
_SAFE_NAME = re.compile(r"[a-z0-9.-]{1,253}")


def _blocklists(stack: Stack, executor: Executor) -> HealthItem:
    if stack.config.mode == "sandbox":
        return exempt(
            blocklists.NAME, "", "sandbox mode: the stack resolves nothing on the Internet"
        )
    addresses = [a for a in (public_ipv4(stack.config), stack.config.dns.public_ipv6) if a]
    names = [name for _, _, name in blocklists.queries(addresses)]
    if not names:
        return blocklists.judge(addresses, {})
    argv = ["sh", "-c", _ASK_EACH, "blocklists", *(n for n in names if _SAFE_NAME.fullmatch(n))]
    try:
        found = run_with_status(executor, "resolver", argv)
    except MailstackError as error:
        fix = "the blocklists are asked through the resolver: `mailstack logs resolver`"
        return judge_probe(blocklists.NAME, "resolver", None, _error(error), fix)
    return blocklists.judge(addresses, parse_drill_answers(found.output, names))


def parse_drill_answers(output: str, names: list[str]) -> dict[str, blocklists.Answer]:
    """Lines "NAME <drill's line>" as {name: its rcode and A records}; a name without an
    rcode line is left out (no answer)."""
    rcodes: dict[str, str] = {}
    records: dict[str, list[str]] = {}
    wanted = set(names)
    for line in output.splitlines():
        name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        rcode = re.search(r"rcode: (\w+)", rest)
        if rcode:
            rcodes[name] = rcode.group(1)
        record = re.fullmatch(rf"{re.escape(name)}\.\s+\d+\s+IN\s+A\s+(\S+)\s*", rest)
        if record:
            records.setdefault(name, []).append(record.group(1))
    return {
        name: blocklists.Answer(rcode, tuple(records.get(name, ())))
        for name, rcode in rcodes.items()
    }


# --- the queue, the signatures, the DNS report, the security fixes --------------------------------


def _mail_queue(stack: Stack, executor: Executor, now: float) -> tuple[HealthItem, ...]:
    """The queue but this check's own round trip message (from the probe mailbox, arrived
    since the check began), which passes through it side by side with this look; with a
    relay host, whether it refuses the credentials (read from the same listing)."""
    prober = probe.probe_address(stack.config)
    try:
        queue = mailqueue.list_queue(executor)
    except MailstackError as error:
        fix = "`mailstack logs postfix`"
        return (judge_probe("mail queue", "postfix", None, _error(error), fix),)
    others = [
        message
        for message in queue.messages
        if not (message.sender == prober and message.arrival_time >= int(now))
    ]
    items = [judge_queue([message.arrival_time for message in others], now)]
    if relay.has_relays(stack.config.relay):
        items.append(
            judge_relay(
                relay.relay_names(stack.config.relay), relay.refusals(stack.config.relay, others)
            )
        )
    return tuple(items)


def _signatures(stack: Stack, executor: Executor, now: float) -> HealthItem:
    name = "antivirus signatures"
    if not stack.config.features.antivirus:
        return exempt(name, "clamav", "the antivirus is off (features.antivirus)")
    if stack.config.mode == "sandbox":
        return exempt(name, "clamav", "sandbox mode: local signatures, never updated")
    argv = ["find", CLAMAV_DATABASE, "-maxdepth", "1", "-name", "*.c[vl]d", "-printf", "%T@ %f\\n"]
    try:
        found = run_with_status(executor, "clamav", argv)
    except MailstackError as error:
        return judge_probe(name, "clamav", None, _error(error), "`mailstack logs clamav`")
    return judge_signatures(parse_mtimes(found.output), now)


def parse_mtimes(output: str) -> dict[str, float]:
    """`find -printf '%T@ %f\\n'` lines as {file: modification time}; other lines ignored."""
    found: dict[str, float] = {}
    for line in output.splitlines():
        stamp, _, name = line.strip().partition(" ")
        try:
            found[name] = float(stamp)
        except ValueError:
            continue
    return found


def _dns_report(executor: Executor) -> HealthItem:
    try:
        report = hostreports.read(executor, hostreports.DNS)
    except MailstackError as error:
        fix = "the report is kept in PostgreSQL (db); `mailstack check dns` asks DNS now"
        return judge_probe(
            "dns records", "", None, f"the DNS report cannot be read: {_error(error)}", fix
        )
    if report is None:
        return judge_dns_report(None, None)
    return judge_dns_report(report.body, report.age_seconds)


def _security(stack: Stack, now: float) -> HealthItem:
    """The stored security check (`check updates` and the daily run write it; it takes
    minutes, so it is never run here)."""
    try:
        state = securitycheck.load(stack.dir.root)
    except MailstackError as error:
        return HealthItem("security fixes", "", WARN, _error(error), error.hint or "")
    daily = stack.config.mode == "production" and stack.config.update.security != "off"
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return judge_security(state.report, state.last_run.get("outcome", ""), daily, moment)


# --- backups, certificate, free space -----------------------------------------------------------


def _backups(stack: Stack, executor: Executor, now: float) -> tuple[HealthItem, HealthItem]:
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    verified = verification.last_verify(stack.dir)
    verify = judge_last_verify(
        parse_time(verified.time) if verified else None,
        bool(verified and verified.ok),
        verified.error if verified else "",
        moment,
    )
    try:
        last = last_backup(stack, executor)
    except MailstackError as error:
        fix = "`mailstack backup list` lists the snapshots"
        return HealthItem("last backup", "", WARN, _error(error), fix), verify
    return judge_last_backup(last, moment), verify


def last_backup(stack: Stack, executor: Executor) -> datetime.datetime | None:
    """When the newest snapshot was written. A local repository: its snapshots/ files (restic
    writes one per snapshot and never changes it), read without restic or its password. A
    remote one: the backups host report (made every 15 minutes), which lists them."""
    target = parse_target(stack.config.backup.target)
    if target.kind == "local":
        try:
            written = [
                entry.stat().st_mtime for entry in (Path(target.path) / "snapshots").iterdir()
            ]
        except FileNotFoundError:
            return None
        except OSError as error:
            raise MailstackError(
                f"the repository's snapshots cannot be read: {error.strerror}"
            ) from None
        return datetime.datetime.fromtimestamp(max(written), datetime.UTC) if written else None
    report = hostreports.read(executor, hostreports.BACKUPS)
    if report is None or not isinstance(report.body, dict):
        raise MailstackError("no backups report yet: `mailstack jobs run` makes it")
    snapshots = report.body.get("snapshots") or []
    times = [parse_time(str(item.get("time", ""))) for item in snapshots if isinstance(item, dict)]
    known = [moment for moment in times if moment is not None]
    return max(known) if known else None


def _certificate(stack: Stack, now: float) -> HealthItem:
    leaf = certs.load_certificate(stack.dir.root / certs.TLS_DIR / "cert.pem")
    return judge_certificate(
        leaf.not_valid_after_utc if leaf else None,
        datetime.datetime.fromtimestamp(now, datetime.UTC),
    )


def _free_space(stack: Stack, engine: Engine) -> tuple[HealthItem, HealthItem]:
    volumes = _space("free space: volumes", engine.root_dir(), "Docker's data root")
    target = parse_target(stack.config.backup.target)
    if target.kind != "local":
        backups = exempt(
            "free space: backups", "", f"a {target.kind} target: its server's to watch"
        )
    else:
        backups = _space("free space: backups", _existing(Path(target.path)), "the backup target")
    return volumes, backups


def _space(name: str, path: str | None, what: str) -> HealthItem:
    if path is None:
        return HealthItem(name, "", WARN, f"{what} is not known", "is Docker running?")
    try:
        usage = shutil.disk_usage(path)
    except OSError as error:
        return HealthItem(name, "", WARN, f"{what} {path}: {error.strerror}", "")
    return judge_free_space(name, path, usage.total, usage.free)


def _existing(path: Path) -> str:
    """The path, or its nearest existing parent (a repository not made yet lands there)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return str(path)
