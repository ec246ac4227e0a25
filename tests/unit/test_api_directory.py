"""The REST API's directory operations scoped by role (api.operations, api.domains,
api.apitokens): what each principal may see and change, which status each refusal gets, and
that a refusal of scope is decided before the database is asked."""

from __future__ import annotations

import datetime

import pytest

from mailstack.accounts import names
from mailstack.api import apitokens, domains, operations
from mailstack.api.operations import UNAUTHORIZED, ApiError, Caller
from mailstack.errors import UsageError
from mailstack.identity.principal import ADMIN, DOMAIN_ADMIN, ROOT, Principal
from mailstack.identity.tokens import TokenIdentity
from tests.unit.fakes import Call, FakeContainers

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
TOKEN = "msk_" + "B" * 43
DANA = Principal("token:dana-ci", DOMAIN_ADMIN, frozenset({"a.test"}))
GOOD_PASSWORD = "correct horse 42 battery"  # a test value
MAILBOX_ROWS = (
    b"bob@a.test,a.test,1024,t,2026-12-06T12:00:00Z\n"
    b"eve@b.test,b.test,1024,t,2026-12-06T12:00:00Z\n"
)
JOB = "INSERT INTO host_jobs"


def _refusal(call: object) -> ApiError:
    with pytest.raises(ApiError) as refused:
        call()  # type: ignore[operator]
    return refused.value


def _db_calls(fake: FakeContainers) -> list[Call]:
    return [call for call in fake.calls if call.service == "db"]


def _job(fake: FakeContainers) -> tuple[str, str]:
    """The (kind, target) of the one host job queued."""
    (call,) = fake.sent(JOB)
    return call.variables()["kind"], call.variables()["target"]


# --- who the token acts for --------------------------------------------------------------------


def test_a_token_acts_for_its_domain_administrator_read_now() -> None:
    fake = FakeContainers(
        by_marker=[
            ("FROM api_tokens WHERE token_hash", b"dana-ci,admin,dana,active\n"),
            ("FROM admins a", b'domain_admin,"a.test"\n'),
        ]
    )
    caller = operations.authorize_caller(fake, f"Bearer {TOKEN}", "read", NOW)
    assert caller.principal == DANA
    assert caller.identity.created_by == "dana"


def test_a_token_whose_administrator_is_gone_or_inactive_gets_the_same_401() -> None:
    fake = FakeContainers(
        by_marker=[("FROM api_tokens WHERE token_hash", b"ci,admin,gone,active\n")]
    )
    error = _refusal(lambda: operations.authorize_caller(fake, f"Bearer {TOKEN}", "read", NOW))
    assert (error.status, error.message) == (401, UNAUTHORIZED)


def test_roots_token_acts_for_every_domain_without_a_second_query() -> None:
    fake = FakeContainers(by_marker=[("FROM api_tokens WHERE token_hash", b"ci,read,,active\n")])
    caller = operations.authorize_caller(fake, f"Bearer {TOKEN}", "read", NOW)
    assert (caller.principal.role, caller.principal.domains) == (ADMIN, None)
    assert len(fake.calls) == 1


# --- mailboxes -----------------------------------------------------------------------------------


def test_a_domain_administrators_mailbox_list_is_cut_to_its_domains() -> None:
    fake = FakeContainers(by_marker=[("FROM mailboxes", MAILBOX_ROWS)])
    listed = operations.list_mailboxes(fake, DANA, None)
    assert [m["address"] for m in listed["mailboxes"]] == ["bob@a.test"]
    assert [m["address"] for m in operations.list_mailboxes(fake, ROOT, None)["mailboxes"]] == [
        "bob@a.test",
        "eve@b.test",
    ]


