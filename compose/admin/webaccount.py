"""Self-service pages for mailbox users at /account/: sign-in (address and account
password, then the TOTP code, or its enrolment where policy.mfa is required), then one page
to change the password, manage app passwords and the second factor, see the quota, and find
the webmail's settings (vacation, filters).

A thin shell over mailstack.api.selfservice (unit-tested there, with no web framework), in
the way of adminweb.py and with its helpers (webcommon.py), but with cookies of its own: a
user's session id never sits in the administrators' cookie, and sessions.lookup finds only
a mailbox's session here (and only an administrator's there).
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
import dataclasses
import os
import time
from typing import Any

import segno
import webcommon as web
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from mailstack.adapters.bansclient import BansClient
from mailstack.api import operations, selfservice, signin
from mailstack.errors import MailstackError, UsageError
from mailstack.identity import sessions
from mailstack.identity.sessions import Session

router = APIRouter(prefix="/account", include_in_schema=False)

SESSION_COOKIE = "__Host-mailstack-account"
SIGNIN_COOKIE = "__Host-mailstack-account-signin"
MFA_REQUIRED = os.environ.get("MAILSTACK_MFA") == "required"
# The webmail's settings: vacation and filters (ManageSieve) are there.
WEBMAIL_SETTINGS = "/?_task=settings"
GUARD: signin.Guard = (
    dataclasses.replace(web.GUARD, protocol=selfservice.PROTOCOL)
    if isinstance(web.GUARD, BansClient)
    else web.GUARD
)
HOME = {
    None: "/account/signin",
    sessions.PASSWORD: "/account/code",
    sessions.ENROL: "/account/enrol",
    sessions.FULL: "/account/",
}


async def _session(request: Request) -> Session | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    return await web.blocking(sessions.lookup, web.EXECUTOR, cookie, "mailbox")


def _redirect(where: str, session: Session | None = None) -> RedirectResponse:
    response = RedirectResponse(where, status_code=303)
    if session is not None:
        web.set_cookie(response, SESSION_COOKIE, session.id)
    return response


def _home_of(session: Session | None) -> RedirectResponse:
    return _redirect(HOME[session.stage if session else None])


def _forbidden(session: Session | None = None) -> HTMLResponse:
    csrf = session.csrf_token if session else ""
    return _page(
        "message.html", 403, title="Refused", error=web.FORBIDDEN, session=session,
        csrf=csrf,
    )  # fmt: skip


def _csrf_ok(session_id: str | None, form: Any) -> bool:
    return sessions.csrf_valid(session_id, str(form.get(web.CSRF_FIELD) or ""))


# --- sign-in -------------------------------------------------------------------------------


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    session = await _session(request)
    if session is not None:
        return _home_of(session)
    presession = request.cookies.get(SIGNIN_COOKIE)
    if not sessions.well_formed(presession):
        presession = sessions.new_id()
    response = _page("account_signin.html", csrf=sessions.csrf_token(presession), address="")
    web.set_cookie(response, SIGNIN_COOKIE, presession)
    return response


@router.post("/signin")
async def signin_submit(request: Request) -> Response:
    form = await request.form()
    presession = request.cookies.get(SIGNIN_COOKIE)
    if not _csrf_ok(presession, form):
        return _forbidden()
    csrf = sessions.csrf_token(str(presession))
    address, typed = str(form.get("address") or "").strip(), str(form.get("password") or "")
    attempt = await web.admitted(request, address, GUARD)
    try:
        session = await web.blocking(
            selfservice.password, web.EXECUTOR, GUARD, attempt, typed, MFA_REQUIRED
        )
    except signin.Banned as banned:
        return _page("account_signin.html", 429, csrf=csrf, address=address, error=banned.message)
    except signin.SignInRefused as refused:
        return _page("account_signin.html", csrf=csrf, address=address, error=refused.message)
    web.LOG.info("user %s: password accepted from %s", session.mailbox, web.client(request))
    return _redirect(HOME[session.stage], session)


@router.get("/code")
async def code_form(request: Request) -> Response:
    session = await _session(request)
    if session is None or session.stage != sessions.PASSWORD:
        return _home_of(session)
    return _page("code.html", csrf=session.csrf_token)


@router.post("/code")
async def code_submit(request: Request) -> Response:
    form = await request.form()
    session = await _session(request)
    if session is None or session.stage != sessions.PASSWORD:
        return _home_of(session)
    if not _csrf_ok(session.id, form):
        return _forbidden()
    attempt = await web.admitted(request, session.mailbox or "", GUARD)
    code = str(form.get("code") or "")
    try:
        full = await web.blocking(
            selfservice.second_factor, web.EXECUTOR, GUARD, attempt, web.MFA_KEY, session, code,
            time.time(), actor=selfservice.actor(session, web.client(request)),
        )  # fmt: skip
    except signin.Banned as banned:
        return _page("code.html", 429, csrf=session.csrf_token, error=banned.message)
    except signin.SignInRefused as refused:
        return _page("code.html", csrf=session.csrf_token, error=refused.message)
    web.LOG.info("user %s: signed in from %s", full.mailbox, web.client(request))
    return _redirect(HOME[sessions.FULL], full)


# --- the second factor: enrolment (required at sign-in, or chosen later) ------------------


def _may_enrol(session: Session | None) -> bool:
    return session is not None and session.stage in (sessions.ENROL, sessions.FULL)


@router.get("/enrol")
async def enrol_form(request: Request) -> Response:
    session = await _session(request)
    if session is None or not _may_enrol(session):
        return _home_of(session)
    return await _enrol_page(request, session)


async def _enrol_page(request: Request, session: Session, error: str | None = None) -> Response:
    try:
        enrolment = await web.blocking(
            selfservice.enrolment, web.EXECUTOR, web.MFA_KEY, session, web.HOSTNAME,
            actor=selfservice.actor(session, web.client(request)),
        )  # fmt: skip
    except signin.SignInRefused as refused:  # a factor is in force already
        return await _home_page(request, session, 409, error=refused.message)
    qr = segno.make(enrolment.uri, error="m").svg_inline(
        scale=4, title="QR code of the authenticator app's secret"
    )
    return _page(
        "enrol.html",
        400 if error else 200,
        session=session,
        csrf=session.csrf_token,
        secret=enrolment.secret,
        qr=Markup(qr),  # noqa: S704  # segno's own SVG of the otpauth URI; nothing typed in it
        required=session.stage == sessions.ENROL,
        error=error,
    )


@router.post("/enrol")
async def enrol_submit(request: Request) -> Response:
    form = await request.form()
    session = await _session(request)
    if session is None or not _may_enrol(session):
        return _home_of(session)
    if not _csrf_ok(session.id, form):
        return _forbidden(session)
    try:
        full, codes = await web.blocking(
            selfservice.confirm_enrolment, web.EXECUTOR, web.MFA_KEY, session,
            str(form.get("code") or ""), time.time(),
            actor=selfservice.actor(session, web.client(request)),
        )  # fmt: skip
    except signin.SignInRefused as refused:
        return await _enrol_page(request, session, refused.message)
    web.LOG.info("user %s: second factor enrolled from %s", full.mailbox, web.client(request))
    response = _page("recovery.html", session=full, csrf=full.csrf_token, codes=codes.codes)
    web.set_cookie(response, SESSION_COOKIE, full.id)
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    form = await request.form()
    given = request.cookies.get(SESSION_COOKIE)
    if given is not None and not _csrf_ok(given, form):
        return _forbidden()
    await web.blocking(sessions.end, web.EXECUTOR, given)
    response = _redirect("/account/signin")
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


# --- the account page ----------------------------------------------------------------------


async def _full(request: Request) -> Session | Response:
    session = await _session(request)
    if session is None or not session.full:
        return _home_of(session)
    return session


async def _home_page(
    request: Request, session: Session, status: int = 200, **values: Any
) -> Response:
    overview = await web.blocking(selfservice.overview, web.EXECUTOR, session)
    values.setdefault("new_app_password", None)
    values.setdefault("app_name", "")
    return _page(
        "account_home.html", status, session=session, csrf=session.csrf_token, overview=overview,
        mfa_required=MFA_REQUIRED, webmail_settings=WEBMAIL_SETTINGS, **values,
    )  # fmt: skip


@router.get("/")
async def home(request: Request) -> Response:
    session = await _full(request)
    if isinstance(session, Response):
        return session
    return await _home_page(request, session)


async def _full_form(request: Request) -> tuple[Session, Any] | Response:
    """A full session and its form, or the redirect (no session) or the 403 (no CSRF
    token): then nothing is done."""
    form = await request.form()
    session = await _full(request)
    if isinstance(session, Response):
        return session
    if not _csrf_ok(session.id, form):
        return _forbidden(session)
    return session, form


async def _act(request: Request, session: Session, function: Any, *args: Any) -> Any:
    """Run a change as the session's user: the audit log names mailbox:ADDRESS."""
    return await web.blocking(
        function, web.EXECUTOR, *args, actor=selfservice.actor(session, web.client(request))
    )


