"""The admin service's REST API (/api/v1) on FastAPI 0.92 and pydantic 1.10 from Debian.

A thin shell: it parses requests (the pydantic models below exist for that and for the
OpenAPI document, /api/v1/openapi.json) and calls mailstack.api.operations, where the rules
and the mapping of refusals to status codes live (unit-tested there, with no web framework).
Every error is JSON {"error": "<one line>"}.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
import datetime
import logging
import os

import adminweb
import internal  # the webmail's second factor: /internal/v1
import webaccount
import webaliasdomains
import webdirectory
import webdnsbackups
import webpasskeys
import webqueue
import webrefresh
import webstatus
from database import EXECUTOR
from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Extra
from starlette.exceptions import HTTPException

from mailstack.adapters.psql import acting_as
from mailstack.api import (
    aliasdomains,
    apitokens,
    domains,
    hoststatus,
    hostviews,
    mailqueue,
    operations,
)
from mailstack.api.operations import ApiError, Caller
from mailstack.errors import MailstackError

DEFAULT_QUOTA = os.environ["MAILSTACK_DEFAULT_QUOTA"]
OWN_DOMAIN = os.environ["MAILSTACK_DOMAIN"]  # never removed through the API
LOG = logging.getLogger("mailstack.admin")
# Parsed by operations.authorize itself: every 401 has the same body, whatever was sent.
BEARER = HTTPBearer(auto_error=False, description="an API token: mailstack api token create")
PRESENTED = Security(BEARER)

app = FastAPI(
    title="mailstack admin API",
    version="1",
    openapi_url="/api/v1/openapi.json",
    docs_url=None,  # no pages with scripts from elsewhere; the document is enough
    redoc_url=None,
)
# The webmail's second factor (internal.py): never behind the front, webmail only.
app.include_router(internal.router)
app.include_router(adminweb.router)  # the web pages at /admin/ (adminweb.py)
app.include_router(webaccount.router)  # users' self-service at /account/ (webaccount.py)
app.include_router(webpasskeys.router)  # passkeys: sign-in and the Passkeys page
app.include_router(webdirectory.router)  # domains, aliases, tokens, audit (webdirectory.py)
app.include_router(webqueue.router)  # the mail queue page (webqueue.py)
app.include_router(webstatus.router)  # health and bans (webstatus.py)
app.include_router(webaliasdomains.router)  # alias domains, sender grants (webaliasdomains.py)
app.include_router(webdnsbackups.router)  # DNS and DKIM rotation, backups (webdnsbackups.py)
app.include_router(webrefresh.router)  # every host-report page's "Refresh now" (webrefresh.py)


class Error(BaseModel):
    error: str


class NewMailbox(BaseModel):
    address: str
    password: str
    quota: str | None = None  # e.g. "2G"; none: mailboxes.default_quota

    class Config:
        extra = Extra.forbid


class Mailbox(BaseModel):
    address: str
    domain: str
    quota_bytes: int
    used_bytes: int | None  # Dovecot's quota use (quota_clone); null until it recorded one
    messages: int | None
    active: bool
    created: str


class MailboxList(BaseModel):
    mailboxes: list[Mailbox]


class CreatedMailbox(BaseModel):
    address: str
    domain: str
    quota_bytes: int


class MailboxChange(BaseModel):
    password: str | None = None
    quota: str | None = None  # e.g. "2G", "0" for none

    class Config:
        extra = Extra.forbid


class ChangedMailbox(BaseModel):
    address: str
    password_changed: bool
    quota_bytes: int | None


class RemovedMailbox(BaseModel):
    address: str
    removed_aliases: list[str]
    stored_mail: str


class NewDomain(BaseModel):
    name: str

    class Config:
        extra = Extra.forbid


class Domain(BaseModel):
    name: str
    active: bool
    mailboxes: int
    quota_bytes: int  # the domain quota; 0: none
    allocated_bytes: int  # the sum of its mailboxes' quotas
    created: str
    dkim_key: str  # published | queued | failed
    dkim_key_detail: str


class DomainList(BaseModel):
    domains: list[Domain]


class CreatedDomain(BaseModel):
    name: str
    dkim_key: str
    job: int
    note: str


class DomainChange(BaseModel):
    quota: str  # e.g. "10G", or "none"

    class Config:
        extra = Extra.forbid


class ChangedDomain(BaseModel):
    name: str
    quota_bytes: int
    previous_quota_bytes: int
    allocated_bytes: int


class RemovedDomain(BaseModel):
    name: str
    stored_mail: str


class NewAlias(BaseModel):
    source: str  # an address, or @domain for a catch-all
    destinations: list[str]

    class Config:
        extra = Extra.forbid


class Alias(BaseModel):
    source: str
    domain: str
    destinations: list[str]


class AliasList(BaseModel):
    aliases: list[Alias]


class CreatedAlias(BaseModel):
    source: str
    added: list[str]
    already_present: list[str]


class RemovedAlias(BaseModel):
    source: str
    removed: list[str]


class NewToken(BaseModel):
    name: str
    scopes: list[str]
    expires: str | None = None  # e.g. "90d"; none: never

    class Config:
        extra = Extra.forbid


class Token(BaseModel):
    name: str
    scopes: list[str]
    state: str
    created: str
    expires: str | None
    revoked: str | None
    last_used: str | None
    created_by: str | None


class TokenList(BaseModel):
    tokens: list[Token]


class CreatedToken(BaseModel):
    name: str
    scopes: list[str]
    expires: str | None
    created_by: str | None
    token: str  # shown only now


class RevokedToken(BaseModel):
    name: str
    revoked: str
    already: bool


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


# The host reports' routes (mailstack.api.hostviews): each report's body is the host's
# (runtime.reports' producers), passed on as it is.
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


ERRORS = {status: {"model": Error} for status in (400, 401, 403, 404, 409)}


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _scope(needed: str):  # a FastAPI dependency
    """The token and the principal it acts for, when it grants `needed`. A dependency:
    FastAPI runs it before it reads the body, so a client without a valid token learns
    nothing of the body's rules."""

    def authorized(
        credentials: HTTPAuthorizationCredentials | None = PRESENTED,
    ) -> Caller:
        authorization = f"Bearer {credentials.credentials}" if credentials else None
        return operations.authorize_caller(EXECUTOR, authorization, needed, _now())

    return authorized


