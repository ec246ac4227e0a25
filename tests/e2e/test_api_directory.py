"""The REST API's directory (/api/v1 domains, mailboxes, aliases, tokens) scoped by role, on
the running stack: a domain administrator's token (`api token create --by`) sees and changes
only its domains, a new domain's DKIM key is published by the host's `mailstack jobs run`
and rspamd signs with it, and every change is in the audit log under token:NAME."""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from dataclasses import dataclass

import pytest

from tests.e2e.conftest import DOMAIN, RunningStack
from tests.e2e.mail import can_log_in, message, submit
from tests.e2e.test_admin_api import UNAUTHORIZED, api, new_token
from tests.e2e.test_policy import from_sink, signature_tags

PASSWORD = "Directory-api 42 mailbox"  # a test account
NEW_PASSWORD = "Changed-through 42 the api"  # a test account


@dataclass(frozen=True)
class World:
    own: str  # the domain administrator's domain
    admin: str  # its name
    token_name: str
    token: str  # scope admin, acting for the domain administrator
    root_name: str
    root: str  # scope admin, root's (made on the host without --by)


@pytest.fixture(scope="module")
def world(stack: RunningStack) -> World:
    own = f"da{uuid.uuid4().hex[:8]}.example.test"
    stack.cli("domain", "add", own)
    admin = f"dana-{uuid.uuid4().hex[:6]}"
    stack.cli("admin", "add", admin, "--role", "domain-admin", "--domain", own)
    token_name = f"e2e-dana-{uuid.uuid4().hex[:6]}"
    created = stack.cli(
        "api", "token", "create", token_name, "--scope", "admin", "--by", admin, "--json"
    )
    root_name, root = new_token(stack, "admin")
    return World(own, admin, token_name, json.loads(created.stdout)["token"], root_name, root)


def audited(stack: RunningStack, token_name: str) -> list[tuple[str, str]]:
    logged = json.loads(
        stack.cli("audit", "list", "--actor", f"token:{token_name}", "--json").stdout
    )
    return [(entry["action"], entry["target"]) for entry in logged]


def test_a_domain_administrators_token_cannot_see_another_domains_mailboxes(
    stack: RunningStack, world: World
) -> None:
    elsewhere, _ = stack.new_mailbox()  # in the stack's own domain, not the administrator's
    status, listed = api(stack, "GET", "/api/v1/mailboxes", world.token)
    assert status == 200
    assert {mailbox["domain"] for mailbox in listed["mailboxes"]} <= {world.own}
    assert elsewhere in [
        m["address"] for m in api(stack, "GET", "/api/v1/mailboxes", world.root)[1]["mailboxes"]
    ]
    # Naming another domain is refused in one line, the same whether it exists or not.
    for domain in (DOMAIN, f"nowhere-{uuid.uuid4().hex[:6]}.test"):
        answer = api(stack, "GET", f"/api/v1/mailboxes?domain={domain}", world.token)
        assert answer == (403, {"error": f"{domain} is not a domain you manage"})
    status, domains = api(stack, "GET", "/api/v1/domains", world.token)
    assert [domain["name"] for domain in domains["domains"]] == [world.own]
    status, aliases = api(stack, "GET", "/api/v1/aliases", world.token)
    assert all(alias["domain"] == world.own for alias in aliases["aliases"])


