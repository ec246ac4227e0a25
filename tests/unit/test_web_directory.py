"""The web admin's directory pages, their framework-free part (mailstack.api.webdirectory):
creating a token needs the password typed again and acts for the session's administrator
by the API's rules, the confirm page returns only to a page of its own list, and the audit
log is for administrators, newest first, with the CLI's filters and a CSV export a
spreadsheet cannot run."""

from __future__ import annotations

import csv
import datetime
import io
import json

import pytest

from mailstack.api import signin, webdirectory
from mailstack.api.operations import ApiError
from mailstack.errors import UsageError
from mailstack.identity import audit, sessions
from mailstack.identity.principal import ADMIN, DOMAIN_ADMIN, Principal
from mailstack.identity.sessions import Session
from tests.unit.fakes import FakeContainers

NOW = datetime.datetime(2026, 12, 6, 16, 40, 5, tzinfo=datetime.UTC)
ALICE = Principal("admin:alice", ADMIN, None)
DANA = Principal("admin:dana", DOMAIN_ADMIN, frozenset({"dana.test"}))
CREATED = b"creator,1\nname_taken,0\nadded,never\n"
TOKENS = (
    b"ci,read,active,2026-12-01T00:00:00Z,,,,alice\n"
    b"mine,accounts,active,2026-12-02T00:00:00Z,,,,dana\n"
    b"root,admin,active,2026-12-03T00:00:00Z,,,,\n"
)


def _session(admin: str = "alice", *, recent: bool) -> Session:
    return Session(sessions.new_id(), admin, None, sessions.FULL, reauthenticated=recent)


def test_creating_a_token_without_the_password_typed_again_asks_for_it_and_writes_nothing() -> None:
    db = FakeContainers(by_marker=[("INSERT INTO api_tokens", CREATED)])
    with pytest.raises(signin.ReauthNeeded):
        webdirectory.create_token(db, _session(recent=False), ALICE, "ci", ["read"], None)
    assert db.calls == []


def test_a_token_made_in_a_fresh_session_acts_for_its_administrator() -> None:
    db = FakeContainers(by_marker=[("INSERT INTO api_tokens", CREATED)])
    created = webdirectory.create_token(db, _session(recent=True), ALICE, " ci ", ["read"], "")
    assert (created["name"], created["created_by"], created["scopes"]) == ("ci", "alice", ["read"])
    assert created["token"].startswith("msk_")
    (call,) = db.calls
    assert call.variables()["created_by"] == "alice"
    assert created["token"] not in call.stdin and created["token"] not in " ".join(call.argv)


def test_a_bad_token_form_gets_the_clis_line_and_writes_nothing() -> None:
    db = FakeContainers()
    with pytest.raises(ApiError) as refused:
        webdirectory.create_token(db, _session(recent=True), ALICE, "ci", ["root"], None)
    assert (refused.value.status, refused.value.message.split(":")[0]) == (400, "--scope")
    assert db.calls == []


def test_a_domain_administrators_session_lists_and_revokes_only_its_own_tokens() -> None:
    from mailstack.api import apitokens

    caller = webdirectory.session_caller(DANA, "dana")
    db = FakeContainers(by_marker=[("FROM api_tokens ORDER BY", TOKENS)])
    listed = apitokens.list_tokens(db, caller, NOW)
    assert [token["name"] for token in listed["tokens"]] == ["mine"]
    with pytest.raises(ApiError) as refused:
        apitokens.revoke_token(db, caller, "ci", NOW)
    assert refused.value.status == 403
    assert not any("UPDATE api_tokens" in call.stdin for call in db.calls)
    everyone = apitokens.list_tokens(db, webdirectory.session_caller(ALICE, "alice"), NOW)
    assert len(everyone["tokens"]) == 3


@pytest.mark.parametrize(
    "requested",
    [None, "", "https://evil.test/", "//evil.test/admin/tokens", "/admin/tokens/../x",
     "/admin/tokens?x=1", "/admin/audit", "javascript:alert(1)"],
)  # fmt: skip
def test_the_confirm_page_returns_only_to_a_page_of_its_list(requested: str | None) -> None:
    assert webdirectory.return_path(requested) == webdirectory.DEFAULT_RETURN


