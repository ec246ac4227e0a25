"""The admin service's REST API (/api/v1) on FastAPI 0.92 and pydantic 1.10 from Debian.

A thin shell: it parses requests (the pydantic models below exist for that and for the
OpenAPI document, /api/v1/openapi.json) and calls mailstack.api.operations, where the rules
and the mapping of refusals to status codes live (unit-tested there, with no web framework).
Every error is JSON {"error": "<one line>"}. What every route shares (the token's scope, the
error statuses) is apicommon.py's; the host reports' routes are apireports.py's.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
import logging
import os

import adminweb
import apireports
import internal  # the webmail's second factor: /internal/v1
import webaccount
import webaliasdomains
import webdirectory
import webdnsbackups
import webpasskeys
import webqueue
import webrefresh
import webstatus
from apicommon import ACCOUNTS, ADMIN, DOMAIN_NAME, DOMAINS, ERRORS, READ, client, now
from database import EXECUTOR
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Extra
from starlette.exceptions import HTTPException

from mailstack.adapters.psql import acting_as
from mailstack.api import aliasdomains, apitokens, domains, operations
from mailstack.api.operations import ApiError, Caller
from mailstack.errors import MailstackError

DEFAULT_QUOTA = os.environ["MAILSTACK_DEFAULT_QUOTA"]
OWN_DOMAIN = os.environ["MAILSTACK_DOMAIN"]  # never removed through the API
LOG = logging.getLogger("mailstack.admin")

app = FastAPI(
    title="mailstack admin API",
    version="1",
    openapi_url="/api/v1/openapi.json",
    docs_url=None,  # no pages with scripts from elsewhere; the document is enough
    redoc_url=None,
)
# The webmail's second factor (internal.py): never behind the front, webmail only.
app.include_router(internal.router)
# The host reports' routes: queue, health, bans, backups, DNS, DKIM rotation (apireports.py).
app.include_router(apireports.router)
app.include_router(adminweb.router)  # the web pages at /admin/ (adminweb.py)
app.include_router(webaccount.router)  # users' self-service at /account/ (webaccount.py)
app.include_router(webpasskeys.router)  # passkeys: sign-in and the Passkeys page
app.include_router(webdirectory.router)  # domains, aliases, tokens, audit (webdirectory.py)
app.include_router(webqueue.router)  # the mail queue page (webqueue.py)
app.include_router(webstatus.router)  # health and bans (webstatus.py)
app.include_router(webaliasdomains.router)  # alias domains, sender grants (webaliasdomains.py)
app.include_router(webdnsbackups.router)  # DNS and DKIM rotation, backups (webdnsbackups.py)
app.include_router(webrefresh.router)  # every host-report page's "Refresh now" (webrefresh.py)


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


# FastAPI's markers, made once (its parameters' defaults name them).
DOMAIN_FILTER = Query(None, description="only this domain's mailboxes")
ALIAS_DOMAIN_FILTER = Query(None, description="only this domain's aliases")
DESTINATIONS = Query([], alias="destination", description="only these destinations")
ADDRESS = Path(..., description="the mailbox's address")
SOURCE = Path(..., description="the alias source: an address, or @domain")
TOKEN_NAME = Path(..., description="the token's name")


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
    with acting_as(operations.actor(caller.identity, client(request))):
        return operations.list_mailboxes(EXECUTOR, caller.principal, domain)


@app.post("/api/v1/mailboxes", status_code=201, response_model=CreatedMailbox, responses=ERRORS)
def create_mailbox(
    request: Request,
    mailbox: NewMailbox,
    caller: Caller = ACCOUNTS,
) -> dict:
    """Add a mailbox (scope accounts), with the CLI's rules for the address and password."""
    # The audit log names the token and the client (0003_admin.sql's triggers).
    with acting_as(operations.actor(caller.identity, client(request))):
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
    with acting_as(operations.actor(caller.identity, client(request))):
        return operations.change_mailbox(
            EXECUTOR, caller.principal, address, change.password, change.quota
        )


@app.delete("/api/v1/mailboxes/{address}", response_model=RemovedMailbox, responses=ERRORS)
def remove_mailbox(request: Request, address: str = ADDRESS, caller: Caller = ACCOUNTS) -> dict:
    """Remove a mailbox and its aliases (scope accounts); its stored mail is kept."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return operations.remove_mailbox(EXECUTOR, caller.principal, address)


@app.get("/api/v1/domains", response_model=DomainList, responses=ERRORS)
def list_domains(request: Request, caller: Caller = READ) -> dict:
    """The domains the caller manages, with each DKIM key's state (scope read)."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return domains.list_domains(EXECUTOR, caller.principal)


@app.post("/api/v1/domains", status_code=201, response_model=CreatedDomain, responses=ERRORS)
def create_domain(request: Request, domain: NewDomain, caller: Caller = DOMAINS) -> dict:
    """Add a mail domain (scope domains, administrators only); its DKIM key is queued for
    the host."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return domains.create_domain(EXECUTOR, caller.principal, domain.name)


@app.get("/api/v1/domains/{name}", response_model=Domain, responses=ERRORS)
def get_domain(request: Request, name: str = DOMAIN_NAME, caller: Caller = READ) -> dict:
    """One domain the caller manages, with its quota and what its mailboxes hold (scope
    read)."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return domains.get_domain(EXECUTOR, caller.principal, name)


