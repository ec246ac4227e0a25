"""The web admin's server-wide host pages at /admin/: the services' health and the brute-force
bans (clear one), for administrators only (a domain administrator gets the 403 page).

A thin shell like webdirectory.py: the pages read the `health` and `bans` host reports
through mailstack.api.hoststatus (unit-tested there) and say how old they are; "Clear"
queues a host job that the host's next `mailstack jobs run` does (within a minute), as
"Refresh now" does (webrefresh.py). Every post checks the session's CSRF token (403,
nothing queued, without it).

Clearing a ban asks for no password again: it grants no access and reveals nothing (the
address must still sign in with valid credentials, and is banned again after the same
failures), it is audited with its job's number, and the session already took password and
code within its idle timeout; the pages ask again only before making lasting credentials
(API tokens, passkeys).
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
from typing import Any

import webcommon as web
from fastapi import APIRouter, Request
from fastapi.responses import Response

from mailstack.api import hoststatus
from mailstack.identity.sessions import Session
from mailstack.runtime import hostreports

router = APIRouter(prefix="/admin", include_in_schema=False)
QUEUED = "the host does it within a minute"


async def show(
    request: Request, session: Session, topic: str, status: int = 200, **values: Any
) -> Response:
    reader = hoststatus.health if topic == hostreports.HEALTH else hoststatus.list_bans
    try:
        report = await web.run_as(request, session, reader)
    except web.Refused as refused:
        return web.refused_page(session, refused)
    return web.page(
        f"{topic}.html", status, session=session, csrf=session.csrf_token, report=report,
        body=report.body, healthy=hoststatus.service_healthy, **values,
    )  # fmt: skip


@router.get("/health")
async def health_page(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    return await show(request, session, hostreports.HEALTH)


@router.get("/bans")
async def bans_page(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    return await show(request, session, hostreports.BANS)


@router.post("/bans/clear")
async def clear_ban(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    address = str(form.get("address") or "").strip()
    try:
        cleared = await web.run_as(request, session, hoststatus.clear_ban, address)
    except web.Refused as refused:  # a domain administrator's page is the 403 page (_show)
        return await show(request, session, hostreports.BANS, refused.status, error=refused.message)
    notice = f"Clearing {cleared['address']} is queued as host job #{cleared['job']}; {QUEUED}."
    return await show(request, session, hostreports.BANS, 202, notice=notice)
