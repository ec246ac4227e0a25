"""The web admin's DNS page (/admin/dns: records to publish, DKIM keys and their rotation,
`check dns` results) and backups page (/admin/backups: snapshots, the last verify).

A thin shell like webdirectory.py: each page reads a host report through mailstack.api.
hostviews as the session's principal (the DNS overview cut to its domains, a domain's page
its own report; backups for administrators only) and shows how old it is; its buttons
queue host jobs (a DKIM rotation here, "Refresh now" in webrefresh.py) with the session's
CSRF token, acting as admin:NAME. Rotating a key is sensitive: it needs the password typed
within five minutes, as creating a token does.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
from typing import Any

import webcommon as web
from fastapi import APIRouter, Request
from fastapi.responses import Response

from mailstack.api import hostviews, signin
from mailstack.identity import principal
from mailstack.identity.sessions import Session

router = APIRouter(prefix="/admin", include_in_schema=False)


# --- DNS ---------------------------------------------------------------------------------------


@router.get("/dns")
async def dns_page(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    notice = (
        "Password confirmed: you may rotate a DKIM key for the next five minutes."
        if request.query_params.get("confirmed") == "1" and session.reauthenticated
        else None
    )
    return await show_dns(
        request, session, request.query_params.get("domain") or None, notice=notice
    )


async def show_dns(
    request: Request, session: Session, domain: str | None, status: int = 200, **values: Any
) -> Response:
    try:
        found = await web.run_as(request, session, hostviews.dns, domain)
    except web.Refused as refused:
        return web.refused_page(session, refused)
    who, _ = await web.blocking(signin.acting, web.EXECUTOR, session, web.client(request))
    return web.page(
        "dns.html", status, session=session, csrf=session.csrf_token, dns=found,
        only=domain, is_admin=who.role == principal.ADMIN, **values,
    )  # fmt: skip


@router.post("/dns/rotate")
async def rotate_dkim(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    domain = web.field(form, "domain")
    try:
        signin.require_recent_password(session)
    except signin.ReauthNeeded:
        return web.redirect("/admin/confirm?next=/admin/dns")
    try:
        queued = await web.run_as(request, session, hostviews.rotate_dkim, domain)
    except web.Refused as refused:
        return await show_dns(request, session, None, refused.status, error=refused.message)
    notice = f"Rotating the DKIM key of {queued['domain']}: {queued['note']}."
    return await show_dns(request, session, queued["domain"], 202, notice=notice)


# --- backups -----------------------------------------------------------------------------------


@router.get("/backups")
async def backups_page(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    return await show_backups(request, session)


async def show_backups(
    request: Request, session: Session, status: int = 200, **values: Any
) -> Response:
    try:
        found = await web.run_as(request, session, hostviews.backups)
    except web.Refused as refused:
        return web.refused_page(session, refused)
    return web.page(
        "backups.html", status, session=session, csrf=session.csrf_token, backups=found, **values
    )
