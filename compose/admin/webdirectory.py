"""The web admin's directory pages at /admin/: domains, aliases, a mailbox's change and
removal, API tokens (creating one asks for the password again) and the audit log.

A thin shell like adminweb.py: every page reads its form, checks the CSRF token (403 and
nothing changed without it), and calls the REST API's own operations (mailstack.api.
operations, .domains, .apitokens) as the session's principal, acting as admin:NAME from the
client's address; what those pages need beyond the API is in mailstack.api.webdirectory
(unit-tested there). A refusal is the CLI's one line, shown on the form.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.
import datetime
import os
from typing import Any

import adminweb
import webcommon as web
from fastapi import APIRouter, Request
from fastapi.responses import Response

from mailstack.api import apitokens, domains, operations, signin
from mailstack.api import webdirectory as core
from mailstack.api.operations import ApiError
from mailstack.errors import MailstackError
from mailstack.identity import principal, tokens
from mailstack.identity.sessions import Session

router = APIRouter(prefix="/admin", include_in_schema=False)
OWN_DOMAIN = os.environ["MAILSTACK_DOMAIN"]  # never removed (the API's rule)


async def _as(request: Request, session: Session) -> tuple[principal.Principal, Any]:
    return await web.blocking(signin.acting, web.EXECUTOR, session, web.client(request))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --- domains -----------------------------------------------------------------------------------


@router.get("/domains")
async def domains_page(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    return await _domains(request, session)


async def _domains(
    request: Request, session: Session, status: int = 200, **values: Any
) -> Response:
    who, _ = await _as(request, session)
    listed = await web.run_as(request, session, domains.list_domains)
    values.setdefault("name", "")
    return web.page(
        "domains.html", status, session=session, csrf=session.csrf_token, who=who,
        is_admin=who.role == principal.ADMIN, domains=listed["domains"], **values,
    )  # fmt: skip


@router.post("/domains")
async def add_domain(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    name = web.field(form, "name")
    try:
        created = await web.run_as(request, session, domains.create_domain, name)
    except web.Refused as refused:
        return await _domains(request, session, refused.status, error=refused.message, name=name)
    notice = f"Added domain {created['name']}; its DKIM key is queued for the host."
    return await _domains(request, session, 201, notice=notice)


@router.post("/domains/remove")
async def remove_domain(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    try:
        removed = await web.run_as(
            request, session, domains.remove_domain, web.field(form, "name"), OWN_DOMAIN
        )
    except web.Refused as refused:
        return await _domains(request, session, refused.status, error=refused.message)
    notice = f"Removed domain {removed['name']}; its stored mail is {removed['stored_mail']}."
    return await _domains(request, session, notice=notice)


@router.post("/domains/quota")
async def set_domain_quota(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    name, quota = (str(form.get(key) or "").strip() for key in ("name", "quota"))
    who, actor = await _as(request, session)
    try:  # administrators only: the operation refuses anyone else (403, the API's line)
        changed = await web.blocking(
            domains.set_domain_quota, web.EXECUTOR, who, name, quota, actor=actor
        )
    except ApiError as refused:
        return await _domains(request, session, refused.status, error=refused.message)
    quota = web.PAGES.filters["size"](changed["quota_bytes"])
    return await _domains(request, session, notice=f"Quota of {changed['name']}: {quota}.")


# --- aliases -----------------------------------------------------------------------------------


@router.get("/aliases")
async def aliases_page(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    return await _aliases(request, session)


async def _aliases(
    request: Request, session: Session, status: int = 200, **values: Any
) -> Response:
    listed = await web.run_as(request, session, domains.list_aliases, None)
    values.setdefault("source", "")
    values.setdefault("destinations", "")
    return web.page(
        "aliases.html", status, session=session, csrf=session.csrf_token,
        aliases=listed["aliases"], **values,
    )  # fmt: skip


def _destinations(text: str) -> list[str]:
    """Destinations typed one per line, or separated by commas or spaces."""
    return [part for part in text.replace(",", " ").split() if part]


@router.post("/aliases")
async def add_alias(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    source, typed = web.field(form, "source"), web.field(form, "destinations")
    try:
        change = await web.run_as(
            request, session, domains.create_alias, source, _destinations(typed)
        )
    except web.Refused as refused:
        return await _aliases(
            request, session, refused.status, error=refused.message, source=source,
            destinations=typed,
        )  # fmt: skip
    added = ", ".join(change["added"]) or "nothing new"
    return await _aliases(request, session, 201, notice=f"Alias {change['source']}: {added}.")


@router.post("/aliases/remove")
async def remove_alias(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    try:
        change = await web.run_as(
            request, session, domains.remove_alias, web.field(form, "source"), []
        )
    except web.Refused as refused:
        return await _aliases(request, session, refused.status, error=refused.message)
    return await _aliases(request, session, notice=f"Removed alias {change['source']}.")


# --- one mailbox: change, remove ---------------------------------------------------------------


@router.get("/mailbox")
async def mailbox_page(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    return await _mailbox(request, session, request.query_params.get("address", ""))


async def _mailbox(
    request: Request, session: Session, address: str, status: int = 200, **values: Any
) -> Response:
    """The page of one mailbox the session manages; a 404 page otherwise (or the refusal's
    page, when a change of one it does not manage was refused)."""
    listed = await web.run_as(request, session, operations.list_mailboxes, None)
    found = [m for m in listed["mailboxes"] if m["address"] == address.strip().lower()]
    if not found:
        message = f"mailbox {address.strip()[:254]} does not exist or is not one you manage"
        refused = web.Refused(404 if status == 200 else status, values.get("error") or message)
        return web.refused_page(session, refused)
    return web.page(
        "mailbox.html", status, session=session, csrf=session.csrf_token, mailbox=found[0],
        **values,
    )  # fmt: skip


@router.post("/mailbox")
async def change_mailbox(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    address, quota = web.field(form, "address"), web.field(form, "quota")
    typed = str(form.get("password") or "")
    try:
        changed = await web.run_as(
            request, session, operations.change_mailbox, address, typed or None, quota or None
        )
    except web.Refused as refused:
        return await _mailbox(request, session, address, refused.status, error=refused.message)
    done = [
        *(["password changed"] if changed["password_changed"] else []),
        *(["quota set"] if changed["quota_bytes"] is not None else []),
    ]
    return await _mailbox(
        request, session, address, notice=f"Mailbox {changed['address']}: {', '.join(done)}."
    )


@router.post("/mailbox/remove")
async def remove_mailbox(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    address = web.field(form, "address")
    try:
        removed = await web.run_as(request, session, operations.remove_mailbox, address)
    except web.Refused as refused:
        return await _mailbox(request, session, address, refused.status, error=refused.message)
    aliases = ", ".join(removed["removed_aliases"])
    notice = f"Removed mailbox {removed['address']}" + (
        f" and its aliases {aliases}." if aliases else "."
    )
    return await adminweb.mailboxes_page(request, session, notice=notice)


# --- API tokens ----------------------------------------------------------------------------------


@router.get("/tokens")
async def tokens_page(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    notice = (
        "Password confirmed: you may create a token for the next five minutes."
        if request.query_params.get("confirmed") == "1" and session.reauthenticated
        else None
    )
    return await _tokens(request, session, notice=notice)


async def _tokens(request: Request, session: Session, status: int = 200, **values: Any) -> Response:
    who, actor = await _as(request, session)
    caller = core.session_caller(who, session.admin or "")
    listed = await web.blocking(apitokens.list_tokens, web.EXECUTOR, caller, _now(), actor=actor)
    values.setdefault("name", "")
    values.setdefault("expires", "")
    values.setdefault("checked", ())
    return web.page(
        "tokens.html", status, session=session, csrf=session.csrf_token,
        tokens=listed["tokens"], scopes=tokens.SCOPES, **values,
    )  # fmt: skip


@router.post("/tokens")
async def create_token(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    name, expires = web.field(form, "name"), web.field(form, "expires")
    scopes = [str(scope) for scope in form.getlist("scope")]
    who, actor = await _as(request, session)
    try:
        created = await web.blocking(
            core.create_token, web.EXECUTOR, session, who, name, scopes, expires or None,
            actor=actor,
        )  # fmt: skip
    except signin.ReauthNeeded:
        return web.redirect("/admin/confirm?next=/admin/tokens")
    except ApiError as refused:
        return await _tokens(
            request, session, refused.status, error=refused.message, name=name, expires=expires,
            checked=tuple(scopes),
        )  # fmt: skip
    return web.page(
        "token_created.html", 201, session=session, csrf=session.csrf_token, token=created
    )


@router.post("/tokens/revoke")
async def revoke_token(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    who, actor = await _as(request, session)
    caller = core.session_caller(who, session.admin or "")
    try:
        revoked = await web.blocking(
            apitokens.revoke_token, web.EXECUTOR, caller, web.field(form, "name"), _now(),
            actor=actor,
        )  # fmt: skip
    except ApiError as refused:
        return await _tokens(request, session, refused.status, error=refused.message)
    return await _tokens(request, session, notice=f"Revoked API token {revoked['name']}.")


# --- confirm your password (before a sensitive action) -------------------------------------------


@router.get("/confirm")
async def confirm_form(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    back = core.return_path(request.query_params.get("next"))
    return web.page("confirm.html", session=session, csrf=session.csrf_token, next=back)


@router.post("/confirm")
async def confirm_submit(request: Request) -> Response:
    form = await request.form()
    session = await web.full_session(request, form)
    if isinstance(session, Response):
        return session
    back = core.return_path(web.field(form, "next"))
    typed = str(form.get("password") or "")
    attempt = await web.admitted(request, session.admin or "")
    try:
        await web.blocking(signin.reauthenticate, web.EXECUTOR, web.GUARD, attempt, session, typed)
    except signin.SignInRefused as refused:
        status = 429 if isinstance(refused, signin.Banned) else 200
        return web.page(
            "confirm.html", status, session=session, csrf=session.csrf_token, next=back,
            error=refused.message,
        )  # fmt: skip
    web.LOG.info("admin %s: password confirmed from %s", session.admin, web.client(request))
    return web.redirect(f"{back}?confirmed=1")


# --- audit log ---------------------------------------------------------------------------------


async def _audit(request: Request, session: Session) -> tuple[Any, str | None, int]:
    """The entries the query asks for, newest first; Refused with the line otherwise."""
    actor_text = request.query_params.get("actor")
    try:
        actor, limit = core.audit_filters(actor_text, request.query_params.get("limit"))
    except MailstackError as wrong:
        raise web.Refused(400, wrong.message) from None
    entries = await web.run_as(request, session, core.audit_entries, actor, limit)
    return entries, actor, limit


@router.get("/audit")
async def audit_page(request: Request) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    values: dict[str, Any] = {"entries": [], "error": None}
    actor = request.query_params.get("actor", "")
    limit: int | str = request.query_params.get("limit", str(core.AUDIT_PAGE_LIMIT))
    status = 200
    try:
        values["entries"], _, limit = await _audit(request, session)
    except web.Refused as refused:
        status, values["error"] = refused.status, refused.message
    query = {"actor": actor, "limit": str(limit)}
    return web.page(
        "audit.html", status, session=session, csrf=session.csrf_token, actor=actor,
        limit=limit, query=query, **values,
    )  # fmt: skip


@router.get("/audit.{kind}")
async def audit_export(request: Request, kind: str) -> Response:
    session = await web.full_session(request)
    if isinstance(session, Response):
        return session
    if kind not in ("csv", "json"):
        return web.page("message.html", 404, title="Not found", error=f"no export as {kind[:8]}")
    try:
        entries, _, _ = await _audit(request, session)
    except web.Refused as refused:
        return web.refused_page(session, refused)
    body = core.audit_csv(entries) if kind == "csv" else core.audit_json(entries)
    media = "text/csv; charset=utf-8" if kind == "csv" else "application/json"
    disposition = f'attachment; filename="{core.export_name(kind, _now())}"'
    return Response(body, media_type=media, headers={"Content-Disposition": disposition})
