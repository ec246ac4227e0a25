"""The REST API's tokens (/api/v1/tokens): list, create, revoke, with identity.tokens' rules.

Every route needs the scope admin. Who may manage which token:
  - root's tokens (made on the host without --by) and an administrator's manage every token;
  - a domain administrator's token manages only the tokens its administrator created (it
    lists only those, and revoking another is the same 403 whether that token exists);
  - a new token acts for the same administrator as the token that made it (or for root),
    and its scopes are no wider than that token's own.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from mailstack.adapters.psql import Executor
from mailstack.api.operations import Caller, refusals
from mailstack.errors import Forbidden
from mailstack.identity import tokens
from mailstack.identity.principal import ADMIN


def list_tokens(executor: Executor, caller: Caller, now: datetime.datetime) -> dict[str, Any]:
    """GET /api/v1/tokens (scope admin): never a secret, never a hash."""
    with refusals():
        found = tokens.list_tokens(executor, now)
    return {"tokens": [_token(token) for token in found if _may_manage(caller, token.created_by)]}


def create_token(
    executor: Executor,
    caller: Caller,
    name: str,
    scopes: Sequence[str],
    expires: str | None,
) -> dict[str, Any]:
    """POST /api/v1/tokens (scope admin): the new token, shown this once."""
    with refusals():
        tokens.check_name(name)
        granted = tokens.check_scopes(scopes)
        tokens.check_expiry(expires)
        wider = [scope for scope in granted if not caller.identity.allows(scope)]
        if wider:
            raise Forbidden(
                f"scopes: API token {caller.identity.name} cannot grant {', '.join(wider)}, "
                f"which it lacks (it has {', '.join(caller.identity.scopes)})"
            )
        created = tokens.create_token(
            executor, name, granted, expires, created_by=caller.identity.created_by
        )
    return {
        "name": created.name,
        "scopes": list(created.scopes),
        "expires": created.expires,
        "created_by": caller.identity.created_by,
        "token": created.token,
    }


def revoke_token(
    executor: Executor, caller: Caller, name: str, now: datetime.datetime
) -> dict[str, Any]:
    """DELETE /api/v1/tokens/{name} (scope admin): revoked for good, still listed."""
    with refusals():
        tokens.check_name(name)
        if caller.principal.role != ADMIN:
            mine = {
                token.name
                for token in tokens.list_tokens(executor, now)
                if token.created_by == caller.identity.created_by
            }
            if name not in mine:
                raise Forbidden(f"API token {name} is not one you created")
        revoked = tokens.revoke_token(executor, name)
    return {"name": revoked.name, "revoked": revoked.revoked, "already": revoked.already}


def _may_manage(caller: Caller, created_by: str | None) -> bool:
    return caller.principal.role == ADMIN or created_by == caller.identity.created_by


def _token(token: tokens.ApiToken) -> dict[str, Any]:
    return {
        "name": token.name,
        "scopes": list(token.scopes),
        "state": token.state,
        "created": token.created,
        "expires": token.expires,
        "revoked": token.revoked,
        "last_used": token.last_used,
        "created_by": token.created_by,
    }
