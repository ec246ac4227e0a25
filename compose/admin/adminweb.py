"""The admin service's web pages at /admin/: sign-in (password, then the TOTP code or its
enrolment), the dashboard and the mailboxes, server-rendered with Jinja2 (Debian's), one
small CSS file and no JavaScript.

A thin shell over mailstack.api.signin and mailstack.identity.sessions (unit-tested there,
with no web framework): it reads forms and the cookie, checks the form's CSRF token, waits
out the bans service's delay without holding a thread, and renders what the core returns.
Blocking work (psql, Argon2, the bans service) runs in the thread pool.

The helpers every page shares (executor, cookies, CSRF field, pages, the session of a
request) are in webcommon.py.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
import time
from typing import Any

import segno
import webcommon as web
from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup

from mailstack.api import hoststatus, operations, signin
from mailstack.api.operations import ApiError
from mailstack.errors import UsageError
from mailstack.identity import principal, sessions
from mailstack.identity.sessions import Session

router = APIRouter(prefix="/admin", include_in_schema=False)


# --- sign-in -------------------------------------------------------------------------------


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    session = await web.current_session(request)
    if session is not None:
        return web.redirect(web.HOME[session.stage])
    presession = request.cookies.get(web.SIGNIN_COOKIE)
    if not sessions.well_formed(presession):
        presession = sessions.new_id()
    response = web.page("signin.html", csrf=sessions.csrf_token(presession), name="")
    web.set_cookie(response, web.SIGNIN_COOKIE, presession)
    return response


@router.post("/signin")
async def signin_submit(request: Request) -> Response:
    form = await request.form()
    presession = request.cookies.get(web.SIGNIN_COOKIE)
    if not sessions.csrf_valid(presession, str(form.get(web.CSRF_FIELD) or "")):
        return web.forbidden()
    csrf = sessions.csrf_token(str(presession))
    name, typed = str(form.get("name") or "").strip(), str(form.get("password") or "")
    attempt = await web.admitted(request, name)
    try:
        session = await web.blocking(signin.password, web.EXECUTOR, web.GUARD, attempt, typed)
    except signin.Banned as banned:
        return web.page("signin.html", 429, csrf=csrf, name=name, error=banned.message)
    except signin.SignInRefused as refused:
        return web.page("signin.html", csrf=csrf, name=name, error=refused.message)
    web.LOG.info("admin %s: password accepted from %s", session.admin, web.client(request))
    return web.redirect(web.HOME[session.stage], session)


@router.get("/code")
async def code_form(request: Request) -> Response:
    session = await web.current_session(request)
    if session is None or session.stage != sessions.PASSWORD:
        return web.redirect(web.HOME[session.stage if session else None])
    return web.page("code.html", csrf=session.csrf_token)


@router.post("/code")
async def code_submit(request: Request) -> Response:
    form = await request.form()
    session = await web.current_session(request)
    if session is None or session.stage != sessions.PASSWORD:
        return web.redirect(web.HOME[session.stage if session else None])
    if not sessions.csrf_valid(session.id, str(form.get(web.CSRF_FIELD) or "")):
        return web.forbidden()
    attempt = await web.admitted(request, session.admin or "")
    code = str(form.get("code") or "")
    try:
        full = await web.blocking(
            signin.second_factor,
            web.EXECUTOR,
            web.GUARD,
            attempt,
            web.MFA_KEY,
            session,
            code,
            time.time(),
        )
    except signin.Banned as banned:
        return web.page("code.html", 429, csrf=session.csrf_token, error=banned.message)
    except signin.SignInRefused as refused:
        return web.page("code.html", csrf=session.csrf_token, error=refused.message)
    web.LOG.info("admin %s: signed in from %s", full.admin, web.client(request))
    return web.redirect(web.HOME[sessions.FULL], full)


@router.get("/enrol")
async def enrol_form(request: Request) -> Response:
    session = await web.current_session(request)
    if session is None or session.stage != sessions.ENROL:
        return web.redirect(web.HOME[session.stage if session else None])
    return await _enrol_page(request, session)


async def _enrol_page(request: Request, session: Session, error: str | None = None) -> Response:
    enrolment = await web.blocking(
        signin.enrolment, web.EXECUTOR, web.MFA_KEY, session, web.HOSTNAME,
        actor=web.actor_of_session(session, request),
    )  # fmt: skip
    qr = segno.make(enrolment.uri, error="m").svg_inline(
        scale=4, title="QR code of the authenticator app's secret"
    )
    return web.page(
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
    session = await web.current_session(request)
    if session is None or session.stage != sessions.ENROL:
        return web.redirect(web.HOME[session.stage if session else None])
    if not sessions.csrf_valid(session.id, str(form.get(web.CSRF_FIELD) or "")):
        return web.forbidden()
    try:
        full, codes = await web.blocking(
            signin.confirm_enrolment,
            web.EXECUTOR,
            web.MFA_KEY,
            session,
            str(form.get("code") or ""),
            time.time(),
            actor=web.actor_of_session(session, request),
        )
    except signin.SignInRefused as refused:
        return await _enrol_page(request, session, refused.message)
    web.LOG.info("admin %s: second factor enrolled from %s", full.admin, web.client(request))
    response = web.page("recovery.html", session=full, csrf=full.csrf_token, codes=codes.codes)
    web.set_cookie(response, web.SESSION_COOKIE, full.id)
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    form = await request.form()
    given = request.cookies.get(web.SESSION_COOKIE)
    if given is not None and not sessions.csrf_valid(given, str(form.get(web.CSRF_FIELD) or "")):
        return web.forbidden()
    await web.blocking(sessions.end, web.EXECUTOR, given)
    response = web.redirect("/admin/signin")
    response.delete_cookie(
        web.SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict"
    )
    return response


# --- pages of a full session ---------------------------------------------------------------


@router.get("/")
async def dashboard(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    who, actor = await web.blocking(signin.acting, web.EXECUTOR, session, web.client(request))
    # Administrators see the services' health in one line (hoststatus: the host's report).
    health = None
    if who.role == principal.ADMIN:
        report = await web.blocking(hoststatus.health, web.EXECUTOR, who, actor=actor)
        health = hoststatus.health_summary(report)
    return web.page(
        "dashboard.html", session=session, csrf=session.csrf_token, who=who, health=health
    )


@router.get("/mailboxes")
async def mailboxes(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    return await mailboxes_page(request, session)


async def mailboxes_page(
    request: Request, session: Session, status: int = 200, **values: Any
) -> Response:
    who, actor = await web.blocking(signin.acting, web.EXECUTOR, session, web.client(request))
    listed = await web.blocking(signin.visible_mailboxes, web.EXECUTOR, who, actor=actor)
    values.setdefault("address", "")
    values.setdefault("quota", "")
    return web.page(
        "mailboxes.html", status, session=session, csrf=session.csrf_token, who=who,
        mailboxes=listed, default_quota=web.DEFAULT_QUOTA, **values,
    )  # fmt: skip


@router.post("/mailboxes")
async def add_mailbox(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    address, quota = str(form.get("address") or "").strip(), str(form.get("quota") or "").strip()
    typed = str(form.get("password") or "")
    who, actor = await web.blocking(signin.acting, web.EXECUTOR, session, web.client(request))
    try:
        created = await web.blocking(
            signin.add_mailbox,
            web.EXECUTOR,
            who,
            address,
            typed,
            quota,
            web.DEFAULT_QUOTA,
            actor=actor,
        )
    except ApiError as refused:
        return await mailboxes_page(
            request, session, refused.status, error=refused.message, address=address, quota=quota
        )
    except UsageError as refused:
        answer = operations.refusal(refused)
        return await mailboxes_page(
            request, session, answer.status, error=answer.message, address=address, quota=quota
        )
    return await mailboxes_page(
        request, session, 201, notice=f"Added mailbox {created['address']}."
    )


@router.get("/style.css")
async def style() -> Response:
    return Response(web.STYLE, media_type="text/css", headers={"Cache-Control": "max-age=3600"})
