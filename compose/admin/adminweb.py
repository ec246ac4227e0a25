"""The admin service's web pages at /admin/: sign-in (password, then the TOTP code or its
enrolment), the dashboard and the mailboxes, server-rendered with Jinja2 (Debian's), one
small CSS file and no JavaScript.

A thin shell over mailstack.api.signin and mailstack.identity.sessions (unit-tested there,
with no web framework): it reads forms and the cookie, checks the form's CSRF token, waits
out the bans service's delay without holding a thread, and renders what the core returns.
Blocking work (psql, Argon2, the bans service) runs in the thread pool.

Cookies: __Host-mailstack-admin holds the session id; __Host-mailstack-signin a
pre-session id whose token protects the sign-in form itself. Both Secure, HttpOnly,
SameSite=Strict, Path=/ (the __Host- prefix demands Secure and Path=/ and forbids a Domain).
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import segno
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from mailstack.adapters import psql
from mailstack.adapters.bansclient import BansClient
from mailstack.adapters.localpsql import LocalPsql
from mailstack.api import operations, signin
from mailstack.api.operations import ApiError
from mailstack.errors import UsageError
from mailstack.identity import sealing, sessions
from mailstack.identity.sessions import Session
from mailstack.units import human_size

LOG = logging.getLogger("mailstack.admin.web")
EXECUTOR = LocalPsql()
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
# The first page each stage of a session belongs on.
HOME = {
    None: "/admin/signin",
    sessions.PASSWORD: "/admin/code",
    sessions.ENROL: "/admin/enrol",
    sessions.FULL: "/admin/",
}

router = APIRouter(prefix="/admin", include_in_schema=False)


# --- helpers -------------------------------------------------------------------------------


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _blocking(function: Callable[..., Any], *args: Any, actor: Any = None) -> Any:
    """Run blocking work in the thread pool, acting as `actor` there (a context variable)."""

    def run() -> Any:
        if actor is None:
            return function(*args)
        with psql.acting_as(actor):
            return function(*args)

    return await run_in_threadpool(run)


def _page(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    values.setdefault("session", None)
    values.setdefault("error", None)
    values.setdefault("notice", None)
    return HTMLResponse(PAGES.get_template(template).render(**values), status_code=status)


def _set_cookie(response: Response, name: str, value: str) -> None:
    response.set_cookie(name, value, path="/", secure=True, httponly=True, samesite="strict")


def _redirect(where: str, session: Session | None = None) -> RedirectResponse:
    response = RedirectResponse(where, status_code=303)
    if session is not None:
        _set_cookie(response, SESSION_COOKIE, session.id)
    return response


async def _session(request: Request) -> Session | None:
    return await _blocking(sessions.lookup, EXECUTOR, request.cookies.get(SESSION_COOKIE))


def _forbidden(session: Session | None = None) -> HTMLResponse:
    csrf = session.csrf_token if session else ""
    return _page("message.html", 403, title="Refused", error=FORBIDDEN, session=session, csrf=csrf)


def _actor_of_session(session: Session, request: Request) -> psql.Actor:
    return psql.Actor(f"admin:{session.admin}", _client(request))


async def _full(request: Request) -> Session | Response:
    """A full session, or the redirect to the step its session (or none) has reached."""
    session = await _session(request)
    if session is None or not session.full:
        return _redirect(HOME[session.stage if session else None])
    return session


# --- sign-in -------------------------------------------------------------------------------


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    session = await _session(request)
    if session is not None:
        return _redirect(HOME[session.stage])
    presession = request.cookies.get(SIGNIN_COOKIE)
    if not sessions.well_formed(presession):
        presession = sessions.new_id()
    response = _page("signin.html", csrf=sessions.csrf_token(presession), name="")
    _set_cookie(response, SIGNIN_COOKIE, presession)
    return response


@router.post("/signin")
async def signin_submit(request: Request) -> Response:
    form = await request.form()
    presession = request.cookies.get(SIGNIN_COOKIE)
    if not sessions.csrf_valid(presession, str(form.get(CSRF_FIELD) or "")):
        return _forbidden()
    csrf = sessions.csrf_token(str(presession))
    name, typed = str(form.get("name") or "").strip(), str(form.get("password") or "")
    attempt = await _blocking(signin.admit, GUARD, _client(request), name)
    if attempt.verdict.delay:
        await asyncio.sleep(attempt.verdict.delay)  # the bans service's delay: no thread held
    try:
        session = await _blocking(signin.password, EXECUTOR, GUARD, attempt, typed)
    except signin.Banned as banned:
        return _page("signin.html", 429, csrf=csrf, name=name, error=banned.message)
    except signin.SignInRefused as refused:
        return _page("signin.html", csrf=csrf, name=name, error=refused.message)
    LOG.info("admin %s: password accepted from %s", session.admin, _client(request))
    return _redirect(HOME[session.stage], session)


@router.get("/code")
async def code_form(request: Request) -> Response:
    session = await _session(request)
    if session is None or session.stage != sessions.PASSWORD:
        return _redirect(HOME[session.stage if session else None])
    return _page("code.html", csrf=session.csrf_token)


@router.post("/code")
async def code_submit(request: Request) -> Response:
    form = await request.form()
    session = await _session(request)
    if session is None or session.stage != sessions.PASSWORD:
        return _redirect(HOME[session.stage if session else None])
    if not sessions.csrf_valid(session.id, str(form.get(CSRF_FIELD) or "")):
        return _forbidden()
    attempt = await _blocking(signin.admit, GUARD, _client(request), session.admin or "")
    if attempt.verdict.delay:
        await asyncio.sleep(attempt.verdict.delay)
    code = str(form.get("code") or "")
    try:
        full = await _blocking(
            signin.second_factor, EXECUTOR, GUARD, attempt, MFA_KEY, session, code, time.time()
        )
    except signin.Banned as banned:
        return _page("code.html", 429, csrf=session.csrf_token, error=banned.message)
    except signin.SignInRefused as refused:
        return _page("code.html", csrf=session.csrf_token, error=refused.message)
    LOG.info("admin %s: signed in from %s", full.admin, _client(request))
    return _redirect(HOME[sessions.FULL], full)


@router.get("/enrol")
async def enrol_form(request: Request) -> Response:
    session = await _session(request)
    if session is None or session.stage != sessions.ENROL:
        return _redirect(HOME[session.stage if session else None])
    return await _enrol_page(request, session)


async def _enrol_page(request: Request, session: Session, error: str | None = None) -> Response:
    enrolment = await _blocking(
        signin.enrolment, EXECUTOR, MFA_KEY, session, HOSTNAME,
        actor=_actor_of_session(session, request),
    )  # fmt: skip
    qr = segno.make(enrolment.uri, error="m").svg_inline(
        scale=4, title="QR code of the authenticator app's secret"
    )
    return _page(
        "enrol.html",
        400 if error else 200,
        csrf=session.csrf_token,
        secret=enrolment.secret,
        qr=Markup(qr),  # noqa: S704  # segno's own SVG of the otpauth URI; nothing typed in it
        error=error,
    )


@router.post("/enrol")
async def enrol_submit(request: Request) -> Response:
    form = await request.form()
    session = await _session(request)
    if session is None or session.stage != sessions.ENROL:
        return _redirect(HOME[session.stage if session else None])
    if not sessions.csrf_valid(session.id, str(form.get(CSRF_FIELD) or "")):
        return _forbidden()
    try:
        full, codes = await _blocking(
            signin.confirm_enrolment, EXECUTOR, MFA_KEY, session, str(form.get("code") or ""),
            time.time(), actor=_actor_of_session(session, request),
        )  # fmt: skip
    except signin.SignInRefused as refused:
        return await _enrol_page(request, session, refused.message)
    LOG.info("admin %s: second factor enrolled from %s", full.admin, _client(request))
    response = _page("recovery.html", session=full, csrf=full.csrf_token, codes=codes.codes)
    _set_cookie(response, SESSION_COOKIE, full.id)
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    form = await request.form()
    given = request.cookies.get(SESSION_COOKIE)
    if given is not None and not sessions.csrf_valid(given, str(form.get(CSRF_FIELD) or "")):
        return _forbidden()
    await _blocking(sessions.end, EXECUTOR, given)
    response = _redirect("/admin/signin")
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


# --- pages of a full session ---------------------------------------------------------------


@router.get("/")
async def dashboard(request: Request) -> Response:
    session = await _full(request)
    if isinstance(session, Response):
        return session
    who, _ = await _blocking(signin.acting, EXECUTOR, session, _client(request))
    return _page("dashboard.html", session=session, csrf=session.csrf_token, who=who)


@router.get("/mailboxes")
async def mailboxes(request: Request) -> Response:
    session = await _full(request)
    if isinstance(session, Response):
        return session
    return await _mailboxes_page(request, session)


async def _mailboxes_page(
    request: Request, session: Session, status: int = 200, **values: Any
) -> Response:
    who, actor = await _blocking(signin.acting, EXECUTOR, session, _client(request))
    listed = await _blocking(signin.visible_mailboxes, EXECUTOR, who, actor=actor)
    values.setdefault("address", "")
    values.setdefault("quota", "")
    return _page(
        "mailboxes.html", status, session=session, csrf=session.csrf_token, who=who,
        mailboxes=listed, default_quota=DEFAULT_QUOTA, **values,
    )  # fmt: skip


@router.post("/mailboxes")
async def add_mailbox(request: Request) -> Response:
    form = await request.form()
    session = await _full(request)
    if isinstance(session, Response):
        return session
    if not sessions.csrf_valid(session.id, str(form.get(CSRF_FIELD) or "")):
        return _forbidden(session)
    address, quota = str(form.get("address") or "").strip(), str(form.get("quota") or "").strip()
    typed = str(form.get("password") or "")
    who, actor = await _blocking(signin.acting, EXECUTOR, session, _client(request))
    try:
        created = await _blocking(
            signin.add_mailbox, EXECUTOR, who, address, typed, quota, DEFAULT_QUOTA, actor=actor
        )
    except ApiError as refused:
        return await _mailboxes_page(
            request, session, refused.status, error=refused.message, address=address, quota=quota
        )
    except UsageError as refused:
        answer = operations.refusal(refused)
        return await _mailboxes_page(
            request, session, answer.status, error=answer.message, address=address, quota=quota
        )
    return await _mailboxes_page(
        request, session, 201, notice=f"Added mailbox {created['address']}."
    )


@router.get("/style.css")
async def style() -> Response:
    return Response(STYLE, media_type="text/css", headers={"Cache-Control": "max-age=3600"})
