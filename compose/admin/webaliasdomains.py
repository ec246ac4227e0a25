"""The web admin's alias domains and sender grants at /admin/alias-domains and /admin/senders.

A thin shell like webdirectory.py: every page reads its form, checks the CSRF token (403 and
nothing changed without it) and calls the REST API's own operations (mailstack.api.
aliasdomains) as the session's principal, acting as admin:NAME from the client's address.
A refusal is the CLI's one line, shown on the form with what was typed.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
from typing import Any

import webcommon as web
from fastapi import APIRouter, Request
from fastapi.responses import Response

from mailstack.api import aliasdomains, domains
from mailstack.identity.sessions import Session

router = APIRouter(prefix="/admin", include_in_schema=False)


# --- alias domains -------------------------------------------------------------------------------


@router.get("/alias-domains")
async def alias_domains_page(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    return await _alias_domains(request, session)


async def _alias_domains(
    request: Request, session: Session, status: int = 200, **values: Any
) -> Response:
    listed = await web.run_as(request, session, aliasdomains.list_alias_domains)
    targets = await web.run_as(request, session, domains.list_domains)
    values.setdefault("name", "")
    values.setdefault("target", "")
    return web.page(
        "alias_domains.html", status, session=session, csrf=session.csrf_token,
        alias_domains=listed["alias_domains"], targets=[d["name"] for d in targets["domains"]],
        **values,
    )  # fmt: skip


@router.post("/alias-domains")
async def add_alias_domain(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    name, target = web.field(form, "name"), web.field(form, "target")
    try:
        added = await web.run_as(request, session, aliasdomains.create_alias_domain, name, target)
    except web.Refused as refused:
        return await _alias_domains(
            request, session, refused.status, error=refused.message, name=name, target=target
        )
    notice = (
        f"Added alias domain {added['name']} of {added['target']}; "
        "its DKIM key is queued for the host."
    )
    return await _alias_domains(request, session, 201, notice=notice)


@router.post("/alias-domains/remove")
async def remove_alias_domain(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    try:
        removed = await web.run_as(
            request, session, aliasdomains.remove_alias_domain, web.field(form, "name")
        )
    except web.Refused as refused:
        return await _alias_domains(request, session, refused.status, error=refused.message)
    notice = f"Removed alias domain {removed['name']} (of {removed['target']})."
    return await _alias_domains(request, session, notice=notice)


# --- sender grants -------------------------------------------------------------------------------


@router.get("/senders")
async def senders_page(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    return await _senders(request, session)


async def _senders(
    request: Request, session: Session, status: int = 200, **values: Any
) -> Response:
    listed = await web.run_as(request, session, aliasdomains.list_senders, None)
    values.setdefault("sender", "")
    values.setdefault("mailbox", "")
    return web.page(
        "senders.html", status, session=session, csrf=session.csrf_token,
        senders=listed["senders"], **values,
    )  # fmt: skip


@router.post("/senders")
async def add_sender(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    sender, mailbox = web.field(form, "sender"), web.field(form, "mailbox")
    try:
        added = await web.run_as(request, session, aliasdomains.create_sender, sender, mailbox)
    except web.Refused as refused:
        return await _senders(
            request, session, refused.status, error=refused.message, sender=sender,
            mailbox=mailbox,
        )  # fmt: skip
    verb = "may now send" if added["added"] else "could already send"
    notice = f"{added['mailbox']} {verb} as {added['sender']}."
    return await _senders(request, session, 201 if added["added"] else 200, notice=notice)


@router.post("/senders/remove")
async def remove_sender(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    sender, mailbox = web.field(form, "sender"), web.field(form, "mailbox")
    try:
        removed = await web.run_as(request, session, aliasdomains.remove_sender, sender, mailbox)
    except web.Refused as refused:
        return await _senders(request, session, refused.status, error=refused.message)
    notice = f"{removed['mailbox']} may no longer send as {removed['sender']}."
    return await _senders(request, session, notice=notice)
