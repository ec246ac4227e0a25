"""What every /api/v1 route of the admin service shares (adminapi.py's and apireports.py's):
the error body and the statuses every route may answer with, the bearer token each route
asks for with the scope it needs (a FastAPI dependency: the token is checked before the
body is read), the client's address for the audit log, and the clock.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
import datetime

from database import EXECUTOR
from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from mailstack.api import operations
from mailstack.api.operations import Caller

# Parsed by operations.authorize itself: every 401 has the same body, whatever was sent.
BEARER = HTTPBearer(auto_error=False, description="an API token: mailstack api token create")
PRESENTED = Security(BEARER)


class Error(BaseModel):
    error: str


ERRORS = {status: {"model": Error} for status in (400, 401, 403, 404, 409)}


def client(request: Request) -> str | None:
    return request.client.host if request.client else None


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def scope(needed: str):  # a FastAPI dependency
    """The token and the principal it acts for, when it grants `needed`. A dependency:
    FastAPI runs it before it reads the body, so a client without a valid token learns
    nothing of the body's rules."""

    def authorized(
        credentials: HTTPAuthorizationCredentials | None = PRESENTED,
    ) -> Caller:
        authorization = f"Bearer {credentials.credentials}" if credentials else None
        return operations.authorize_caller(EXECUTOR, authorization, needed, now())

    return authorized


# FastAPI's markers, made once (its parameters' defaults name them).
READ = Depends(scope("read"))
ACCOUNTS = Depends(scope("accounts"))
DOMAINS = Depends(scope("domains"))
ADMIN = Depends(scope("admin"))
DOMAIN_NAME = Path(..., description="the domain")