def test_a_domain_administrators_token_cannot_create_a_mailbox_in_another_domain(
    stack: RunningStack, world: World
) -> None:
    theirs = f"intruder-{uuid.uuid4().hex[:6]}@{DOMAIN}"
    body = {"address": theirs, "password": PASSWORD}
    assert api(stack, "POST", "/api/v1/mailboxes", world.token, body) == (
        403,
        {"error": f"{DOMAIN} is not a domain you manage"},
    )
    assert theirs not in stack.cli("mailbox", "list").stdout
    # Its own domain: create, change the password (IMAP takes the new one only), the quota,
    # then remove (the mail is kept).
    mine = f"dana-box-{uuid.uuid4().hex[:6]}@{world.own}"
    body = {"address": mine, "password": PASSWORD}
    assert api(stack, "POST", "/api/v1/mailboxes", world.token, body)[0] == 201
    path = f"/api/v1/mailboxes/{mine}"
    assert api(stack, "PATCH", path, world.token, {"password": "short"})[1] == {
        "error": "the password is too short (5 characters; at least 12)"
    }
    changed = api(stack, "PATCH", path, world.token, {"password": NEW_PASSWORD, "quota": "1G"})
    assert changed == (200, {"address": mine, "password_changed": True, "quota_bytes": 1 << 30})
    assert can_log_in(stack, mine, NEW_PASSWORD) and not can_log_in(stack, mine, PASSWORD)
    theirs_path = f"/api/v1/mailboxes/{stack.new_mailbox()[0]}"
    assert api(stack, "PATCH", theirs_path, world.token, {"quota": "1G"})[0] == 403
    assert api(stack, "DELETE", theirs_path, world.token)[0] == 403
    status, removed = api(stack, "DELETE", path, world.token)
    assert (status, removed["stored_mail"]) == (
        200,
        f"kept in /var/mail/{world.own}/{mine.partition('@')[0]}",
    )
    assert api(stack, "DELETE", path, world.token) == (
        404,
        {"error": f"mailbox {mine} does not exist"},
    )
    assert audited(stack, world.token_name)[-4:] == [
        ("mailbox.add", mine),
        ("mailbox.password", mine),
        ("mailbox.quota", mine),
        ("mailbox.remove", mine),
    ]


def test_a_domain_administrators_token_cannot_delete_another_domains_alias(
    stack: RunningStack, world: World
) -> None:
    source = f"theirs-{uuid.uuid4().hex[:6]}@{DOMAIN}"
    stack.cli("alias", "add", source, "friend@elsewhere.example")
    assert api(stack, "DELETE", f"/api/v1/aliases/{source}", world.token) == (
        403,
        {"error": f"{DOMAIN} is not a domain you manage"},
    )
    assert source in stack.cli("alias", "list").stdout
    body = {"source": f"sneaky@{DOMAIN}", "destinations": [f"x@{world.own}"]}
    assert api(stack, "POST", "/api/v1/aliases", world.token, body)[0] == 403
    # Its own: the source in its domain, the destination anywhere (as the CLI allows).
    mine = f"sales-{uuid.uuid4().hex[:6]}@{world.own}"
    body = {"source": mine, "destinations": ["partner@elsewhere.example"]}
    assert api(stack, "POST", "/api/v1/aliases", world.token, body) == (
        201,
        {"source": mine, "added": ["partner@elsewhere.example"], "already_present": []},
    )
    assert api(stack, "POST", "/api/v1/aliases", world.token, body)[0] == 409
    quoted = urllib.parse.quote("partner@elsewhere.example")
    removed = api(stack, "DELETE", f"/api/v1/aliases/{mine}?destination={quoted}", world.token)
    assert removed == (200, {"source": mine, "removed": ["partner@elsewhere.example"]})
    target = f"{mine} -> partner@elsewhere.example"
    assert audited(stack, world.token_name)[-2:] == [
        ("alias.add", target),
        ("alias.remove", target),
    ]


def test_a_domain_administrator_cannot_add_or_remove_domains(
    stack: RunningStack, world: World
) -> None:
    only_admins = (403, {"error": "only an administrator may do this"})
    body = {"name": f"grab-{uuid.uuid4().hex[:6]}.example.test"}
    assert api(stack, "POST", "/api/v1/domains", world.token, body) == only_admins
    assert api(stack, "DELETE", f"/api/v1/domains/{world.own}", world.token) == only_admins


def test_a_token_without_the_scope_is_403(stack: RunningStack, world: World) -> None:
    _, read = new_token(stack, "read")
    _, accounts = new_token(stack, "accounts")
    body = {"source": f"x@{DOMAIN}", "destinations": ["y@elsewhere.example"]}
    status, answer = api(stack, "POST", "/api/v1/aliases", read, body)
    assert status == 403 and "lacks the scope accounts" in answer["error"]
    status, answer = api(stack, "POST", "/api/v1/domains", accounts, {"name": "z.example.test"})
    assert status == 403 and "lacks the scope domains" in answer["error"]
    status, answer = api(stack, "GET", "/api/v1/tokens", accounts)
    assert status == 403 and "lacks the scope admin" in answer["error"]