@pytest.mark.parametrize("domain", ["b.test", "never-added.test"])
def test_naming_another_domain_is_403_in_one_line_before_the_database_is_asked(
    domain: str,
) -> None:
    fake = FakeContainers()
    for call in (
        lambda: operations.list_mailboxes(fake, DANA, domain),
        lambda: operations.create_mailbox(fake, DANA, f"x@{domain}", GOOD_PASSWORD, None, "1G"),
        lambda: operations.remove_mailbox(fake, DANA, f"x@{domain}"),
        lambda: operations.change_mailbox(fake, DANA, f"x@{domain}", None, "1G"),
        lambda: domains.list_aliases(fake, DANA, domain),
        lambda: domains.create_alias(fake, DANA, f"x@{domain}", ["y@a.test"]),
        lambda: domains.remove_alias(fake, DANA, f"@{domain}", []),
    ):
        error = _refusal(call)
        assert (error.status, error.message) == (403, f"{domain} is not a domain you manage")
    assert fake.calls == []


def test_a_hostile_address_gets_the_clis_line_whoever_asks() -> None:
    hostile = "bob@a.test\r\nBcc: all@a.test"
    with pytest.raises(UsageError) as cli:
        names.require("ADDRESS", names.address, hostile)
    for caller in (DANA, ROOT):
        error = _refusal(
            lambda who=caller: operations.remove_mailbox(FakeContainers(), who, hostile)
        )
        assert (error.status, error.message) == (400, cli.value.message)


def test_a_removed_mailbox_keeps_its_mail_and_the_host_ends_its_sessions() -> None:
    fake = FakeContainers(
        by_marker=[
            ("SELECT 'state'", b"state,t\n"),
            ("WITH gone AS", b"mailbox,bob@a.test,\nalias,sales@a.test,bob@a.test\n"),
            (JOB, b"7\n"),
        ]
    )
    removed = operations.remove_mailbox(fake, DANA, "Bob@A.test")
    assert removed == {
        "address": "bob@a.test",
        "removed_aliases": ["sales@a.test -> bob@a.test"],
        "stored_mail": "kept in /var/mail/a.test/bob",
    }
    assert [call.service for call in fake.calls] == ["db", "db", "db"]  # never doveadm here
    assert _job(fake) == ("sessions.kick", "bob@a.test")


def test_removing_a_mailbox_that_does_not_exist_is_404() -> None:
    fake = FakeContainers(by_marker=[("SELECT 'state'", b"state,f\n")])
    error = _refusal(lambda: operations.remove_mailbox(fake, DANA, "ghost@a.test"))
    assert (error.status, error.message) == (404, "mailbox ghost@a.test does not exist")


def test_a_mailbox_change_checks_every_value_before_writing_either() -> None:
    fake = FakeContainers()
    weak = _refusal(lambda: operations.change_mailbox(fake, DANA, "bob@a.test", "short", "1G"))
    assert weak.status == 400 and weak.message.startswith("the password is too short")
    size = _refusal(
        lambda: operations.change_mailbox(fake, DANA, "bob@a.test", GOOD_PASSWORD, "lots")
    )
    assert size.status == 400 and size.message.startswith("quota: 'lots' is not a size")
    nothing = _refusal(lambda: operations.change_mailbox(fake, DANA, "bob@a.test", None, None))
    assert nothing.status == 400
    assert fake.calls == []


def test_a_mailbox_change_sets_the_hash_on_stdin_and_the_quota() -> None:
    fake = FakeContainers(
        by_marker=[
            ("SET password", b"bob@a.test\n"),
            ("SET quota_bytes", f"result,t,1,{2 << 30},0,{2 << 30}\n".encode()),
            ("INSERT INTO host_jobs", b"7\n"),
        ]
    )
    changed = operations.change_mailbox(fake, DANA, "bob@a.test", GOOD_PASSWORD, "1G")
    assert changed == {"address": "bob@a.test", "password_changed": True, "quota_bytes": 1 << 30}
    (password_call,) = fake.sent("SET password")
    assert GOOD_PASSWORD not in password_call.stdin + " ".join(password_call.argv)
    # The old password's IMAP sessions end (a host job: the admin service has no socket).
    (kick,) = fake.sent("INSERT INTO host_jobs")
    assert (kick.variables()["kind"], kick.variables()["target"]) == ("sessions.kick", "bob@a.test")