def _page(template: str, status: int = 200, **values: Any) -> Response:
    """A page of the account area (base.html's area "account": its title, links, sign-out)."""
    return web.page(template, status, area="account", **values)


def _refusal(error: MailstackError) -> tuple[int, str]:
    if isinstance(error, signin.Banned):
        return 429, error.message
    if isinstance(error, signin.SignInRefused):
        return 400, error.message
    answer = operations.refusal(error)
    return answer.status, answer.message


@router.post("/password")
async def change_password(request: Request) -> Response:
    found = await _full_form(request)
    if isinstance(found, Response):
        return found
    session, form = found
    attempt = await web.admitted(request, session.mailbox or "", GUARD)
    try:
        renewed = await _act(
            request, session, selfservice.change_password, GUARD, attempt, session,
            str(form.get("current") or ""), str(form.get("new") or ""),
            str(form.get("again") or ""),
        )  # fmt: skip
    except (signin.SignInRefused, UsageError) as refused:
        status, message = _refusal(refused)
        return await _home_page(request, session, status, error=message)
    web.LOG.info("user %s: password changed from %s", session.mailbox, web.client(request))
    notice = "Your password was changed; every other session with the old one has ended."
    response = await _home_page(request, renewed, notice=notice)
    web.set_cookie(response, SESSION_COOKIE, renewed.id)
    return response


