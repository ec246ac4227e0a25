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

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Extra
from starlette.exceptions import HTTPException

import adminweb
from mailstack.adapters.localpsql import LocalPsql
from mailstack.adapters.psql import acting_as
from mailstack.api import operations
from mailstack.api.operations import ApiError
from mailstack.errors import MailstackError
from mailstack.identity.tokens import TokenIdentity

EXECUTOR = LocalPsql()
DEFAULT_QUOTA = os.environ["MAILSTACK_DEFAULT_QUOTA"]
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
app.include_router(adminweb.router)  # the web pages at /admin/ (adminweb.py)


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
    active: bool
    created: str


class MailboxList(BaseModel):
    mailboxes: list[Mailbox]
    usage_unavailable: str


class CreatedMailbox(BaseModel):
    address: str
    domain: str
    quota_bytes: int


ERRORS = {status: {"model": Error} for status in (400, 401, 403, 404, 409)}


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _scope(needed: str):  # a FastAPI dependency
    """The token's identity when it grants `needed`. A dependency: FastAPI runs it before it
    reads the body, so a client without a valid token learns nothing of the body's rules."""

    def authorized(
        credentials: HTTPAuthorizationCredentials | None = PRESENTED,
    ) -> TokenIdentity:
        authorization = f"Bearer {credentials.credentials}" if credentials else None
        return operations.authorize(EXECUTOR, authorization, needed, _now())

    return authorized


# FastAPI's markers, made once (its parameters' defaults name them).
READ = Depends(_scope("read"))
ACCOUNTS = Depends(_scope("accounts"))
DOMAIN_FILTER = Query(None, description="only this domain's mailboxes")


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
    identity: TokenIdentity = READ,
) -> dict:
    """The mailboxes of the directory (scope read); usage figures are not available here."""
    with acting_as(operations.actor(identity, _client(request))):
        return operations.list_mailboxes(EXECUTOR, domain)


@app.post("/api/v1/mailboxes", status_code=201, response_model=CreatedMailbox, responses=ERRORS)
def create_mailbox(
    request: Request,
    mailbox: NewMailbox,
    identity: TokenIdentity = ACCOUNTS,
) -> dict:
    """Add a mailbox (scope accounts), with the CLI's rules for the address and password."""
    # The audit log names the token and the client (0003_admin.sql's triggers).
    with acting_as(operations.actor(identity, _client(request))):
        return operations.create_mailbox(
            EXECUTOR, mailbox.address, mailbox.password, mailbox.quota, DEFAULT_QUOTA
        )
