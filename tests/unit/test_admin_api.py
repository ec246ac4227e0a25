"""The REST API's operations (mailstack.api.operations): which refusal gets which status and
line, that the CLI's rules judge the input, and what reaches the database; and the admin
service's executor."""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mailstack.accounts import names, passwords
from mailstack.adapters import psql
from mailstack.adapters.pgconnection import PgConnection
from mailstack.api import operations
from mailstack.api.operations import UNAUTHORIZED, ApiError
from mailstack.errors import MailstackError, UsageError
from mailstack.identity.principal import ROOT
from tests.unit.fakes import FakeContainers

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
TOKEN = "msk_" + "A" * 43
LOOKUP = "FROM api_tokens WHERE token_hash"
ADD = "INSERT INTO mailboxes"
GOOD_PASSWORD = "correct horse 42 battery"  # a test value


def _token(scopes: str, state: str = "active") -> FakeContainers:
    return FakeContainers(by_marker=[(LOOKUP, f"ci,{scopes},,{state}\n".encode())])


def _refusal(call: object) -> ApiError:
    with pytest.raises(ApiError) as refused:
        call()  # type: ignore[operator]
    return refused.value


# --- tokens: 401 and 403 ---------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer  ", f"Basic {TOKEN}", TOKEN])
def test_a_request_without_a_bearer_token_is_401_without_asking_the_database(
    header: str | None,
) -> None:
    containers = FakeContainers()
    error = _refusal(lambda: operations.authorize(containers, header, "read", NOW))
    assert (error.status, error.body()) == (401, {"error": UNAUTHORIZED})
    assert containers.calls == []


def test_a_malformed_token_is_401_without_asking_the_database() -> None:
    containers = FakeContainers()
    error = _refusal(lambda: operations.authorize(containers, "Bearer msk_short", "read", NOW))
    assert error.status == 401
    assert containers.calls == []


@pytest.mark.parametrize("state", ["revoked", "expired"])
def test_revoked_expired_and_unknown_tokens_get_the_same_401(state: str) -> None:
    answers = [
        _refusal(
            lambda: operations.authorize(_token("admin", state), f"Bearer {TOKEN}", "read", NOW)
        ),
        _refusal(lambda: operations.authorize(FakeContainers(), f"Bearer {TOKEN}", "read", NOW)),
    ]
    assert {(error.status, error.message) for error in answers} == {(401, UNAUTHORIZED)}


def test_the_token_travels_to_the_database_as_its_hash_on_stdin_only() -> None:
    containers = _token("read")
    operations.authorize(containers, f"bearer {TOKEN}", "read", NOW)  # the scheme in any case
    (call,) = containers.calls
    assert TOKEN not in " ".join(call.argv) and TOKEN not in call.stdin
    assert "token_hash" not in call.variables()


def test_a_token_without_the_scope_is_403_naming_what_it_lacks() -> None:
    error = _refusal(
        lambda: operations.authorize(_token("read"), f"Bearer {TOKEN}", "accounts", NOW)
    )
    assert error.status == 403
    assert error.message == "API token ci lacks the scope accounts (it has read)"


def test_an_accounts_token_may_create_mailboxes_and_read() -> None:
    for needed in ("accounts", "read"):
        identity = operations.authorize(_token("accounts"), f"Bearer {TOKEN}", needed, NOW)
        assert identity.name == "ci"


# --- creating a mailbox: the CLI's rules and lines -------------------------------------------


def _create(
    containers: FakeContainers,
    address: str,
    password: str = GOOD_PASSWORD,
    quota: str | None = None,
) -> dict[str, object]:
    return operations.create_mailbox(containers, ROOT, address, password, quota, "2G")


@pytest.mark.parametrize(
    "address",
    ["alice@example.test\nbcc@evil.test", "a/../b@example.test", "' OR 1=1 --", "x@-bad-.test"],
)
def test_a_hostile_address_is_400_with_the_clis_line_and_nothing_is_sent(address: str) -> None:
    containers = FakeContainers()
    error = _refusal(lambda: _create(containers, address))
    with pytest.raises(UsageError) as cli:
        names.require("ADDRESS", names.mailbox, address)
    assert (error.status, error.message) == (400, cli.value.message)
    assert containers.calls == []


def test_a_weak_password_is_400_with_the_password_rules_line() -> None:
    containers = FakeContainers()
    error = _refusal(lambda: _create(containers, "bob@example.test", "short"))
    assert error.status == 400
    assert error.message.startswith("the password is too short")
    assert containers.calls == []


def test_a_bad_quota_is_400_naming_the_field() -> None:
    error = _refusal(lambda: _create(FakeContainers(), "bob@example.test", quota="lots"))
    assert error.status == 400
    assert error.message.startswith("quota: 'lots' is not a size")