def test_an_expired_token_is_401(stack: RunningStack) -> None:
    name = f"e2e-short-{uuid.uuid4().hex[:6]}"
    created = stack.cli(
        "api", "token", "create", name, "--scope", "read", "--expires", "1s", "--json"
    )
    token = json.loads(created.stdout)["token"]
    time.sleep(1.5)
    assert api(stack, "GET", "/api/v1/domains", token) == (401, UNAUTHORIZED)


def test_a_hostile_domain_gets_the_clis_line(stack: RunningStack, world: World) -> None:
    hostile = "evil.test\r\nX-Injected: yes"
    cli = stack.cli("domain", "add", hostile, check=False)
    cli_line = cli.stderr.strip().splitlines()[0]
    status, answer = api(stack, "POST", "/api/v1/domains", world.root, {"name": hostile})
    assert status == 400 and answer["error"].startswith("DOMAIN: ")
    assert answer["error"] in cli_line
    quoted = urllib.parse.quote("x'; DROP TABLE domains; --")
    status, answer = api(stack, "GET", f"/api/v1/mailboxes?domain={quoted}", world.token)
    assert status == 400 and answer["error"].startswith("DOMAIN: ")


def test_a_domain_added_by_the_api_is_signed_once_the_host_runs_its_job(
    stack: RunningStack, world: World
) -> None:
    domain = f"api{uuid.uuid4().hex[:8]}.example.test"
    status, created = api(stack, "POST", "/api/v1/domains", world.root, {"name": domain})
    assert (status, created["dkim_key"]) == (201, "queued")
    listed = {d["name"]: d for d in api(stack, "GET", "/api/v1/domains", world.root)[1]["domains"]}
    assert listed[domain]["dkim_key"] == "queued"
    assert not list((stack.root / "dkim").glob(f"{domain}.*.key"))
    ran = stack.cli("jobs", "run")
    assert f"domain.publish_key {domain}: done: DKIM key" in ran.stdout
    listed = {d["name"]: d for d in api(stack, "GET", "/api/v1/domains", world.root)[1]["domains"]}
    assert listed[domain]["dkim_key"] == "published"
    shown = json.loads(stack.cli("dkim", "show", domain, "--json").stdout)[0]
    # rspamd signs with it: a message from a mailbox the API made in the new domain.
    sender = f"signer@{domain}"
    body = {"address": sender, "password": PASSWORD}
    assert api(stack, "POST", "/api/v1/mailboxes", world.root, body)[0] == 201
    subject = f"e2e api domain {uuid.uuid4().hex}"
    submit(stack, sender, PASSWORD, message(sender, "friend@elsewhere.example", subject))
    tags = signature_tags(from_sink(stack, subject))
    assert (tags["d"], tags["s"]) == (domain, shown["selector"])
    assert ("domain.add", domain) in audited(stack, world.root_name)
    # In use: the CLI's refusal, as a 409; once empty it goes, and the mail is kept.
    status, answer = api(stack, "DELETE", f"/api/v1/domains/{domain}", world.root)
    assert status == 409 and answer["error"].startswith(f"domain {domain} still has 1 mailbox(es)")
    assert api(stack, "DELETE", f"/api/v1/mailboxes/{sender}", world.root)[0] == 200
    assert api(stack, "DELETE", f"/api/v1/domains/{domain}", world.root)[0] == 200
    assert ("domain.remove", domain) in audited(stack, world.root_name)
    assert api(stack, "DELETE", f"/api/v1/domains/{DOMAIN}", world.root)[0] == 400  # its own
    assert "sessions.kick" in stack.cli("jobs", "run").stdout