# --- domains -------------------------------------------------------------------------------------


DOMAIN_ROWS = b"a.test,t,1,2026-12-06T12:00:00Z\nb.test,t,0,2026-12-06T12:00:00Z\n"


def test_domains_are_listed_to_whom_manages_them_with_their_keys_state() -> None:
    fake = FakeContainers(
        by_marker=[
            ("FROM domains d", DOMAIN_ROWS),
            ("FROM host_jobs", b"a.test,failed,render conflict\nb.test,pending,\n"),
        ]
    )
    mine = domains.list_domains(fake, DANA)["domains"]
    assert [(d["name"], d["dkim_key"], d["dkim_key_detail"]) for d in mine] == [
        ("a.test", "failed", "render conflict")
    ]
    every = domains.list_domains(fake, ROOT)["domains"]
    assert [(d["name"], d["dkim_key"]) for d in every] == [
        ("a.test", "failed"),
        ("b.test", "queued"),
    ]
    no_job = FakeContainers(by_marker=[("FROM domains d", DOMAIN_ROWS)])
    assert {d["dkim_key"] for d in domains.list_domains(no_job, ROOT)["domains"]} == {"published"}


def test_a_new_domain_is_added_and_its_key_queued_for_the_host() -> None:
    fake = FakeContainers(by_marker=[("INSERT INTO domains", b"added,c.test\n"), (JOB, b"12\n")])
    created = domains.create_domain(fake, ROOT, "C.test")
    assert (created["name"], created["dkim_key"], created["job"]) == ("c.test", "queued", 12)
    assert _job(fake) == ("domain.publish_key", "c.test")


def test_only_an_administrator_adds_or_removes_a_domain() -> None:
    fake = FakeContainers()
    for call in (
        lambda: domains.create_domain(fake, DANA, "c.test"),
        lambda: domains.remove_domain(fake, DANA, "a.test", "example.test"),
    ):
        assert _refusal(call).status == 403
    assert fake.calls == []


def test_a_hostile_domain_gets_the_clis_line() -> None:
    hostile = "evil.test\nX-Injected: yes"
    with pytest.raises(UsageError) as cli:
        names.require("DOMAIN", names.domain, hostile)
    error = _refusal(lambda: domains.create_domain(FakeContainers(), ROOT, hostile))
    assert (error.status, error.message) == (400, cli.value.message)


def test_an_existing_domain_is_409_and_one_in_use_is_409_with_the_clis_line() -> None:
    exists = FakeContainers(by_marker=[("INSERT INTO domains", b"")])
    assert _refusal(lambda: domains.create_domain(exists, ROOT, "a.test")).status == 409
    in_use = FakeContainers(by_marker=[("SELECT 'state'", b"state,t,2,1\n")])
    error = _refusal(lambda: domains.remove_domain(in_use, ROOT, "a.test", "example.test"))
    assert error.status == 409
    assert (
        error.message
        == "domain a.test still has 2 mailbox(es) and 1 alias(es); nothing was removed"
    )


def test_the_stacks_own_domain_is_never_removed() -> None:
    fake = FakeContainers()
    error = _refusal(lambda: domains.remove_domain(fake, ROOT, "Example.TEST", "example.test"))
    assert error.status == 400 and "the stack's own domain" in error.message
    assert fake.calls == []


# --- aliases -------------------------------------------------------------------------------------


