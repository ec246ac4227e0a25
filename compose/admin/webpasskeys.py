"""The admin service's passkey pages: signing in with a passkey at the code step, and the
Passkeys page of a signed-in administrator (list, register, remove). A thin shell over
mailstack.api.passkeysignin (unit-tested there); the one script they need is passkey.js,
served from here (the front's CSP admits scripts from this site only).
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
from pathlib import Path

import webcommon as web
from fastapi import APIRouter, Request
from fastapi.responses import Response

from mailstack.api import passkeysignin, signin
from mailstack.errors import MailstackError, NotFound
from mailstack.identity import sessions
from mailstack.identity.sessions import Session

SCRIPT = (Path(__file__).parent / "static" / "passkey.js").read_bytes()

router = APIRouter(prefix="/admin", include_in_schema=False)


@router.get("/passkey.js")
async def script() -> Response:
    return Response(SCRIPT, media_type="text/javascript")


# --- signing in ------------------------------------------------------------------------------


@router.get("/passkey")
async def passkey_sign_in(request: Request) -> Response:
    session = await web.current_session(request)
    if session is None or session.stage != sessions.PASSWORD:
        return web.redirect(web.HOME[session.stage if session else None])
    try:
        ceremony = await web.blocking(passkeysignin.offer, web.EXECUTOR, session, web.HOSTNAME)
    except NotFound:
        return web.page(
            "code.html", csrf=session.csrf_token,
            error="You have no passkey yet: use your code (add a passkey once signed in).",
        )  # fmt: skip
    return web.page("passkey.html", csrf=session.csrf_token, options=ceremony.options)


@router.post("/passkey")
async def passkey_answer(request: Request) -> Response:
    form = await request.form()
    session = await web.current_session(request)
    if session is None or session.stage != sessions.PASSWORD:
        return web.redirect(web.HOME[session.stage if session else None])
    if not sessions.csrf_valid(session.id, str(form.get(web.CSRF_FIELD) or "")):
        return web.forbidden()
    attempt = await web.admitted(request, session.admin or "")
    try:
        full = await web.blocking(
            passkeysignin.prove, web.EXECUTOR, web.GUARD, attempt, session, web.HOSTNAME,
            str(form.get("answer") or ""),
        )  # fmt: skip
    except signin.Banned as banned:
        return web.page("code.html", 429, csrf=session.csrf_token, error=banned.message)
    except signin.SignInRefused as refused:
        return web.page("code.html", csrf=session.csrf_token, error=refused.message)
    web.LOG.info("admin %s: signed in with a passkey from %s", full.admin, web.client(request))
    return web.redirect(web.HOME[sessions.FULL], full)


# --- the Passkeys page -----------------------------------------------------------------------


@router.get("/passkeys")
async def passkeys_page(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    return await _listing(request, session)


@router.post("/passkeys/register")
async def register(request: Request) -> Response:
    """The name (and the password, unless typed within five minutes): the browser's part."""
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    name = str(form.get("name") or "").strip()
    typed = str(form.get("password") or "")
    actor = web.actor_of_session(session, request)
    try:
        if typed:
            attempt = await web.admitted(request, session.admin or "")
            session = await web.blocking(
                signin.reauthenticate, web.EXECUTOR, web.GUARD, attempt, session, typed
            )
        ceremony = await web.blocking(
            passkeysignin.begin_registration, web.EXECUTOR, session, web.HOSTNAME, actor=actor
        )
    except (signin.ReauthNeeded, signin.SignInRefused) as refused:
        return await _listing(request, session, error=refused.message, name=name)
    except MailstackError as refused:
        return await _listing(request, session, error=refused.message, name=name)
    return web.page(
        "passkey-register.html", session=session, csrf=session.csrf_token,
        options=ceremony.options, name=name,
    )  # fmt: skip


@router.post("/passkeys/finish")
async def finish(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    name = str(form.get("name") or "").strip()
    try:
        registered = await web.blocking(
            passkeysignin.finish_registration, web.EXECUTOR, session, web.HOSTNAME, name,
            str(form.get("answer") or ""), actor=web.actor_of_session(session, request),
        )  # fmt: skip
    except MailstackError as refused:
        return await _listing(request, session, error=refused.message, name=name)
    return await _listing(request, session, notice=f"Added the passkey {registered.name}.")


@router.post("/passkeys/remove")
async def remove(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    name = str(form.get("name") or "")
    try:
        await web.blocking(
            passkeysignin.remove, web.EXECUTOR, session, name,
            actor=web.actor_of_session(session, request),
        )  # fmt: skip
    except MailstackError as refused:
        return await _listing(request, session, error=refused.message)
    return await _listing(request, session, notice=f"Removed the passkey {name}.")


async def _listing(
    request: Request, session: Session, error: str | None = None, notice: str | None = None,
    name: str = "",
) -> Response:  # fmt: skip
    keys = await web.blocking(passkeysignin.listed, web.EXECUTOR, session)
    return web.page(
        "passkeys.html", 400 if error else 200, session=session, csrf=session.csrf_token,
        passkeys=keys, error=error, notice=notice, name=name,
        password_needed=not session.reauthenticated,
    )  # fmt: skip
