"""What every page of the admin service's web part shares (adminweb.py's sign-in and
mailboxes, and the pages beside it): the database executor, the secrets, the bans guard, the
cookies and their CSRF field, the Jinja2 pages, and the helpers that find a request's
session, run blocking work in the thread pool as the session's actor, and answer with a
page, a redirect or a refusal.

Cookies: __Host-mailstack-admin holds the session id; __Host-mailstack-signin a pre-session
id whose token protects the sign-in form itself. Both Secure, HttpOnly, SameSite=Strict,
Path=/ (the __Host- prefix demands Secure and Path=/ and forbids a Domain).
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from database import EXECUTOR  # the service's one set of connections (database.py)
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from mailstack.adapters import psql
from mailstack.adapters.bansclient import BansClient
from mailstack.api import operations, signin
from mailstack.api.operations import ApiError
from mailstack.errors import MailstackError
from mailstack.identity import sealing, sessions
from mailstack.identity.sessions import Session
from mailstack.units import human_size

LOG = logging.getLogger("mailstack.admin.web")
RUNTIME = Path("/run/mailstack/admin")
HOSTNAME = os.environ["MAILSTACK_HOSTNAME"]
DEFAULT_QUOTA = os.environ["MAILSTACK_DEFAULT_QUOTA"]
MFA_KEY = sealing.read_key(RUNTIME / "mfa_key")
GUARD: signin.Guard = (
    BansClient(
        os.environ["MAILSTACK_BANS_URL"],
        (RUNTIME / "bans_api_key").read_text(encoding="ascii").strip(),
        fail_closed=os.environ.get("MAILSTACK_BANS_FAIL_CLOSED") == "yes",
    )
    if os.environ.get("MAILSTACK_BANS_URL")
    else signin.NoGuard()
)
SESSION_COOKIE = "__Host-mailstack-admin"
SIGNIN_COOKIE = "__Host-mailstack-signin"
CSRF_FIELD = "csrf"
FORBIDDEN = (
    "This form has expired or did not come from this site; nothing was changed. "
    "Reload the page and try again."
)
STYLE = (Path(__file__).parent / "templates" / "style.css").read_bytes()
PAGES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
PAGES.filters["size"] = lambda value: "none" if value == 0 else human_size(value)
PAGES.filters["bytes"] = human_size  # a use: 0 is "0B", not "none"
# The first page each stage of a session belongs on.
HOME = {
    None: "/admin/signin",
    sessions.PASSWORD: "/admin/code",
    sessions.ENROL: "/admin/enrol",
    sessions.FULL: "/admin/",
}


def client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def blocking(function: Callable[..., Any], *args: Any, actor: Any = None) -> Any:
    """Run blocking work in the thread pool, acting as `actor` there (a context variable)."""

    def run() -> Any:
        if actor is None:
            return function(*args)
        with psql.acting_as(actor):
            return function(*args)

    return await run_in_threadpool(run)


def page(template: str, status: int = 200, area: str = "admin", **values: Any) -> HTMLResponse:
    """A page of the admin (area "admin") or of a user's self-service ("account"): the
    templates' `account` and `home` follow from it."""
    values.update(account=area == "account", home="/account/" if area == "account" else "/admin/")
    values.setdefault("session", None)
    values.setdefault("error", None)
    values.setdefault("notice", None)
    return HTMLResponse(PAGES.get_template(template).render(**values), status_code=status)


def set_cookie(response: Response, name: str, value: str) -> None:
    response.set_cookie(name, value, path="/", secure=True, httponly=True, samesite="strict")


def redirect(where: str, session: Session | None = None) -> RedirectResponse:
    response = RedirectResponse(where, status_code=303)
    if session is not None:
        set_cookie(response, SESSION_COOKIE, session.id)
    return response


async def current_session(request: Request) -> Session | None:
    return await blocking(sessions.lookup, EXECUTOR, request.cookies.get(SESSION_COOKIE))


def forbidden(session: Session | None = None) -> HTMLResponse:
    csrf = session.csrf_token if session else ""
    return page("message.html", 403, title="Refused", error=FORBIDDEN, session=session, csrf=csrf)


def actor_of_session(session: Session, request: Request) -> psql.Actor:
    return psql.Actor(f"admin:{session.admin}", client(request))


class Refused(Exception):
    """A page's refusal: its status and the one line shown on the form."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def run_as(
    request: Request, session: Session, function: Callable[..., Any], *args: Any
) -> Any:
    """An API operation (mailstack.api) as the session's principal, its first argument after
    the executor, acting as admin:NAME from the client's address; its refusal as Refused
    with the CLI's line."""
    who, actor = await blocking(signin.acting, EXECUTOR, session, client(request))
    try:
        return await blocking(function, EXECUTOR, who, *args, actor=actor)
    except signin.ReauthNeeded:
        raise  # the page sends the browser to confirm the password
    except ApiError as refused:
        raise Refused(refused.status, refused.message) from None
    except MailstackError as failed:
        answer = operations.refusal(failed)
        raise Refused(answer.status, answer.message) from None


def refused_page(session: Session, refused: Refused) -> HTMLResponse:
    """The page of a refusal that leaves no form to show it on (a domain administrator's
    403 on a page for administrators only)."""
    title = "Not found" if refused.status == 404 else "Refused"
    return page(
        "message.html", refused.status, title=title, error=refused.message,
        session=session, csrf=session.csrf_token,
    )  # fmt: skip


def field(form: FormData, name: str) -> str:
    """A form field as typed, trimmed ('' when absent)."""
    return str(form.get(name) or "").strip()


async def admitted(request: Request, login: str, guard: signin.Guard = GUARD) -> signin.Attempt:
    """Ask the bans service about this sign-in attempt (a password or a code), then wait out
    its delay without holding a thread; the caller checks the credential next."""
    attempt = await blocking(signin.admit, guard, client(request), login)
    if attempt.verdict.delay:
        await asyncio.sleep(attempt.verdict.delay)
    return attempt


async def full_session(request: Request, form: FormData | None = None) -> Session | Response:
    """A full session, or the redirect to the step its session (or none) has reached; with
    a posted form, its CSRF token checked too (403, nothing changed, without it)."""
    session = await current_session(request)
    if session is None or not session.full:
        return redirect(HOME[session.stage if session else None])
    if form is not None and not sessions.csrf_valid(session.id, str(form.get(CSRF_FIELD) or "")):
        return forbidden(session)
    return session