# FastAPI's markers, made once (its parameters' defaults name them).
READ = Depends(_scope("read"))
ACCOUNTS = Depends(_scope("accounts"))
DOMAINS = Depends(_scope("domains"))
ADMIN = Depends(_scope("admin"))
DOMAIN_FILTER = Query(None, description="only this domain's mailboxes")
ALIAS_DOMAIN_FILTER = Query(None, description="only this domain's aliases")
DESTINATIONS = Query([], alias="destination", description="only these destinations")
ADDRESS = Path(..., description="the mailbox's address")
DOMAIN_NAME = Path(..., description="the domain")
SOURCE = Path(..., description="the alias source: an address, or @domain")
TOKEN_NAME = Path(..., description="the token's name")
QUEUE_ID = Path(..., description="a Postfix queue id (retry: or ALL)")


@app.exception_handler(ApiError)
async def refused(request: Request, error: ApiError) -> JSONResponse:
    # RFC 6750: a 401 names the scheme it wants.
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


@app.exception_handler(MailstackError)
async def failed(request: Request, error: MailstackError) -> JSONResponse:
    LOG.error("%s %s: %s", request.method, request.url.path, error.message)
    answer = operations.refusal(error)
    return JSONResponse(answer.body(), status_code=answer.status)


@app.exception_handler(RequestValidationError)
async def malformed(request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"][1:]) or "the request body"
    return JSONResponse({"error": f"{where}: {first['msg']}"}, status_code=400)


@app.exception_handler(HTTPException)
async def http_error(request: Request, error: HTTPException) -> JSONResponse:
    return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)


@app.get("/api/v1/mailboxes", response_model=MailboxList, responses=ERRORS)
def list_mailboxes(
    request: Request,
    domain: str | None = DOMAIN_FILTER,
    caller: Caller = READ,
) -> dict:
    """The mailboxes of the directory (scope read), a domain administrator's cut to its
    domains; usage figures are not available here."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return operations.list_mailboxes(EXECUTOR, caller.principal, domain)


@app.post("/api/v1/mailboxes", status_code=201, response_model=CreatedMailbox, responses=ERRORS)
def create_mailbox(
    request: Request,
    mailbox: NewMailbox,
    caller: Caller = ACCOUNTS,
) -> dict:
    """Add a mailbox (scope accounts), with the CLI's rules for the address and password."""
    # The audit log names the token and the client (0003_admin.sql's triggers).
    with acting_as(operations.actor(caller.identity, _client(request))):
        return operations.create_mailbox(
            EXECUTOR,
            caller.principal,
            mailbox.address,
            mailbox.password,
            mailbox.quota,
            DEFAULT_QUOTA,
        )


