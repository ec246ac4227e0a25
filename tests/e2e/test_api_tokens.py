"""API tokens on the running stack: made and revoked by the CLI, checked by `authenticate`
against the real database (through the stack's Compose adapter, as the API will), and kept
there only as hashes."""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid
from typing import Any

import pytest

from mailstack.adapters.compose import Compose
from mailstack.identity import tokens
from mailstack.stack.stackdir import Stack
from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def compose(stack: RunningStack) -> Compose:
    return Stack.load(stack.root).compose


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def create(stack: RunningStack, *options: str) -> dict[str, Any]:
    """A new token (--json) with a fresh name."""
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    created: dict[str, Any] = json.loads(
        stack.cli("api", "token", "create", name, *options, "--json").stdout
    )
    assert created["name"] == name
    return created


def listed(stack: RunningStack, name: str) -> tuple[dict[str, Any], str]:
    """The token as `api token list --json` shows it, and the whole output."""
    text = stack.cli("api", "token", "list", "--json").stdout
    (entry,) = [token for token in json.loads(text) if token["name"] == name]
    return entry, text


def expire_now(stack: RunningStack, name: str) -> None:
    """Move a token's expiry into the past, as time would."""
    stack.compose(
        "exec", "-T", "--user", "postgres", "db",
        "psql", "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--dbname=mail",
        f"--set=name={name}",
        stdin=b"UPDATE api_tokens SET expires = now() - interval '1 minute' WHERE name = :'name';",
    )  # fmt: skip


def test_created_token_is_listed_without_its_secret_and_accepted(
    stack: RunningStack, compose: Compose
) -> None:
    created = create(stack, "--scope", "accounts", "--scope", "read")
    token = created["token"]
    assert tokens.TOKEN.fullmatch(token)
    assert created["scopes"] == ["read", "accounts"] and created["expires"] is None

    entry, text = listed(stack, created["name"])
    assert entry["state"] == "active" and entry["scopes"] == ["read", "accounts"]
    assert entry["last_used"] is None and entry["created_by"] is None
    assert token not in text and tokens.token_hash(token) not in text

    identity = tokens.authenticate(compose, token, now())
    assert identity == tokens.TokenIdentity(created["name"], ("read", "accounts"), None)
    assert identity.allows("read") and identity.allows("accounts")
    assert not identity.allows("domains") and not identity.allows("admin")
    used, _ = listed(stack, created["name"])
    assert used["last_used"] is not None


def test_wrong_token_is_refused_as_unknown(stack: RunningStack, compose: Compose) -> None:
    token = create(stack, "--scope", "admin")["token"]
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for wrong in (altered, tokens.generate_token(), token.removeprefix("msk_"), token + "x", ""):
        with pytest.raises(tokens.UnknownToken) as refused:
            tokens.authenticate(compose, wrong, now())
        assert refused.value.name is None
    assert tokens.authenticate(compose, token, now()).allows("admin")


def test_expired_token_is_refused(stack: RunningStack, compose: Compose) -> None:
    created = create(stack, "--scope", "read", "--expires", "1h")
    token, name = created["token"], created["name"]
    start = now()
    # The expiry the CLI set is an hour from now, as the database's clock sees it.
    assert tokens.authenticate(compose, token, start + datetime.timedelta(minutes=58)).name == name
    with pytest.raises(tokens.ExpiredToken) as refused:
        tokens.authenticate(compose, token, start + datetime.timedelta(minutes=62))
    assert refused.value.name == name
    # Expired by the real clock: the API refuses it and the list says so.
    expire_now(stack, name)
    with pytest.raises(tokens.ExpiredToken):
        tokens.authenticate(compose, token, now())
    assert listed(stack, name)[0]["state"] == "expired"
    # Revoked and expired: revoked is what the audit log shows (the operator's act).
    stack.cli("api", "token", "revoke", name)
    with pytest.raises(tokens.RevokedToken):
        tokens.authenticate(compose, token, now())


def test_revoked_token_is_refused_and_stays_listed_as_revoked(
    stack: RunningStack, compose: Compose
) -> None:
    created = create(stack, "--scope", "domains")
    token, name = created["token"], created["name"]
    assert tokens.authenticate(compose, token, now()).name == name

    assert "revoked API token" in stack.cli("api", "token", "revoke", name).stdout
    with pytest.raises(tokens.RevokedToken) as refused:
        tokens.authenticate(compose, token, now())
    assert refused.value.name == name and token not in str(refused.value)
    entry, _ = listed(stack, name)
    assert entry["state"] == "revoked" and entry["revoked"] is not None

    again = stack.cli("api", "token", "revoke", name)
    assert "already revoked" in again.stdout
    # The name stays taken: the audit log's token:NAME keeps meaning one token.
    reuse = stack.cli("api", "token", "create", name, "--scope", "read", check=False)
    assert reuse.returncode == 2 and "exists already" in reuse.stderr


def test_database_holds_only_the_hash_of_a_token(stack: RunningStack) -> None:
    token = create(stack, "--scope", "read")["token"]
    dump = stack.compose(
        "exec", "-T", "--user", "postgres", "db",
        "pg_dump", "--format=plain", "--username=postgres", "--dbname=mail",
    ).stdout  # fmt: skip
    assert b"CREATE TABLE public.api_tokens" in dump
    # The dump holds the table's rows (the hash is there) but not the token, nor its secret part.
    assert hashlib.sha256(token.encode()).hexdigest().encode() in dump
    assert token.encode() not in dump
    assert token.removeprefix("msk_").encode() not in dump