def test_a_domain_administrators_alias_may_point_anywhere_but_its_source_is_its_own() -> None:
    fake = FakeContainers(
        by_marker=[("INSERT INTO aliases", b"domain,t\nadded,x@outside.example\n")]
    )
    created = domains.create_alias(fake, DANA, "sales@a.test", ["x@outside.example"])
    assert created == {
        "source": "sales@a.test",
        "added": ["x@outside.example"],
        "already_present": [],
    }


def test_aliases_are_listed_only_from_the_callers_domains() -> None:
    fake = FakeContainers(
        by_marker=[("FROM aliases", b"@a.test,bob@a.test\nsales@b.test,eve@b.test\n")]
    )
    listed = domains.list_aliases(fake, DANA, None)["aliases"]
    assert listed == [{"source": "@a.test", "domain": "a.test", "destinations": ["bob@a.test"]}]


def test_removing_an_alias_that_is_not_there_is_404() -> None:
    error = _refusal(lambda: domains.remove_alias(FakeContainers(), DANA, "no@a.test", []))
    assert (error.status, error.message) == (404, "no alias no@a.test")


# --- tokens --------------------------------------------------------------------------------------

TOKEN_ROWS = (
    b"root-ci,admin,active,2026-12-01T00:00:00Z,,,,\n"
    b"dana-ci,admin,active,2026-12-01T00:00:00Z,,,,dana\n"
    b"dana-child,accounts,active,2026-12-02T00:00:00Z,,,,dana\n"
)
DANA_CALLER = Caller(TokenIdentity("dana-ci", ("admin",), "dana"), DANA)
ROOT_CALLER = Caller(TokenIdentity("root-ci", ("admin",), None), ROOT)


def test_a_domain_administrator_lists_only_the_tokens_it_created() -> None:
    fake = FakeContainers(by_marker=[("FROM api_tokens ORDER BY", TOKEN_ROWS)])
    mine = apitokens.list_tokens(fake, DANA_CALLER, NOW)["tokens"]
    assert [token["name"] for token in mine] == ["dana-ci", "dana-child"]
    every = apitokens.list_tokens(fake, ROOT_CALLER, NOW)["tokens"]
    assert len(every) == 3


@pytest.mark.parametrize("name", ["root-ci", "no-such-token"])
def test_revoking_a_token_it_did_not_create_is_one_403_whether_it_exists_or_not(
    name: str,
) -> None:
    fake = FakeContainers(by_marker=[("FROM api_tokens ORDER BY", TOKEN_ROWS)])
    error = _refusal(lambda: apitokens.revoke_token(fake, DANA_CALLER, name, NOW))
    assert (error.status, error.message) == (403, f"API token {name} is not one you created")
    assert not fake.sent("UPDATE api_tokens")


def test_a_new_token_acts_for_the_same_administrator_and_is_no_wider() -> None:
    fake = FakeContainers(
        by_marker=[("INSERT INTO api_tokens", b"creator,1\nname_taken,0\nadded,never\n")]
    )
    created = apitokens.create_token(fake, DANA_CALLER, "child", ["accounts"], None)
    assert (created["created_by"], created["scopes"]) == ("dana", ["accounts"])
    assert created["token"].startswith("msk_")
    assert fake.variables()["created_by"] == "dana"
    narrow = Caller(TokenIdentity("reader", ("accounts",), "dana"), DANA)
    error = _refusal(lambda: apitokens.create_token(fake, narrow, "wide", ["domains"], None))
    assert error.status == 403 and "cannot grant domains" in error.message


def test_a_token_name_taken_is_409_and_an_unknown_one_404() -> None:
    taken = FakeContainers(by_marker=[("INSERT INTO api_tokens", b"creator,1\nname_taken,1\n")])
    assert (
        _refusal(lambda: apitokens.create_token(taken, ROOT_CALLER, "x", ["read"], None)).status
        == 409
    )
    missing = FakeContainers(by_marker=[("WITH token AS", b"")])
    assert _refusal(lambda: apitokens.revoke_token(missing, ROOT_CALLER, "x", NOW)).status == 404
