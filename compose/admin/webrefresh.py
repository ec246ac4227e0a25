"""Every host-report page's "Refresh now" (/admin/{page}/refresh): one route for the health,
bans, queue, backups and DNS pages. It checks the session's CSRF token (403, nothing queued,
without it), asks mailstack.api.reportview.refresh for a report.refresh host job as the
session's principal (server-wide reports: administrators; the DNS overview: anyone; a
domain's DNS report: whoever manages the domain), and shows the page again with the job's
number (202), or the refusal's page.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
import webcommon as web
import webdnsbackups
import webqueue
import webstatus
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from mailstack.api import hostviews, reportview
from mailstack.identity.sessions import Session
from mailstack.runtime import hostreports

router = APIRouter(prefix="/admin", include_in_schema=False)
PAGES = (
    hostreports.HEALTH,
    hostreports.BANS,
    hostreports.QUEUE,
    hostreports.BACKUPS,
    hostreports.DNS,
)


@router.post("/{page}/refresh")
async def refresh(request: Request, page: str) -> Response:
    """The DNS page's button names a domain on a domain's page: that report only."""
    if page not in PAGES:
        raise HTTPException(status_code=404)  # as for any path without a route
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    domain = web.field(form, "domain") if page == hostreports.DNS else ""
    try:
        if domain:
            queued = await web.run_as(request, session, hostviews.refresh_dns, domain)
        else:
            queued = await web.run_as(request, session, reportview.refresh, page)
    except web.Refused as refused:
        return web.refused_page(session, refused)
    what = f"{page} report of {domain}" if domain else f"{page} report"
    notice = f"A fresh {what} is {queued['note']}."
    return await _shown(request, session, page, domain or None, notice)


async def _shown(
    request: Request, session: Session, page: str, domain: str | None, notice: str
) -> Response:
    if page == hostreports.QUEUE:
        return await webqueue.show(request, session, 202, notice=notice)
    if page == hostreports.BACKUPS:
        return await webdnsbackups.show_backups(request, session, 202, notice=notice)
    if page == hostreports.DNS:
        return await webdnsbackups.show_dns(request, session, domain, 202, notice=notice)
    return await webstatus.show(request, session, page, 202, notice=notice)
