"""`mailstack jobs run`: the host takes the jobs the admin service queued (mailstack.runtime.
jobqueue) and does them with the CLI's own code: a new domain's DKIM key is published as
`domain add` publishes it (stackfiles.publish_domain_key), a removed user's IMAP sessions
are ended as `mailbox remove` ends them. Each job is recorded done or failed with one line.
Then the host reports that are due (mailstack.runtime.reports) are written for the admin
service's pages, those a done job changed among them.

A job's target comes from the database, which the admin service may write: it is checked
again here by the CLI's rules before it names a file or a command argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailstack import services
from mailstack.accounts import directory, mailstore, names
from mailstack.errors import MailstackError, UsageError
from mailstack.mailauth import dkim, dkim_rotation
from mailstack.runtime import bans, hostreports, jobqueue, mailqueue, reports
from mailstack.stack.stackdir import Stack
from mailstack.stack.stackfiles import publish_domain_key

MAX_JOBS_PER_RUN = 100  # a flood of queued jobs waits for the next run, not forever in one


@dataclass(frozen=True)
class JobOutcome:
    ids: tuple[int, ...]
    kind: str
    target: str
    state: str  # done | failed
    reason: str

    def __str__(self) -> str:
        numbers = ", ".join(f"#{number}" for number in self.ids)
        return f"{numbers} {self.kind} {self.target}: {self.state}: {self.reason}"


@dataclass(frozen=True)
class JobsRun:
    outcomes: tuple[JobOutcome, ...]
    retried: int = 0
    skipped: str = ""  # why nothing was looked at (the stack is down)
    published: tuple[reports.Published, ...] = ()  # the host reports made after the jobs

    @property
    def failed(self) -> bool:
        return any(outcome.state == jobqueue.FAILED for outcome in self.outcomes)

    def __str__(self) -> str:
        if self.skipped:
            return self.skipped
        lines = [f"{self.retried} failed job(s) made pending again"] if self.retried else []
        lines += [str(outcome) for outcome in self.outcomes] or ["no pending host jobs"]
        return "\n".join(lines + [str(report) for report in self.published])


def run_jobs(stack: Stack, *, retry_failed: bool = False) -> JobsRun:
    """Take every pending job (at most MAX_JOBS_PER_RUN pieces of work) and do them: the
    domains' keys together (one render, one restart however many), then the rest."""
    if services.DB.name not in stack.compose.running_services():
        # A stopped stack has no queue to read and no admin service adding to it: the timer
        # keeps running through `down` and must not fail every minute meanwhile.
        return JobsRun((), skipped="the database is not running: no host jobs looked at")
    retried = jobqueue.retry_failed(stack.compose) if retry_failed else 0
    work: list[Work] = []
    while len(work) < MAX_JOBS_PER_RUN:
        taken = jobqueue.claim(stack.compose)
        if not taken:
            break
        work.append(Work(tuple(number for number, _, _ in taken), taken[0][1], taken[0][2]))
    keys = [piece for piece in work if piece.kind == jobqueue.PUBLISH_KEY]
    ended = _publish_keys(stack, keys) if keys else {}
    outcomes: list[JobOutcome] = []
    for piece in work:
        state, reason = ended[piece] if piece in ended else _run_one(stack, piece)
        jobqueue.finish(stack.compose, list(piece.ids), state, reason)
        outcomes.append(
            JobOutcome(piece.ids, piece.kind, piece.target, state, jobqueue.one_line(reason))
        )
    # A page that asked for a change (or a fresh report) sees the result in this run.
    forced = {
        _remade(outcome.kind, outcome.target)
        for outcome in outcomes
        if outcome.state == jobqueue.DONE and outcome.kind in (*_REFRESHES, jobqueue.REFRESH_REPORT)
    }
    return JobsRun(tuple(outcomes), retried, published=reports.publish_due(stack, forced))


@dataclass(frozen=True)
class Work:
    """Jobs of one kind and target, done once."""

    ids: tuple[int, ...]
    kind: str
    target: str


def _publish_keys(stack: Stack, pieces: list[Work]) -> dict[Work, tuple[str, str]]:
    """Every queued domain's key made, then published by one render and one restart (a
    restart of rspamd takes ~15 s: ten domains queued at once must not take ten)."""
    ended: dict[Work, tuple[str, str]] = {}
    hosted = directory.signing_domains(stack.compose)  # alias domains too: the API queues theirs
    wanted: dict[Work, str] = {}
    for piece in pieces:
        try:
            domain = names.require("DOMAIN", names.domain, piece.target)
        except MailstackError as error:
            ended[piece] = (jobqueue.FAILED, error.message)
            continue
        if domain not in hosted:
            reason = f"{domain} is no longer a mail domain of this stack; nothing made"
            ended[piece] = (jobqueue.FAILED, reason)
        else:
            wanted[piece] = domain
    if not wanted:
        return ended
    # The last one is published by publish_domain_key itself, which restarts rspamd only
    # when it made that domain's key: let it be one that has no key yet, if any.
    signing = set(dkim.read_selectors(stack.dir.root))
    order = sorted(wanted.values(), key=lambda domain: domain not in signing)
    *others, last = list(dict.fromkeys(order))
    try:
        for domain in others:
            dkim.ensure_key(stack.dir.root, domain)
        published = str(publish_domain_key(stack, last)).splitlines()[0]
    except MailstackError as error:
        return ended | dict.fromkeys(wanted, (jobqueue.FAILED, error.message))
    together = f" (published with {last})" if len(set(wanted.values())) > 1 else ""
    for piece, domain in wanted.items():
        line = published if domain == last else f"DKIM key for {domain} made{together}"
        ended[piece] = (jobqueue.DONE, line)
    return ended


