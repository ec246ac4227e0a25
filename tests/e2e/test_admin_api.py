"""The admin service's REST API (/api/v1) as a client uses it: over HTTPS through the front,
with tokens made by `mailstack api token create`; a mailbox it creates receives and reads
mail like any other."""

from __future__ import annotations

import http.client
import json
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.e2e.conftest import DOMAIN, GATEWAY, HOSTNAME, PORTS, RunningStack
from tests.e2e.mail import fetch_by_subject, send_inbound, unique_subject

PASSWORD = "Api-created 42 mailbox"  # a test account
UNAUTHORIZED = {"error": "a valid API token is needed: send 'Authorization: Bearer <token>'"}


def api(
    stack: RunningStack,
    method: str,
    path: str,
    token: str | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    """One request to the API through the front's published HTTPS port (stack CA checked)."""
    headers = {"Host": HOSTNAME}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    connection = http.client.HTTPSConnection(
        "127.0.0.1", PORTS["https"], context=stack.tls_context(), timeout=30
    )
    try:
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def _headers(stack: RunningStack, path: str) -> dict[str, str]:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", PORTS["https"], context=stack.tls_context(), timeout=30
    )
    try:
        connection.request("GET", path, headers={"Host": HOSTNAME})
        response = connection.getresponse()
        response.read()
        return {name.lower(): value for name, value in response.getheaders()}
    finally:
        connection.close()


