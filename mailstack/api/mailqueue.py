"""The mail queue in the admin service (/api/v1/queue, /admin/queue), framework-free like
mailstack.api.operations. Administrators only: the queue is the whole server's mail.

The admin service cannot run postqueue (no Docker socket): it reads the `queue` host report
that `mailstack jobs run` writes every minute (runtime.mailqueue.queue_report; its age as
every page shows one: api.reportview), and asks for a retry or a deletion by queueing a
queue.retry / queue.delete host job, which the host runs within a minute and then writes
the report again. A queue id is checked by the CLI's
rule (runtime.mailqueue.queue_id) before it is queued; the host checks it again.

Deleting mail is sensitive: from a web session it needs the password typed within the last
five minutes (signin.require_recent_password), as creating a token does. Loaded by the admin
service on Debian's own Python: no pydantic, typer or rich.
"""

from __future__ import annotations

from typing import Any

from mailstack.adapters.psql import Executor
from mailstack.api import reportview, signin
from mailstack.api.operations import refusals
from mailstack.identity.principal import Principal
from mailstack.identity.sessions import Session
from mailstack.runtime import hostreports, jobqueue
from mailstack.runtime import mailqueue as rules

QUEUED_NOTE = "queued for the host: `mailstack jobs run` (every minute from its timer) does it"


def queue_report(executor: Executor, who: Principal) -> dict[str, Any]:
    """GET /api/v1/queue: the latest `queue` report, its age, and what the host said when it
    could not make one (error)."""
    with refusals():
        who.require_admin()
        found = hostreports.read(executor, hostreports.QUEUE)
    shown = reportview.view(found, hostreports.QUEUE)
    body, error = shown.body, shown.error or ""
    messages = body.get("messages")
    return {
        "taken": shown.taken,
        "age_seconds": shown.age_seconds,
        "as_of": shown.as_of,
        "error": error,
        "total": _count(body.get("total")),
        "oldest_seconds": body.get("oldest_seconds") if not error else None,
        "left_out": _count(body.get("left_out")),
        "messages": [_message(m) for m in messages if isinstance(m, dict)]
        if isinstance(messages, list) and not error
        else [],
    }


def retry(executor: Executor, who: Principal, target: str) -> dict[str, Any]:
    """POST /api/v1/queue/{id}/retry: a queue.retry job for one message, or ALL."""
    with refusals():
        wanted = rules.queue_id(target, allow_all=True)
        who.require_admin()
        return _queued(executor, jobqueue.RETRY_QUEUED, wanted)


def delete(executor: Executor, who: Principal, target: str) -> dict[str, Any]:
    """DELETE /api/v1/queue/{id}: a queue.delete job for one message (never ALL)."""
    with refusals():
        wanted = rules.queue_id(target)
        who.require_admin()
        return _queued(executor, jobqueue.DELETE_QUEUED, wanted)


def delete_from_page(
    executor: Executor, who: Principal, session: Session, target: str
) -> dict[str, Any]:
    """The queue page's Delete: the password typed again first (signin.ReauthNeeded, before
    anything is checked or written), then as DELETE /api/v1/queue/{id}."""
    signin.require_recent_password(session)
    return delete(executor, who, target)


def _queued(executor: Executor, kind: str, target: str) -> dict[str, Any]:
    job = jobqueue.queue(executor, kind, target)
    return {"job": job, "kind": kind, "target": target, "note": QUEUED_NOTE}


def _message(item: dict[str, Any]) -> dict[str, Any]:
    """A message of the report with every field the page and the API name (the host wrote
    it; a field it left out is empty rather than a failed page)."""
    recipients = item.get("recipients")
    return {
        "queue_id": str(item.get("queue_id") or ""),
        "queue_name": str(item.get("queue_name") or ""),
        "arrival_time": str(item.get("arrival_time") or ""),
        "message_size": _count(item.get("message_size")),
        "sender": str(item.get("sender") or ""),
        "recipients": [
            {
                "address": str(r.get("address") or ""),
                "delay_reason": str(r.get("delay_reason") or ""),
            }
            for r in (recipients if isinstance(recipients, list) else [])
            if isinstance(r, dict)
        ],
        "recipients_left_out": _count(item.get("recipients_left_out")),
    }


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