def test_a_mailbox_of_an_unknown_domain_is_404() -> None:
    containers = FakeContainers(by_marker=[(ADD, b"result,0,f,f,0,0\n")])
    error = _refusal(lambda: _create(containers, "bob@nowhere.test"))
    assert (error.status, error.message) == (404, "nowhere.test is not a mail domain of this stack")


def test_an_existing_mailbox_is_409() -> None:
    containers = FakeContainers(by_marker=[(ADD, b"result,0,t,t,0,0\n")])
    error = _refusal(lambda: _create(containers, "Bob@Example.test"))
    assert (error.status, error.message) == (409, "mailbox bob@example.test already exists")


def test_a_created_mailbox_gets_an_argon2id_hash_on_stdin_and_the_default_quota() -> None:
    containers = FakeContainers(by_marker=[(ADD, b"result,1,t,f,0,0\n")])
    created = _create(containers, "Bob@Example.test")
    assert created == {
        "address": "bob@example.test",
        "domain": "example.test",
        "quota_bytes": 2 << 30,
    }
    (call,) = containers.calls
    assert GOOD_PASSWORD not in call.stdin and GOOD_PASSWORD not in " ".join(call.argv)
    stored = re.search(r"\\set password_hash '([^']+)'", call.stdin)
    assert stored and passwords.verify_password(stored.group(1), GOOD_PASSWORD)
    assert call.variables()["quota_bytes"] == str(2 << 30)


def test_a_database_failure_is_500_without_its_detail() -> None:
    containers = FakeContainers(fail_on=ADD)
    error = _refusal(lambda: _create(containers, "bob@example.test"))
    assert error.status == 500
    assert "boom" not in error.message


def test_concurrent_creations_hash_one_password_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each hash takes 32 MiB: in a 96 MiB container a burst of requests must not run at once.
    lock = threading.Lock()
    counts = {"active": 0, "peak": 0}
    real = passwords.hash_password

    def counting(plain: str) -> str:
        with lock:
            counts["active"] += 1
            counts["peak"] = max(counts["peak"], counts["active"])
        time.sleep(0.05)
        with lock:
            counts["active"] -= 1
        return real(plain)

    monkeypatch.setattr(passwords, "hash_password", counting)
    containers = FakeContainers(by_marker=[(ADD, b"result,1,t,f,0,0\n")])
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: _create(containers, f"u{n}@example.test"), range(4)))
    assert counts["peak"] == 1


# --- listing ---------------------------------------------------------------------------------


def test_mailboxes_are_listed_with_recorded_usage_and_a_checked_domain_filter() -> None:
    containers = FakeContainers(
        by_marker=[
            ("FROM mailboxes", b"bob@example.test,example.test,1024,t,2026-12-06T12:00:00Z\n"),
            ("FROM quota_usage", b"usage,bob@example.test,512,3,2026-12-06T12:01:00Z\n"),
        ]
    )
    listed = operations.list_mailboxes(containers, ROOT, "Example.TEST")
    assert listed["mailboxes"] == [
        {
            "address": "bob@example.test",
            "domain": "example.test",
            "quota_bytes": 1024,
            "used_bytes": 512,
            "messages": 3,
            "active": True,
            "created": "2026-12-06T12:00:00Z",
        }
    ]
    assert containers.variables(0)["domain"] == "example.test"
    assert [call.service for call in containers.calls] == ["db", "db"]  # never doveadm


def test_a_hostile_domain_filter_is_400() -> None:
    error = _refusal(lambda: operations.list_mailboxes(FakeContainers(), ROOT, "example.test' --"))
    assert error.status == 400
    assert error.message.startswith("DOMAIN: ")


# --- the admin service's pieces --------------------------------------------------------------


def test_the_admin_executor_runs_sql_and_nothing_else() -> None:
    executor = PgConnection(connect=lambda: pytest.fail("no connection is needed to refuse"))
    assert isinstance(executor, psql.SqlRunner)
    assert "--username=postgres" in psql.psql_argv({})  # the host's way is unchanged
    with pytest.raises(MailstackError):
        executor.exec("dovecot", ["doveadm", "quota", "get", "-A"])
    with pytest.raises(MailstackError):
        executor.exec("db", ["psql", "--no-psqlrc"])


def test_the_apis_core_imports_nothing_of_pydantic_typer_or_rich() -> None:
    code = (
        # every module of mailstack.api: all of them run in the admin image
        "import sys, importlib, pkgutil, mailstack.api, mailstack.adapters.pgconnection\n"
        "for found in pkgutil.iter_modules(mailstack.api.__path__):\n"
        "    importlib.import_module('mailstack.api.' + found.name)\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'pydantic', 'typer', 'rich', 'click', 'jinja2', 'yaml'}))\n"
    )
    result = subprocess.run(  # our own interpreter, a constant script
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