@app.patch("/api/v1/mailboxes/{address}", response_model=ChangedMailbox, responses=ERRORS)
def change_mailbox(
    request: Request,
    change: MailboxChange,
    address: str = ADDRESS,
    caller: Caller = ACCOUNTS,
) -> dict:
    """A new password (the CLI's strength rule) and/or quota (scope accounts)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return operations.change_mailbox(
            EXECUTOR, caller.principal, address, change.password, change.quota
        )


@app.delete("/api/v1/mailboxes/{address}", response_model=RemovedMailbox, responses=ERRORS)
def remove_mailbox(request: Request, address: str = ADDRESS, caller: Caller = ACCOUNTS) -> dict:
    """Remove a mailbox and its aliases (scope accounts); its stored mail is kept."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return operations.remove_mailbox(EXECUTOR, caller.principal, address)


@app.get("/api/v1/domains", response_model=DomainList, responses=ERRORS)
def list_domains(request: Request, caller: Caller = READ) -> dict:
    """The domains the caller manages, with each DKIM key's state (scope read)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return domains.list_domains(EXECUTOR, caller.principal)


@app.post("/api/v1/domains", status_code=201, response_model=CreatedDomain, responses=ERRORS)
def create_domain(request: Request, domain: NewDomain, caller: Caller = DOMAINS) -> dict:
    """Add a mail domain (scope domains, administrators only); its DKIM key is queued for
    the host."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return domains.create_domain(EXECUTOR, caller.principal, domain.name)


@app.get("/api/v1/domains/{name}", response_model=Domain, responses=ERRORS)
def get_domain(request: Request, name: str = DOMAIN_NAME, caller: Caller = READ) -> dict:
    """One domain the caller manages, with its quota and what its mailboxes hold (scope
    read)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return domains.get_domain(EXECUTOR, caller.principal, name)


@app.patch("/api/v1/domains/{name}", response_model=ChangedDomain, responses=ERRORS)
def change_domain(
    request: Request, change: DomainChange, name: str = DOMAIN_NAME, caller: Caller = DOMAINS
) -> dict:
    """Set the domain quota (scope domains, administrators only); refused below what its
    mailboxes already hold."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return domains.set_domain_quota(EXECUTOR, caller.principal, name, change.quota)


@app.delete("/api/v1/domains/{name}", response_model=RemovedDomain, responses=ERRORS)
def remove_domain(request: Request, name: str = DOMAIN_NAME, caller: Caller = DOMAINS) -> dict:
    """Remove an unused mail domain (scope domains, administrators only); mail is kept."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return domains.remove_domain(EXECUTOR, caller.principal, name, OWN_DOMAIN)


@app.get("/api/v1/aliases", response_model=AliasList, responses=ERRORS)
def list_aliases(
    request: Request, domain: str | None = ALIAS_DOMAIN_FILTER, caller: Caller = READ
) -> dict:
    """Aliases and catch-alls of the caller's domains (scope read)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return domains.list_aliases(EXECUTOR, caller.principal, domain)


@app.post("/api/v1/aliases", status_code=201, response_model=CreatedAlias, responses=ERRORS)
def create_alias(request: Request, alias: NewAlias, caller: Caller = ACCOUNTS) -> dict:
    """Deliver mail for a source of the caller's domains to destinations anywhere (scope
    accounts)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return domains.create_alias(EXECUTOR, caller.principal, alias.source, alias.destinations)


@app.delete("/api/v1/aliases/{source}", response_model=RemovedAlias, responses=ERRORS)
def remove_alias(
    request: Request,
    source: str = SOURCE,
    destination: list[str] = DESTINATIONS,
    caller: Caller = ACCOUNTS,
) -> dict:
    """Remove an alias, or only the named destinations (scope accounts)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return domains.remove_alias(EXECUTOR, caller.principal, source, destination)


