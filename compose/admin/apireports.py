"""The REST API's host-report routes (/api/v1): the mail queue and its host jobs, the
services' health, the bans and clearing one, the backups, a domain's DNS report and a DKIM
key rotation. The admin service has no Docker socket: each route reads a report the host
wrote (`mailstack jobs run`, runtime.hostreports) or queues a host job, through
mailstack.api's mailqueue, hoststatus and hostviews (the rules, unit-tested there); a
report's age is api.reportview's. A thin shell like adminapi.py, whose app includes this
router: the pydantic models below exist to parse and for the OpenAPI document.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
from apicommon import ADMIN, DOMAIN_NAME, DOMAINS, ERRORS, READ, client
from database import EXECUTOR
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel

from mailstack.adapters.psql import acting_as
from mailstack.api import hoststatus, hostviews, mailqueue, operations
from mailstack.api.operations import Caller

router = APIRouter()
QUEUE_ID = Path(..., description="a Postfix queue id (retry: or ALL)")


# --- the mail queue (mailstack.api.mailqueue), administrators only ------------------------------


class QueueRecipient(BaseModel):
    address: str
    delay_reason: str  # empty until a delivery attempt failed


class QueuedMessage(BaseModel):
    queue_id: str
    queue_name: str  # active, deferred, hold, incoming, maildrop
    arrival_time: str
    message_size: int
    sender: str  # empty: the null sender (a bounce)
    recipients: list[QueueRecipient]
    recipients_left_out: int


class MailQueue(BaseModel):
    taken: str | None  # when the host wrote the report (none yet: null)
    age_seconds: int | None
    error: str  # why the host could not read the queue, or why there is no report
    total: int
    oldest_seconds: int | None
    left_out: int  # messages not in the report (it holds the 200 oldest)
    messages: list[QueuedMessage]


class QueuedJob(BaseModel):
    job: int
    kind: str
    target: str
    note: str


@router.get("/api/v1/queue", response_model=MailQueue, responses=ERRORS)
def mail_queue(request: Request, caller: Caller = ADMIN) -> dict:
    """The mail queue as the host last reported it, with the report's age (scope admin,
    administrators only)."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return mailqueue.queue_report(EXECUTOR, caller.principal)


@router.post(
    "/api/v1/queue/{queue_id}/retry",
    status_code=202,
    response_model=QueuedJob,
    responses=ERRORS,
)
def retry_queued(request: Request, queue_id: str = QUEUE_ID, caller: Caller = ADMIN) -> dict:
    """Deliver a queued message now, or every one (ALL): a host job (scope admin,
    administrators only)."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return mailqueue.retry(EXECUTOR, caller.principal, queue_id)


@router.delete(
    "/api/v1/queue/{queue_id}", status_code=202, response_model=QueuedJob, responses=ERRORS
)
def delete_queued(request: Request, queue_id: str = QUEUE_ID, caller: Caller = ADMIN) -> dict:
    """Delete a queued message for good: a host job (scope admin, administrators only)."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return mailqueue.delete(EXECUTOR, caller.principal, queue_id)


# --- health and bans: the host's reports (mailstack.api.hoststatus), administrators only -------


class HostReportFields(BaseModel):
    taken: str | None  # when the host made the report (UTC); none before its first
    age_seconds: int | None
    stale: bool  # older than three of the host's minutes: is its timer running?
    error: str | None  # why there is no report: the host's one line


class ServiceHealth(BaseModel):
    service: str
    state: str
    health: str  # healthy, unhealthy, starting, or "" without a healthcheck
    status: str
    failing_checks: int
    last_check: str


class Health(HostReportFields):
    healthy: bool | None = None
    services: list[ServiceHealth] = []
    conflicts: list[str] = []
    security: str | None = None
    security_pending: bool | None = None


