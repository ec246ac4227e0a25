"""The admin service's internal endpoints (/internal/v1), for the webmail's second factor
only: the rules are in mailstack.api.webmail_mfa (unit-tested there, without FastAPI);
this file parses and calls. Never proxied by the front (it serves /api/v1/ alone), left out
of the OpenAPI document, and admitted only from the webmail's fixed address with the shared
secret webmail_mfa_key (the entrypoint copies the secrets to RUNTIME for the API's user).
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
import datetime
import os
import time
from pathlib import Path

from database import EXECUTOR
from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Extra

from mailstack.adapters.bansclient import BansClient
from mailstack.adapters.psql import Actor, acting_as
from mailstack.api import webmail_mfa
from mailstack.api.operations import ApiError
from mailstack.errors import UsageError
from mailstack.identity import sealing

RUNTIME = Path(os.environ.get("MAILSTACK_RUNTIME", "/run/mailstack/admin"))
WEBMAIL = os.environ.get("MAILSTACK_WEBMAIL_ADDRESS", "")  # empty: no webmail in this stack
BANS_URL = os.environ.get("MAILSTACK_BANS_URL", "")  # empty: policy.bans is off
FAIL_CLOSED = os.environ.get("MAILSTACK_BANS_FAIL_CLOSED", "") == "yes"

router = APIRouter(prefix="/internal/v1", include_in_schema=False)


class StatusQuestion(BaseModel):
    address: str

    class Config:
        extra = Extra.forbid


class CodeQuestion(BaseModel):
    address: str
    code: str
    client: str  # the browser's address, as the front gave it to PHP (REMOTE_ADDR)

    class Config:
        extra = Extra.forbid


def _read(name: str) -> str:
    try:
        return (RUNTIME / name).read_text(encoding="ascii").strip()
    except OSError:
        return ""


# Read once at start (the entrypoint has copied them): no file read per request.
LINK = webmail_mfa.WebmailLink(WEBMAIL, _read("webmail_mfa_key"))
MFA_KEY = sealing.read_key(RUNTIME / "mfa_key")


def _admit(request: Request, key: str | None) -> None:
    if not WEBMAIL:
        raise ApiError(404, "there is no webmail in this stack")
    peer = request.client.host if request.client else None
    LINK.admit(peer, request.headers.get("x-forwarded-for"), key)


def _bans() -> BansClient | None:
    if not BANS_URL:
        return None
    return BansClient(
        BANS_URL, _read("bans_api_key"), fail_closed=FAIL_CLOSED, protocol=webmail_mfa.PROTOCOL
    )


BANS = _bans()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@router.post("/mfa/status")
def mfa_status(
    request: Request,
    question: StatusQuestion,
    x_mailstack_key: str | None = Header(None),
) -> dict:
    _admit(request, x_mailstack_key)
    return webmail_mfa.status(EXECUTOR, question.address)


@router.post("/mfa/verify")
def mfa_verify(
    request: Request,
    question: CodeQuestion,
    x_mailstack_key: str | None = Header(None),
) -> dict:
    _admit(request, x_mailstack_key)
    try:
        actor = Actor(f"mailbox:{question.address.strip().lower()}", question.client.strip())
    except UsageError:
        actor = Actor("webmail:mfa", "unknown")
    with acting_as(actor):
        return webmail_mfa.verify(
            EXECUTOR,
            MFA_KEY,
            BANS,
            question.address,
            question.code,
            question.client,
            now=_now,
            sleep=time.sleep,
        )