def test_the_confirm_page_returns_to_the_tokens_page() -> None:
    assert webdirectory.return_path("/admin/tokens") == "/admin/tokens"


def test_the_audit_filters_default_and_follow_the_clis_rules() -> None:
    assert webdirectory.audit_filters(None, None) == (None, webdirectory.AUDIT_PAGE_LIMIT)
    assert webdirectory.audit_filters(" admin:alice ", "20") == ("admin:alice", 20)
    assert webdirectory.audit_filters("token:", "1000") == ("token:", 1000)


@pytest.mark.parametrize(
    ("actor", "limit", "named"),
    [
        ("x' OR 1=1 --", "10", "actor"),
        ("admin:a\nb", "10", "actor"),
        ("", "0", "limit"),
        ("", "1001", "limit"),
        ("", "-5", "limit"),
        ("", "ten", "limit"),
    ],
)
def test_bad_audit_filters_get_one_line_naming_the_field(
    actor: str, limit: str, named: str
) -> None:
    with pytest.raises(UsageError) as wrong:
        webdirectory.audit_filters(actor, limit)
    assert wrong.value.message.startswith(f"{named}: ")
    assert "\n" not in wrong.value.message


AUDIT_ROWS = (
    b"7,2026-12-06T10:00:00Z,admin:alice,172.30.12.1,mailbox.add,a@example.test,\n"
    b"8,2026-12-06T10:01:00Z,admin:alice,172.30.12.1,domain.add,new.test,\n"
)


def test_the_audit_log_is_for_administrators_only_and_asks_nothing_otherwise() -> None:
    db = FakeContainers(by_marker=[("FROM audit_log", AUDIT_ROWS)])
    with pytest.raises(ApiError) as refused:
        webdirectory.audit_entries(db, DANA, None, 100)
    assert refused.value.status == 403
    assert db.calls == []


def test_the_audit_log_page_shows_the_newest_first_with_the_filter_as_variables() -> None:
    db = FakeContainers(by_marker=[("FROM audit_log", AUDIT_ROWS)])
    entries = webdirectory.audit_entries(db, ALICE, "admin:alice", 2)
    assert [entry.id for entry in entries] == [8, 7]
    (call,) = db.calls
    assert call.variables()["actor"] == "admin:alice" and call.variables()["limit"] == "2"
    assert "admin:alice" not in call.stdin  # a value, never SQL text


def _entry(target: str, detail: str = "") -> audit.AuditEntry:
    return audit.AuditEntry(
        1, "2026-12-06T10:00:00Z", "admin:alice", "host", "alias.add", target, detail
    )


def test_the_csv_export_has_a_header_quotes_what_needs_it_and_defuses_formulas() -> None:
    entries = [
        _entry('=HYPERLINK("http://evil.test")'),
        _entry("a@x.test -> b@y.test", 'said "hi", then\nleft'),
        _entry("+1"),
        _entry("@sum"),
        _entry("-2"),
    ]
    rows = list(csv.reader(io.StringIO(webdirectory.audit_csv(entries))))
    assert rows[0] == list(webdirectory.AUDIT_FIELDS)
    targets = [row[5] for row in rows[1:]]
    assert targets == [
        '\'=HYPERLINK("http://evil.test")',
        "a@x.test -> b@y.test",
        "'+1",
        "'@sum",
        "'-2",
    ]
    assert rows[2][6] == 'said "hi", then\nleft'  # the field survives whole


def test_the_json_export_is_what_the_cli_prints() -> None:
    entries = [_entry("a@example.test")]
    assert json.loads(webdirectory.audit_json(entries)) == [
        {"id": 1, "at": "2026-12-06T10:00:00Z", "actor": "admin:alice", "source": "host",
         "action": "alias.add", "target": "a@example.test", "detail": ""},
    ]  # fmt: skip


def test_the_export_is_named_by_its_time_in_utc() -> None:
    assert webdirectory.export_name("csv", NOW) == "mailstack-audit-20261206T164005Z.csv"