def new_token(stack: RunningStack, *scopes: str) -> tuple[str, str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    options = [option for scope in scopes for option in ("--scope", scope)]
    created = json.loads(stack.cli("api", "token", "create", name, *options, "--json").stdout)
    return name, created["token"]


@pytest.fixture(scope="module")
def tokens(stack: RunningStack) -> dict[str, str]:
    return {"read": new_token(stack, "read")[1], "accounts": new_token(stack, "accounts")[1]}


def test_api_refuses_requests_without_a_valid_token(
    stack: RunningStack, tokens: dict[str, str]
) -> None:
    assert api(stack, "GET", "/api/v1/mailboxes") == (401, UNAUTHORIZED)
    assert _headers(stack, "/api/v1/mailboxes").get("www-authenticate") == "Bearer"
    assert api(stack, "GET", "/api/v1/mailboxes", "msk_" + "x" * 43) == (401, UNAUTHORIZED)
    assert api(stack, "GET", "/api/v1/mailboxes", "not-a-token") == (401, UNAUTHORIZED)
    name, revoked = new_token(stack, "admin")
    assert api(stack, "GET", "/api/v1/mailboxes", revoked)[0] == 200
    stack.cli("api", "token", "revoke", name)
    assert api(stack, "GET", "/api/v1/mailboxes", revoked) == (401, UNAUTHORIZED)
    # Without a token the body's rules are never reached: the same 401.
    assert api(stack, "POST", "/api/v1/mailboxes", None, {"address": 1}) == (401, UNAUTHORIZED)


def test_api_read_token_cannot_create_a_mailbox(
    stack: RunningStack, tokens: dict[str, str]
) -> None:
    address = f"api-{uuid.uuid4().hex[:8]}@{DOMAIN}"
    body = {"address": address, "password": PASSWORD}
    status, answer = api(stack, "POST", "/api/v1/mailboxes", tokens["read"], body)
    assert status == 403
    assert "lacks the scope accounts" in answer["error"]
    _, listed = api(stack, "GET", "/api/v1/mailboxes", tokens["read"])
    assert address not in [mailbox["address"] for mailbox in listed["mailboxes"]]


def test_api_created_mailbox_receives_and_reads_mail(
    stack: RunningStack, tokens: dict[str, str]
) -> None:
    address = f"api-{uuid.uuid4().hex[:8]}@{DOMAIN}"
    body = {"address": address.upper(), "password": PASSWORD, "quota": "1G"}
    token_name, token = new_token(stack, "accounts")
    status, created = api(stack, "POST", "/api/v1/mailboxes", token, body)
    assert (status, created) == (
        201,
        {"address": address, "domain": DOMAIN, "quota_bytes": 1 << 30},
    )
    # The audit log names the token and the client's address (never the front's, never
    # "unknown"), from the database's own trigger.
    logged = json.loads(
        stack.cli("audit", "list", "--actor", f"token:{token_name}", "--json").stdout
    )
    assert [(e["action"], e["target"]) for e in logged] == [("mailbox.add", address)]
    assert logged[0]["source"] not in ("unknown", "host", "database")
    assert api(stack, "POST", "/api/v1/mailboxes", token, body) == (
        409,
        {"error": f"mailbox {address} already exists"},
    )
    subject = unique_subject("api mailbox")
    send_inbound([address], subject)
    assert str(fetch_by_subject(stack, address, PASSWORD, subject)["Subject"]) == subject
    status, listed = api(stack, "GET", f"/api/v1/mailboxes?domain={DOMAIN}", tokens["read"])
    assert status == 200
    (mailbox,) = [m for m in listed["mailboxes"] if m["address"] == address]
    assert (mailbox["quota_bytes"], mailbox["active"]) == (1 << 30, True)
    # The CLI sees what the API made.
    assert address in stack.cli("mailbox", "list").stdout


def test_api_refuses_hostile_input_with_the_clis_line(
    stack: RunningStack, tokens: dict[str, str]
) -> None:
    hostile = "victim@example.test\r\nBcc: everyone@example.test"
    cli = stack.cli(
        "mailbox", "add", hostile, "--password-stdin", stdin=PASSWORD + "\n", check=False
    )
    cli_line = cli.stderr.strip().splitlines()[0]
    status, answer = api(
        stack,
        "POST",
        "/api/v1/mailboxes",
        tokens["accounts"],
        {"address": hostile, "password": PASSWORD},
    )
    assert status == 400
    assert answer["error"] in cli_line  # the CLI prints the same line, in red, after "error:"
    assert answer["error"].startswith("ADDRESS: ")
    weak = {"address": f"weak-{uuid.uuid4().hex[:6]}@{DOMAIN}", "password": "password"}
    status, answer = api(stack, "POST", "/api/v1/mailboxes", tokens["accounts"], weak)
    assert status == 400 and answer["error"].startswith("the password is too short")
    elsewhere = {"address": "bob@not-ours.example", "password": PASSWORD}
    status, answer = api(stack, "POST", "/api/v1/mailboxes", tokens["accounts"], elsewhere)
    assert (status, answer) == (
        404,
        {"error": "not-ours.example is not a mail domain of this stack"},
    )


def test_api_serves_its_openapi_document(stack: RunningStack) -> None:
    status, document = api(stack, "GET", "/api/v1/openapi.json")
    assert status == 200
    assert set(document["paths"]["/api/v1/mailboxes"]) == {"get", "post"}


def test_admin_container_publishes_no_port(stack: RunningStack) -> None:
    ports = subprocess.run(
        ["docker", "port", stack.container("admin")], capture_output=True, text=True, check=True
    )
    assert ports.stdout.strip() == ""


def test_api_burst_of_creations_stays_within_the_memory_limit(
    stack: RunningStack, tokens: dict[str, str]
) -> None:
    # Each password hash takes 32 MiB of the container's 96: they run one at a time.
    addresses = [f"burst-{uuid.uuid4().hex[:8]}@{DOMAIN}" for _ in range(6)]

    def create(address: str) -> int:
        body = {"address": address, "password": PASSWORD}
        return api(stack, "POST", "/api/v1/mailboxes", tokens["accounts"], body)[0]

    with ThreadPoolExecutor(len(addresses)) as pool:
        assert list(pool.map(create, addresses)) == [201] * len(addresses)
    state = json.loads(
        subprocess.run(
            ["docker", "inspect", "--format", "{{json .State}}", stack.container("admin")],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert (state["OOMKilled"], state["Restarting"]) == (False, False)


def test_api_sees_the_clients_address_not_the_fronts(stack: RunningStack) -> None:
    marker = f"/api/v1/mailboxes?domain=client-{uuid.uuid4().hex[:8]}.test"
    assert api(stack, "GET", marker)[0] == 401
    logs = stack.compose("logs", "--no-color", "admin").stdout.decode()
    (line,) = [line for line in logs.splitlines() if marker in line]
    assert f" {GATEWAY}:" in line  # the host's clients arrive from the frontend gateway


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE mailboxes SET address = 'x@evil.test'",
        "UPDATE domains SET name = 'evil.test'",
        "UPDATE admins SET password = '{PLAIN}x'",  # it reads them (the web sign-in)
        "UPDATE admins SET role = 'admin'",
        "INSERT INTO admin_domains (admin, domain) VALUES ('x', 'evil.test')",
        "UPDATE api_tokens SET scopes = '{admin}'",
        "DELETE FROM api_tokens",
        # 0010 grants DELETE on mfa_totp (a user turns the own factor off); its UPDATE of
        # sealed with the mounted key could replace any factor anyway. Never all at once:
        "TRUNCATE mfa_totp",
        "DELETE FROM audit_log",
        # 0006: the host job queue: a new pending job of kind and target only, nothing else.
        "INSERT INTO host_jobs (kind, target, state) VALUES ('sessions.kick', 'x@y.test', 'done')",
        "INSERT INTO host_jobs (kind, target, requested_by) VALUES ('sessions.kick', 'x', 'cli:root')",
        "UPDATE host_jobs SET state = 'done'",
        "DELETE FROM host_jobs",
        "ALTER ROLE mailstack_admin SUPERUSER",
    ],
)
def test_admin_services_database_role_cannot_go_beyond_its_grants(
    stack: RunningStack, sql: str
) -> None:
    # What a foothold in the admin container could do with its own database password.
    result = stack.compose(
        "exec", "-T", "--user", "977", "admin", "psql", "--no-psqlrc", "--host=db",
        "--username=mailstack_admin", "--dbname=mail", "--command", sql,
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert b"permission denied" in result.stderr or b"must be superuser" in result.stderr
