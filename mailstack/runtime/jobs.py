"""`mailstack jobs run`: the host takes the jobs the admin service queued (mailstack.runtime.
jobqueue) and does them with the CLI's own code: a new domain's DKIM key is published as
`domain add` publishes it (stackfiles.publish_domain_key), a removed user's IMAP sessions
are ended as `mailbox remove` ends them. Each job is recorded done or failed with one line.

A job's target comes from the database, which the admin service may write: it is checked
again here by the CLI's rules before it names a file or a command argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailstack import services
from mailstack.accounts import directory, mailstore, names
from mailstack.errors import MailstackError
from mailstack.runtime import jobqueue
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

    @property
    def failed(self) -> bool:
        return any(outcome.state == jobqueue.FAILED for outcome in self.outcomes)

    def __str__(self) -> str:
        if self.skipped:
            return self.skipped
        lines = [f"{self.retried} failed job(s) made pending again"] if self.retried else []
        lines += [str(outcome) for outcome in self.outcomes] or ["no pending host jobs"]
        return "\n".join(lines)


def run_jobs(stack: Stack, *, retry_failed: bool = False) -> JobsRun:
    """Take pending jobs until none is left (at most MAX_JOBS_PER_RUN pieces of work)."""
    if services.DB.name not in stack.compose.running_services():
        # A stopped stack has no queue to read and no admin service adding to it: the timer
        # keeps running through `down` and must not fail every minute meanwhile.
        return JobsRun((), skipped="the database is not running: no host jobs looked at")
    retried = jobqueue.retry_failed(stack.compose) if retry_failed else 0
    outcomes: list[JobOutcome] = []
    for _ in range(MAX_JOBS_PER_RUN):
        taken = jobqueue.claim(stack.compose)
        if not taken:
            break
        ids = [number for number, _, _ in taken]
        _, kind, target = taken[0]
        state, reason = _run_one(stack, kind, target)
        jobqueue.finish(stack.compose, ids, state, reason)
        outcomes.append(JobOutcome(tuple(ids), kind, target, state, jobqueue.one_line(reason)))
    return JobsRun(tuple(outcomes), retried)


def _publish_key(stack: Stack, target: str) -> str:
    domain = names.require("DOMAIN", names.domain, target)
    if domain not in {found.name for found in directory.list_domains(stack.compose)}:
        raise MailstackError(f"{domain} is no longer a mail domain of this stack; nothing made")
    return str(publish_domain_key(stack, domain)).splitlines()[0]


def _kick_sessions(stack: Stack, target: str) -> str:
    if target.startswith("*@"):
        mask = "*@" + names.require("DOMAIN", names.domain, target[2:])
    else:
        mask = names.require("ADDRESS", names.mailbox, target)
    mailstore.kick_sessions(stack.compose, mask)
    return f"ended the IMAP sessions of {mask} (if any)"


def _run_one(stack: Stack, kind: str, target: str) -> tuple[str, str]:
    """(done or failed, the one-line reason) of one piece of work."""
    runner = _RUNNERS.get(kind)
    if runner is None:  # a kind of a newer mailstack (the table's CHECK names them all)
        return jobqueue.FAILED, f"not a host job this mailstack knows: {kind}"
    try:
        return jobqueue.DONE, runner(stack, target)
    except MailstackError as error:
        return jobqueue.FAILED, error.message.splitlines()[0]


_RUNNERS: dict[str, Callable[[Stack, str], str]] = {
    jobqueue.PUBLISH_KEY: _publish_key,
    jobqueue.KICK_SESSIONS: _kick_sessions,
}