def test_a_domain_administrator_manages_only_the_tokens_it_created(
    stack: RunningStack, world: World
) -> None:
    name = f"e2e-dana-child-{uuid.uuid4().hex[:6]}"
    body = {"name": name, "scopes": ["accounts"], "expires": "1d"}
    status, created = api(stack, "POST", "/api/v1/tokens", world.token, body)
    assert (status, created["created_by"], created["scopes"]) == (201, world.admin, ["accounts"])
    # The new token acts for the same domain administrator: its domain only.
    child = created["token"]
    assert api(stack, "GET", f"/api/v1/mailboxes?domain={DOMAIN}", child)[0] == 403
    listed = api(stack, "GET", "/api/v1/tokens", world.token)[1]["tokens"]
    assert {token["created_by"] for token in listed} == {world.admin}
    assert {world.token_name, name} <= {token["name"] for token in listed}
    for other in (world.root_name, f"no-such-{uuid.uuid4().hex[:6]}"):
        assert api(stack, "DELETE", f"/api/v1/tokens/{other}", world.token) == (
            403,
            {"error": f"API token {other} is not one you created"},
        )
    assert api(stack, "DELETE", f"/api/v1/tokens/{name}", world.token)[0] == 200
    assert api(stack, "GET", "/api/v1/domains", child) == (401, UNAUTHORIZED)
    assert ("token.create", name) in audited(stack, world.token_name)
    assert ("token.revoke", name) in audited(stack, world.token_name)
    # Root's token sees every token.
    every = {t["name"] for t in api(stack, "GET", "/api/v1/tokens", world.root)[1]["tokens"]}
    assert {world.root_name, world.token_name, name} <= every


def test_the_openapi_document_lists_every_route(stack: RunningStack) -> None:
    document = api(stack, "GET", "/api/v1/openapi.json")[1]
    routes = {path: set(methods) for path, methods in document["paths"].items()}
    assert routes == {
        "/api/v1/mailboxes": {"get", "post"},
        "/api/v1/mailboxes/{address}": {"patch", "delete"},
        "/api/v1/domains": {"get", "post"},
        "/api/v1/domains/{name}": {"get", "patch", "delete"},
        "/api/v1/aliases": {"get", "post"},
        "/api/v1/aliases/{source}": {"delete"},
        "/api/v1/tokens": {"get", "post"},
        "/api/v1/tokens/{name}": {"delete"},
        "/api/v1/queue": {"get"},
        "/api/v1/queue/{queue_id}/retry": {"post"},
        "/api/v1/queue/{queue_id}": {"delete"},
        "/api/v1/alias-domains": {"get", "post"},
        "/api/v1/alias-domains/{name}": {"delete"},
        "/api/v1/senders": {"get", "post"},
        "/api/v1/senders/{sender}": {"delete"},
        "/api/v1/health": {"get"},
        "/api/v1/bans": {"get"},
        "/api/v1/bans/{address}": {"delete"},
        "/api/v1/backups": {"get"},
        "/api/v1/domains/{name}/dns": {"get"},
        "/api/v1/domains/{name}/dkim/rotate": {"post"},
    }
    assert {"Domain", "NewAlias", "CreatedToken", "Error"} <= set(document["components"]["schemas"])


def _as_admin_role(stack: RunningStack, sql: str) -> tuple[int, str]:
    result = stack.compose(
        "exec", "-T", "--user", "977", "admin", "psql", "--no-psqlrc", "--host=db",
        "--username=mailstack_admin", "--dbname=mail", "--tuples-only", "--command", sql,
        check=False,
    )  # fmt: skip
    return result.returncode, (result.stdout + result.stderr).decode()


def test_the_admin_role_cannot_unrevoke_a_token_nor_read_others_host_jobs(
    stack: RunningStack,
) -> None:
    name, _ = new_token(stack, "read")
    stack.cli("api", "token", "revoke", name)
    code, said = _as_admin_role(
        stack, "UPDATE api_tokens SET revoked = NULL WHERE revoked IS NOT NULL"
    )
    assert code != 0 and "revoked for good" in said
    # A job the host itself recorded is not the admin service's to read.
    stack.compose(
        "exec", "-T", "db", "psql", "--username=postgres", "--dbname=mail", "--command",
        "INSERT INTO host_jobs (kind, target, state) VALUES ('sessions.kick', 'host@x.test', 'done')",
    )  # fmt: skip
    code, said = _as_admin_role(
        stack, "SELECT count(*) FROM host_jobs WHERE target = 'host@x.test'"
    )
    assert (code, said.strip()) == (0, "0")
