"""The web admin's directory pages (compose/admin/webdirectory.py), free of any web framework:
what those pages need beyond the REST API's own operations (api.operations, api.domains,
api.apitokens), which they call unchanged.

- A web session acts for its administrator: `session_caller` makes the api.apitokens
  Caller a token of that administrator with the scope admin would be, so the tokens page
  follows the API's rules (a domain administrator manages only the tokens it created).
- Creating a token is a sensitive action: `create_token` needs the password typed within
  the last five minutes (signin.require_recent_password); the confirm page returns to
  `return_path(...)`, one of a fixed set of pages (never a URL the request names).
- The audit log: administrators only, newest first, filtered by actor, cut by a limit;
  exported as CSV (with formula-looking cells defused) or JSON.

Loaded by the admin service on Debian's own Python: no pydantic, typer or rich.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from mailstack.adapters.psql import Executor
from mailstack.api import apitokens, signin
from mailstack.api.operations import Caller, refusals
from mailstack.errors import UsageError
from mailstack.identity import audit, tokens
from mailstack.identity.principal import Principal
from mailstack.identity.sessions import Session

# Where the confirm-your-password page may send the browser back to.
RETURN_PATHS = ("/admin/tokens", "/admin/queue", "/admin/dns")  # /admin/dns: a DKIM rotation
DEFAULT_RETURN = "/admin/tokens"
AUDIT_PAGE_LIMIT = 100
AUDIT_MAX_PAGE_LIMIT = 1000
AUDIT_FIELDS = ("id", "at", "actor", "source", "action", "target", "detail")
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def session_caller(who: Principal, admin: str) -> Caller:
    """The API's Caller for a web session: a token of this administrator with the scope
    admin (all), so api.apitokens' rules decide as for that administrator's token."""
    return Caller(tokens.TokenIdentity(f"web session of {admin}", ("admin",), admin), who)


def create_token(
    executor: Executor,
    session: Session,
    who: Principal,
    name: str,
    scopes: Sequence[str],
    expires: str | None,
) -> dict[str, Any]:
    """POST /api/v1/tokens' operation for a web session, after the password typed again
    (signin.ReauthNeeded otherwise, before anything is checked or written)."""
    signin.require_recent_password(session)
    admin = session.admin or ""
    return apitokens.create_token(
        executor, session_caller(who, admin), name.strip(), scopes, expires or None
    )


def return_path(requested: str | None) -> str:
    """The page to return to after the password was confirmed: one of RETURN_PATHS, else
    the default (an open redirect is never made from a form's value)."""
    return requested if requested in RETURN_PATHS else DEFAULT_RETURN


def audit_filters(actor: str | None, limit: str | None) -> tuple[str | None, int]:
    """The audit page's query (?actor=&limit=) checked by the CLI's rules; one line naming
    the field otherwise."""
    wanted = (actor or "").strip() or None
    text = (limit or "").strip() or str(AUDIT_PAGE_LIMIT)
    if not text.isdigit() or not 1 <= int(text) <= AUDIT_MAX_PAGE_LIMIT:
        raise UsageError(
            f"limit: {text[:20]!r} is not a number between 1 and {AUDIT_MAX_PAGE_LIMIT}"
        )
    try:
        audit.check_filters(None, wanted, int(text))
    except UsageError as wrong:
        raise UsageError(wrong.message.replace("--actor", "actor", 1)) from None
    return wanted, int(text)


def audit_entries(
    executor: Executor, who: Principal, actor: str | None, limit: int
) -> list[audit.AuditEntry]:
    """The latest `limit` entries, newest first (administrators only: Forbidden)."""
    with refusals():
        who.require_admin()
        return list(reversed(audit.list_entries(executor, None, actor, limit)))


def audit_json(entries: Sequence[audit.AuditEntry]) -> str:
    """The entries as `mailstack audit list --json` prints them (a list of objects)."""
    return json.dumps([asdict(entry) for entry in entries], indent=2) + "\n"


def audit_csv(entries: Sequence[audit.AuditEntry]) -> str:
    """The entries as CSV (RFC 4180, a header row); a cell a spreadsheet would run as a
    formula gets a leading apostrophe."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(AUDIT_FIELDS)
    for entry in entries:
        row = asdict(entry)
        writer.writerow([_cell(str(row[field])) for field in AUDIT_FIELDS])
    return out.getvalue()


def export_name(kind: str, now: datetime.datetime) -> str:
    """The download's file name: mailstack-audit-YYYYMMDDTHHMMSSZ.csv|json."""
    return f"mailstack-audit-{now.astimezone(datetime.UTC):%Y%m%dT%H%M%SZ}.{kind}"


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text
