"""The web admin's mail queue page (/admin/queue), administrators only: the `queue` host
report (count, oldest, each message and why it waits) with its age, and the actions the
host does for it within a minute: Retry (one or all), Delete (the password asked again
first, as for a token); its Refresh now is every report page's (webrefresh.py).

A thin shell: it reads the form, checks the CSRF token (403, nothing changed, without it)
and calls mailstack.api.mailqueue (unit-tested there) as the session's principal, acting as
admin:NAME from the client's address. A refusal is the CLI's one line.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
from collections.abc import Callable
from typing import Any

import webcommon as web
from fastapi import APIRouter, Request
from fastapi.responses import Response

from mailstack.api import mailqueue, signin
from mailstack.identity.sessions import Session

router = APIRouter(prefix="/admin", include_in_schema=False)
CONFIRMED = "Password confirmed: you may delete queued mail for the next five minutes."


async def show(request: Request, session: Session, status: int = 200, **values: Any) -> Response:
    try:
        report = await web.run_as(request, session, mailqueue.queue_report)
    except web.Refused as refused:
        return web.refused_page(session, refused)
    return web.page(
        "queue.html", status, session=session, csrf=session.csrf_token, report=report, **values
    )


@router.get("/queue")
async def queue_page(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    confirmed = request.query_params.get("confirmed") == "1" and session.reauthenticated
    return await show(request, session, notice=CONFIRMED if confirmed else None)


async def _action(
    request: Request, done: str, function: Callable[..., Any], *args: Any
) -> Response:
    """A posted action: the host job it queued, or the refusal's line on the page. `args`
    may name FORM_ID (the form's message id) and SESSION (the request's session)."""
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    target = str(form.get("id") or "").strip()
    given = [target if arg is FORM_ID else session if arg is SESSION else arg for arg in args]
    try:
        queued = await web.run_as(request, session, function, *given)
    except signin.ReauthNeeded:
        return web.redirect("/admin/confirm?next=/admin/queue")
    except web.Refused as refused:
        return await show(request, session, refused.status, error=refused.message)
    notice = (
        f"{done.format(target=queued['target'])}: queued as host job #{queued['job']}; "
        "the host does it within a minute."
    )
    return await show(request, session, 202, notice=notice)


FORM_ID, SESSION = object(), object()  # _action's placeholders


@router.post("/queue/retry")
async def retry(request: Request) -> Response:
    return await _action(request, "Retry of {target}", mailqueue.retry, FORM_ID)


@router.post("/queue/delete")
async def delete(request: Request) -> Response:
    return await _action(
        request, "Deletion of {target}", mailqueue.delete_from_page, SESSION, FORM_ID
    )