@app.patch("/api/v1/domains/{name}", response_model=ChangedDomain, responses=ERRORS)
def change_domain(
    request: Request, change: DomainChange, name: str = DOMAIN_NAME, caller: Caller = DOMAINS
) -> dict:
    """Set the domain quota (scope domains, administrators only); refused below what its
    mailboxes already hold."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return domains.set_domain_quota(EXECUTOR, caller.principal, name, change.quota)


@app.delete("/api/v1/domains/{name}", response_model=RemovedDomain, responses=ERRORS)
def remove_domain(request: Request, name: str = DOMAIN_NAME, caller: Caller = DOMAINS) -> dict:
    """Remove an unused mail domain (scope domains, administrators only); mail is kept."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return domains.remove_domain(EXECUTOR, caller.principal, name, OWN_DOMAIN)


@app.get("/api/v1/aliases", response_model=AliasList, responses=ERRORS)
def list_aliases(
    request: Request, domain: str | None = ALIAS_DOMAIN_FILTER, caller: Caller = READ
) -> dict:
    """Aliases and catch-alls of the caller's domains (scope read)."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return domains.list_aliases(EXECUTOR, caller.principal, domain)


@app.post("/api/v1/aliases", status_code=201, response_model=CreatedAlias, responses=ERRORS)
def create_alias(request: Request, alias: NewAlias, caller: Caller = ACCOUNTS) -> dict:
    """Deliver mail for a source of the caller's domains to destinations anywhere (scope
    accounts)."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return domains.create_alias(EXECUTOR, caller.principal, alias.source, alias.destinations)


@app.delete("/api/v1/aliases/{source}", response_model=RemovedAlias, responses=ERRORS)
def remove_alias(
    request: Request,
    source: str = SOURCE,
    destination: list[str] = DESTINATIONS,
    caller: Caller = ACCOUNTS,
) -> dict:
    """Remove an alias, or only the named destinations (scope accounts)."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return domains.remove_alias(EXECUTOR, caller.principal, source, destination)


@app.get("/api/v1/tokens", response_model=TokenList, responses=ERRORS)
def list_tokens(request: Request, caller: Caller = ADMIN) -> dict:
    """API tokens (scope admin); a domain administrator's: only those it created."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return apitokens.list_tokens(EXECUTOR, caller, now())


@app.post("/api/v1/tokens", status_code=201, response_model=CreatedToken, responses=ERRORS)
def create_token(request: Request, token: NewToken, caller: Caller = ADMIN) -> dict:
    """A new token (scope admin), acting for the same administrator, no wider; shown once."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return apitokens.create_token(EXECUTOR, caller, token.name, token.scopes, token.expires)


@app.delete("/api/v1/tokens/{name}", response_model=RevokedToken, responses=ERRORS)
def revoke_token(request: Request, name: str = TOKEN_NAME, caller: Caller = ADMIN) -> dict:
    """Revoke a token for good (scope admin); a domain administrator's: only its own."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return apitokens.revoke_token(EXECUTOR, caller, name, now())


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
    with acting_as(operations.actor(caller.identity, client(request))):
        return aliasdomains.list_alias_domains(EXECUTOR, caller.principal)


@app.post(
    "/api/v1/alias-domains", status_code=201, response_model=CreatedAliasDomain, responses=ERRORS
)
def create_alias_domain(request: Request, alias: NewAliasDomain, caller: Caller = DOMAINS) -> dict:
    """Deliver mail for user@name to user@target (scope domains; both the caller's); its DKIM
    key is queued for the host."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return aliasdomains.create_alias_domain(
            EXECUTOR, caller.principal, alias.name, alias.target
        )


@app.delete("/api/v1/alias-domains/{name}", response_model=RemovedAliasDomain, responses=ERRORS)
def remove_alias_domain(
    request: Request, name: str = ALIAS_DOMAIN_NAME, caller: Caller = DOMAINS
) -> dict:
    """Remove an alias domain of the caller's domains, and the grants to send as it (scope
    domains)."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return aliasdomains.remove_alias_domain(EXECUTOR, caller.principal, name)


@app.get("/api/v1/senders", response_model=SenderList, responses=ERRORS)
def list_senders(
    request: Request, domain: str | None = SENDER_DOMAIN_FILTER, caller: Caller = READ
) -> dict:
    """Who may send as which other address, both sides in the caller's domains (scope read)."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return aliasdomains.list_senders(EXECUTOR, caller.principal, domain)


@app.post("/api/v1/senders", status_code=201, response_model=CreatedSender, responses=ERRORS)
def create_sender(request: Request, grant: NewSender, caller: Caller = ACCOUNTS) -> dict:
    """Let a mailbox send as an address or @domain (scope accounts; both the caller's)."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return aliasdomains.create_sender(EXECUTOR, caller.principal, grant.sender, grant.mailbox)


@app.delete("/api/v1/senders/{sender}", response_model=Sender, responses=ERRORS)
def remove_sender(
    request: Request,
    sender: str = SENDER,
    mailbox: str = SENDER_MAILBOX,
    caller: Caller = ACCOUNTS,
) -> dict:
    """Withdraw a grant (scope accounts)."""
    with acting_as(operations.actor(caller.identity, client(request))):
        return aliasdomains.remove_sender(EXECUTOR, caller.principal, sender, mailbox)