@router.post("/app-passwords")
async def add_app_password(request: Request) -> Response:
    found = await _full_form(request)
    if isinstance(found, Response):
        return found
    session, form = found
    name = str(form.get("name") or "")
    try:
        created = await _act(request, session, selfservice.add_app_password, session, name)
    except UsageError as refused:
        status, message = _refusal(refused)
        return await _home_page(request, session, status, error=message, app_name=name)
    return await _home_page(request, session, 201, new_app_password=created)


@router.post("/app-passwords/remove")
async def remove_app_password(request: Request) -> Response:
    found = await _full_form(request)
    if isinstance(found, Response):
        return found
    session, form = found
    name = str(form.get("name") or "")
    try:
        await _act(request, session, selfservice.remove_app_password, session, name)
    except UsageError as refused:
        status, message = _refusal(refused)
        return await _home_page(request, session, status, error=message)
    return await _home_page(request, session, notice=f"Removed the app password {name}.")


@router.post("/mfa/disable")
async def disable_second_factor(request: Request) -> Response:
    found = await _full_form(request)
    if isinstance(found, Response):
        return found
    session, form = found
    attempt = await web.admitted(request, session.mailbox or "", GUARD)
    try:
        await _act(
            request, session, selfservice.disable_second_factor, GUARD, attempt, web.MFA_KEY,
            session, str(form.get("code") or ""), time.time(), MFA_REQUIRED,
        )  # fmt: skip
    except (signin.SignInRefused, UsageError) as refused:
        status, message = _refusal(refused)
        return await _home_page(request, session, status, error=message)
    web.LOG.info("user %s: second factor turned off from %s", session.mailbox, web.client(request))
    return await _home_page(request, session, notice="Your second factor was turned off.")