class Ban(BaseModel):
    address: str  # an IPv4 address, or an IPv6 /64
    since: str
    until: str
    seconds_left: int  # when the report was made
    failures: int
    protocols: list[str]
    logins: list[str]


class DelayedAddress(BaseModel):
    address: str
    failures: int
    delay: int


class BanSettings(BaseModel):
    max_failures: int
    window: int
    ban_time: int
    exempt: list[str]


class Bans(HostReportFields):
    bans: list[Ban] = []
    bans_left_out: int = 0
    delayed: list[DelayedAddress] = []
    delayed_left_out: int = 0
    settings: BanSettings | None = None


class QueuedClear(BaseModel):
    address: str
    job: int
    note: str


BANNED_ADDRESS = Path(..., description="the banned address (an IPv6 ban: its /64)")


@router.get("/api/v1/health", response_model=Health, responses=ERRORS)
def health(request: Request, caller: Caller = ADMIN) -> dict:
    """Every service's state from the host's latest health report (scope admin,
    administrators only), with its age."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return hoststatus.health(EXECUTOR, caller.principal).fields()


@router.get("/api/v1/bans", response_model=Bans, responses=ERRORS)
def list_bans(request: Request, caller: Caller = ADMIN) -> dict:
    """Banned and delayed addresses from the host's latest bans report (scope admin,
    administrators only), with its age."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return hoststatus.list_bans(EXECUTOR, caller.principal).fields()


@router.delete(
    "/api/v1/bans/{address:path}", status_code=202, response_model=QueuedClear, responses=ERRORS
)
def clear_ban(request: Request, address: str = BANNED_ADDRESS, caller: Caller = ADMIN) -> dict:
    """Lift a ban (scope admin, administrators only): queued for the host, which does it
    within a minute; the address by `mailstack security bans --clear`'s rule."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return hoststatus.clear_ban(EXECUTOR, caller.principal, address)


# --- backups and DNS: the host's reports (mailstack.api.hostviews) -----------------------------


# Each report's body is the host's (runtime.reports' producers), passed on as it is.
class ReportState(BaseModel):
    taken: str | None  # ISO 8601 UTC; None: not made yet
    age_seconds: int | None
    as_of: str
    error: str  # the host's one line when it could not make the report


class Backups(BaseModel):
    report: ReportState
    target: str | None
    repository: str | None
    count: int
    left_out: int
    snapshots: list[dict]
    last_verify: dict | None


class DomainDns(BaseModel):
    report: ReportState
    domain: str
    records: list[dict]
    keys: list[dict]
    checks: list[dict] | None  # None: not checked in that run (unchecked says why)
    unchecked: str
    verdict: str | None


class QueuedRotation(BaseModel):
    domain: str
    job: int
    note: str


@router.get("/api/v1/backups", response_model=Backups, responses=ERRORS)
def list_backups(request: Request, caller: Caller = READ) -> dict:
    """The backups report (scope read, administrators only): the newest snapshots as
    `backup list` shows them, their count, the last `backup verify`."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return hostviews.backups(EXECUTOR, caller.principal)


@router.get("/api/v1/domains/{name}/dns", response_model=DomainDns, responses=ERRORS)
def domain_dns(request: Request, name: str = DOMAIN_NAME, caller: Caller = READ) -> dict:
    """A domain's records to publish, DKIM keys and `check dns` results, from the host's
    latest DNS report (scope read; its domains)."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return hostviews.domain_dns(EXECUTOR, caller.principal, name)


@router.post(
    "/api/v1/domains/{name}/dkim/rotate",
    status_code=202,
    response_model=QueuedRotation,
    responses=ERRORS,
)
def rotate_dkim(request: Request, name: str = DOMAIN_NAME, caller: Caller = DOMAINS) -> dict:
    """Queue a DKIM key rotation for the host (scope domains; its domains): `mailstack
    dkim rotate` there, then a new DNS report."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return hostviews.rotate_dkim(EXECUTOR, caller.principal, name)
