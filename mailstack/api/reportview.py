"""A host report as every page and route of the admin service shows it, free of any web
framework: its age (when the host made it, how long ago, stale or not), the error the host
published instead of it, and a fresh one asked for. The one place for these: the health and
bans pages (hoststatus), the backups and DNS pages (hostviews) and the mail queue (mailqueue)
all take a report's age from `view`, and every "Refresh now" is `refresh`.

The admin service has no Docker socket: the host writes the reports (`mailstack jobs run`,
runtime.hostreports) every minute, and a refresh is a report.refresh host job
(runtime.jobqueue) that its next run does. Loaded by the admin service on Debian's own
Python: no pydantic, typer or rich.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailstack.adapters.psql import Executor
from mailstack.api.operations import refusals
from mailstack.errors import NotFound
from mailstack.identity.principal import Principal
from mailstack.runtime import hostreports, jobqueue

# Reports are made every minute: one older than this means the host's timer is not running.
STALE_AFTER_SECONDS = 180
NOT_YET = (
    "the host has not made this report yet: `mailstack jobs run` (every minute from its "
    "timer) makes it"
)
QUEUED = "queued as host job #{job}; the host does it within a minute"


@dataclass(frozen=True)
class ReportView:
    """A host report as a page or the API shows it: its body, or why there is none."""

    topic: str
    body: dict[str, Any]  # the producer's fields; {} with an error
    error: str | None  # the report could not be made, or was never made
    taken: str | None  # ISO 8601, UTC
    age_seconds: int | None

    @property
    def as_of(self) -> str:
        """The age line: as of HH:MM:SS UTC, N s ago; empty before the first report."""
        if self.taken is None or self.age_seconds is None:
            return ""
        return f"as of {self.taken[11:19]} UTC, {_ago(self.age_seconds)}"

    @property
    def stale(self) -> bool:
        return self.age_seconds is not None and self.age_seconds > STALE_AFTER_SECONDS

    def fields(self) -> dict[str, Any]:
        """The API's answer: when, how old, stale or not, the error, then the body."""
        return {
            "taken": self.taken,
            "age_seconds": self.age_seconds,
            "stale": self.stale,
            "error": self.error,
            **self.body,
        }


def view(report: hostreports.HostReport | None, topic: str) -> ReportView:
    if report is None:
        return ReportView(topic, {}, NOT_YET, None, None)
    body = report.body if isinstance(report.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), str) else None
    if not body and error is None:
        error = "the host's report is not readable"
    return ReportView(topic, {} if error else body, error, report.taken, report.age_seconds)


def refresh(executor: Executor, who: Principal, topic: str) -> dict[str, Any]:
    """Ask the host to make a report now (report.refresh): a server-wide one (an
    administrator), the DNS overview (anyone: it is cut to each reader's domains), or one
    domain's DNS report ("dns:<domain>": whoever manages the domain)."""
    domain = hostreports.topic_domain(topic)
    with refusals():
        if not hostreports.is_topic(topic):
            raise NotFound(f"no host report {topic[:40]!r}")
        if domain is not None:
            who.require_domain(domain)
        elif topic != hostreports.DNS:
            who.require_admin()
        job = jobqueue.queue(executor, jobqueue.REFRESH_REPORT, topic)
    return {"topic": topic, "job": job, "note": QUEUED.format(job=job)}


def _ago(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"