@app.get("/api/v1/tokens", response_model=TokenList, responses=ERRORS)
def list_tokens(request: Request, caller: Caller = ADMIN) -> dict:
    """API tokens (scope admin); a domain administrator's: only those it created."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return apitokens.list_tokens(EXECUTOR, caller, _now())


@app.post("/api/v1/tokens", status_code=201, response_model=CreatedToken, responses=ERRORS)
def create_token(request: Request, token: NewToken, caller: Caller = ADMIN) -> dict:
    """A new token (scope admin), acting for the same administrator, no wider; shown once."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return apitokens.create_token(EXECUTOR, caller, token.name, token.scopes, token.expires)


@app.delete("/api/v1/tokens/{name}", response_model=RevokedToken, responses=ERRORS)
def revoke_token(request: Request, name: str = TOKEN_NAME, caller: Caller = ADMIN) -> dict:
    """Revoke a token for good (scope admin); a domain administrator's: only its own."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return apitokens.revoke_token(EXECUTOR, caller, name, _now())


@app.get("/api/v1/queue", response_model=MailQueue, responses=ERRORS)
def mail_queue(request: Request, caller: Caller = ADMIN) -> dict:
    """The mail queue as the host last reported it, with the report's age (scope admin,
    administrators only)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return mailqueue.queue_report(EXECUTOR, caller.principal)


@app.post(
    "/api/v1/queue/{queue_id}/retry", status_code=202, response_model=QueuedJob, responses=ERRORS
)
def retry_queued(request: Request, queue_id: str = QUEUE_ID, caller: Caller = ADMIN) -> dict:
    """Deliver a queued message now, or every one (ALL): a host job (scope admin,
    administrators only)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return mailqueue.retry(EXECUTOR, caller.principal, queue_id)


@app.delete("/api/v1/queue/{queue_id}", status_code=202, response_model=QueuedJob, responses=ERRORS)
def delete_queued(request: Request, queue_id: str = QUEUE_ID, caller: Caller = ADMIN) -> dict:
    """Delete a queued message for good: a host job (scope admin, administrators only)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
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


# --- alias domains and sender grants (mailstack.api.aliasdomains) --------------------------------


class NewAliasDomain(BaseModel):
    name: str  # the alias domain: mail to user@name goes to user@target
    target: str  # a mail domain of this stack

    class Config:
        extra = Extra.forbid


class AliasDomain(BaseModel):
    name: str
    target: str
    created: str
    dkim_key: str  # published | queued | failed
    dkim_key_detail: str


class AliasDomainList(BaseModel):
    alias_domains: list[AliasDomain]


class CreatedAliasDomain(BaseModel):
    name: str
    target: str
    dkim_key: str
    job: int
    note: str


BANNED_ADDRESS = Path(..., description="the banned address (an IPv6 ban: its /64)")


@app.get("/api/v1/health", response_model=Health, responses=ERRORS)
def health(request: Request, caller: Caller = ADMIN) -> dict:
    """Every service's state from the host's latest health report (scope admin,
    administrators only), with its age."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return hoststatus.health(EXECUTOR, caller.principal).fields()


@app.get("/api/v1/bans", response_model=Bans, responses=ERRORS)
def list_bans(request: Request, caller: Caller = ADMIN) -> dict:
    """Banned and delayed addresses from the host's latest bans report (scope admin,
    administrators only), with its age."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return hoststatus.list_bans(EXECUTOR, caller.principal).fields()