def _kick_sessions(stack: Stack, target: str) -> str:
    if target.startswith("*@"):
        mask = "*@" + names.require("DOMAIN", names.domain, target[2:])
    else:
        mask = names.require("ADDRESS", names.mailbox, target)
    mailstore.kick_sessions(stack.compose, mask)
    return f"ended the IMAP sessions of {mask} (if any)"


def _clear_ban(stack: Stack, target: str) -> str:
    # The CLI's rule for `security bans --clear` (an IP address, an IPv6 /64): a target the
    # database was made to hold is refused here in one line, before bansd hears of it.
    address = bans.client_address(target)
    return str(bans.clear(stack.compose, stack.config, [address]))


def _rotate_dkim(stack: Stack, target: str) -> str:
    """`mailstack dkim rotate DOMAIN` (without --now): a new key published beside the
    active one, signing switched only once the stack's resolver serves its record; run
    again while it waits, it checks again."""
    domain = names.require("DOMAIN", names.domain, target)
    if domain not in _hosted(stack):
        raise UsageError(f"{domain} is not a mail domain of this stack; no key rotated")
    rotation = dkim_rotation.rotate(stack, domain, now=False)
    selector = rotation.key.selector
    if rotation.switched:
        kept = (
            f"; the old key {rotation.previous} stays published until "
            f"`mailstack dkim retire {domain}`"
            if rotation.previous
            else ""
        )
        return f"DKIM key {selector} of {domain} published and signing now{kept}"
    return (
        f"DKIM key {selector} of {domain} published; still signing with {rotation.previous}: "
        f"{rotation.key.record_name} is not visible through the stack's resolver yet "
        "(rotate again once it is published)"
    )


def _refresh_report(stack: Stack, target: str) -> str:
    if not hostreports.is_topic(target):
        raise UsageError(
            f"TOPIC: {target[:80]!r} is not a host report "
            f"(one of {', '.join(hostreports.TOPICS)}, or dns:DOMAIN)"
        )
    domain = hostreports.topic_domain(target)
    if domain is not None and domain not in _hosted(stack):
        raise UsageError(f"TOPIC: {domain} is not a mail domain of this stack; no report made")
    return f"the {target} report is made in this run"


def _hosted(stack: Stack) -> set[str]:
    return {found.name for found in directory.list_domains(stack.compose)}


def _remade(kind: str, target: str) -> str:
    """The report a done job changed: a rotated key, only its domain's DNS report."""
    if kind == jobqueue.ROTATE_DKIM:
        try:
            return hostreports.domain_dns_topic(names.domain(target))
        except (ValueError, MailstackError):
            return hostreports.DNS  # the runner refused such a target: not reached
    return _REFRESHES.get(kind) or target


def _run_one(stack: Stack, piece: Work) -> tuple[str, str]:
    """(done or failed, the one-line reason) of one piece of work."""
    runner = _RUNNERS.get(piece.kind)
    if runner is None:  # a kind of a newer mailstack (the table's CHECK names them all)
        return jobqueue.FAILED, f"not a host job this mailstack knows: {piece.kind}"
    try:
        return jobqueue.DONE, runner(stack, piece.target)
    except MailstackError as error:
        return jobqueue.FAILED, error.message.splitlines()[0]


# Kinds done one by one (domain.publish_key is done in a batch: _publish_keys).
_RUNNERS: dict[str, Callable[[Stack, str], str]] = {
    jobqueue.KICK_SESSIONS: _kick_sessions,
    jobqueue.REFRESH_REPORT: _refresh_report,
    jobqueue.RETRY_QUEUED: mailqueue.retry_job,
    jobqueue.DELETE_QUEUED: mailqueue.delete_job,
    jobqueue.CLEAR_BAN: _clear_ban,
    jobqueue.ROTATE_DKIM: _rotate_dkim,
}

# The report a done job changes, made again in the same run.
_REFRESHES: dict[str, str] = {
    jobqueue.CLEAR_BAN: hostreports.BANS,
    jobqueue.RETRY_QUEUED: hostreports.QUEUE,
    jobqueue.DELETE_QUEUED: hostreports.QUEUE,
    jobqueue.ROTATE_DKIM: hostreports.DNS,  # that domain's part only: _remade
}