@app.delete(
    "/api/v1/bans/{address:path}", status_code=202, response_model=QueuedClear, responses=ERRORS
)
def clear_ban(request: Request, address: str = BANNED_ADDRESS, caller: Caller = ADMIN) -> dict:
    """Lift a ban (scope admin, administrators only): queued for the host, which does it
    within a minute; the address by `mailstack security bans --clear`'s rule."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return hoststatus.clear_ban(EXECUTOR, caller.principal, address)


class RemovedAliasDomain(BaseModel):
    name: str
    target: str


class NewSender(BaseModel):
    sender: str  # an address, or @domain for every address of it
    mailbox: str  # the mailbox that may send as it

    class Config:
        extra = Extra.forbid


class Sender(BaseModel):
    sender: str
    mailbox: str


class SenderList(BaseModel):
    senders: list[Sender]


class CreatedSender(BaseModel):
    sender: str
    mailbox: str
    added: bool  # false: it was allowed already


ALIAS_DOMAIN_NAME = Path(..., description="the alias domain")
SENDER = Path(..., description="the address, or @domain, the mailbox may send as")
SENDER_MAILBOX = Query(..., description="the mailbox the grant is for")
SENDER_DOMAIN_FILTER = Query(None, description="only grants with this domain on either side")


@app.get("/api/v1/alias-domains", response_model=AliasDomainList, responses=ERRORS)
def list_alias_domains(request: Request, caller: Caller = READ) -> dict:
    """Alias domains of the caller's domains, each DKIM key's state (scope read)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return aliasdomains.list_alias_domains(EXECUTOR, caller.principal)


@app.post(
    "/api/v1/alias-domains", status_code=201, response_model=CreatedAliasDomain, responses=ERRORS
)
def create_alias_domain(request: Request, alias: NewAliasDomain, caller: Caller = DOMAINS) -> dict:
    """Deliver mail for user@name to user@target (scope domains; both the caller's); its DKIM
    key is queued for the host."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return aliasdomains.create_alias_domain(
            EXECUTOR, caller.principal, alias.name, alias.target
        )


@app.delete("/api/v1/alias-domains/{name}", response_model=RemovedAliasDomain, responses=ERRORS)
def remove_alias_domain(
    request: Request, name: str = ALIAS_DOMAIN_NAME, caller: Caller = DOMAINS
) -> dict:
    """Remove an alias domain of the caller's domains, and the grants to send as it (scope
    domains)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return aliasdomains.remove_alias_domain(EXECUTOR, caller.principal, name)


@app.get("/api/v1/senders", response_model=SenderList, responses=ERRORS)
def list_senders(
    request: Request, domain: str | None = SENDER_DOMAIN_FILTER, caller: Caller = READ
) -> dict:
    """Who may send as which other address, both sides in the caller's domains (scope read)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return aliasdomains.list_senders(EXECUTOR, caller.principal, domain)


@app.post("/api/v1/senders", status_code=201, response_model=CreatedSender, responses=ERRORS)
def create_sender(request: Request, grant: NewSender, caller: Caller = ACCOUNTS) -> dict:
    """Let a mailbox send as an address or @domain (scope accounts; both the caller's)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return aliasdomains.create_sender(EXECUTOR, caller.principal, grant.sender, grant.mailbox)


@app.delete("/api/v1/senders/{sender}", response_model=Sender, responses=ERRORS)
def remove_sender(
    request: Request,
    sender: str = SENDER,
    mailbox: str = SENDER_MAILBOX,
    caller: Caller = ACCOUNTS,
) -> dict:
    """Withdraw a grant (scope accounts)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return aliasdomains.remove_sender(EXECUTOR, caller.principal, sender, mailbox)


@app.get("/api/v1/backups", response_model=Backups, responses=ERRORS)
def list_backups(request: Request, caller: Caller = READ) -> dict:
    """The backups report (scope read, administrators only): the newest snapshots as
    `backup list` shows them, their count, the last `backup verify`."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return hostviews.backups(EXECUTOR, caller.principal)


@app.get("/api/v1/domains/{name}/dns", response_model=DomainDns, responses=ERRORS)
def domain_dns(request: Request, name: str = DOMAIN_NAME, caller: Caller = READ) -> dict:
    """A domain's records to publish, DKIM keys and `check dns` results, from the host's
    latest DNS report (scope read; its domains)."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return hostviews.domain_dns(EXECUTOR, caller.principal, name)


@app.post(
    "/api/v1/domains/{name}/dkim/rotate",
    status_code=202,
    response_model=QueuedRotation,
    responses=ERRORS,
)
def rotate_dkim(request: Request, name: str = DOMAIN_NAME, caller: Caller = DOMAINS) -> dict:
    """Queue a DKIM key rotation for the host (scope domains; its domains): `mailstack
    dkim rotate` there, then a new DNS report."""
    with acting_as(operations.actor(caller.identity, _client(request))):
        return hostviews.rotate_dkim(EXECUTOR, caller.principal, name)
