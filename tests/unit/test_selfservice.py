"""Users' self-service (mailstack.api.selfservice) and its sessions, without a web
framework: the sign-in's stages, wrong and used codes, an inactive mailbox, the enrolment
that policy.mfa required imposes, the scoping of every change to the session's own mailbox,
and what reaches the database and the bans service."""

from __future__ import annotations

import re
import time

import pytest

from mailstack.accounts import passwords
from mailstack.adapters.bansclient import BansClient, Verdict
from mailstack.api import selfservice, signin
from mailstack.errors import UsageError
from mailstack.identity import sealing, sessions, totp
from mailstack.identity.sessions import Session
from mailstack.resources import migrations_dir
from tests.unit.fakes import Call, FakeContainers
from tests.unit.test_web_signin import FakeGuard

KEY = bytes(range(32))
SECRET = totp.new_secret()
NOW = 1_800_000_000.0
ADDRESS = "bob@example.test"
PASSWORD = "Correct horse 42 battery"  # a test value
HASH = passwords.hash_password(PASSWORD)
MAILBOX_ROW = ("SELECT 'mailbox', password", f'mailbox,"{HASH}"\n'.encode())
CREATED = ("INSERT INTO web_sessions", b"created\n")
ADVANCED = ("UPDATE web_sessions SET id_hash", b"advanced\n")
NO_FACTOR = ("SELECT 'totp', t.id", b"account,1\n")


def _set(call: Call) -> dict[str, str]:
    r"""The values a call sets with `\set name 'value'` on stdin."""
    return dict(re.findall(r"^\\set (\w+) '([^']*)'$", call.stdin, re.MULTILINE))


def _totp_row(confirmed: bool, last_step: int = 0) -> tuple[str, bytes]:
    sealed = sealing.seal(KEY, SECRET, f"mailbox:{ADDRESS}")
    flag = "t" if confirmed else "f"
    return ("SELECT 'totp', t.id", f"account,1\ntotp,7,{sealed},{flag},{last_step},10\n".encode())


def _session(stage: str, mailbox: str | None = ADDRESS) -> Session:
    admin = None if mailbox else "alice"
    return Session(sessions.new_id(), admin, mailbox, stage, reauthenticated=True)


def _attempt(guard: FakeGuard, login: str = ADDRESS) -> signin.Attempt:
    return signin.admit(guard, "192.0.2.7", login)


def _sign_in(containers: FakeContainers, *, required: bool = False) -> Session:
    guard = FakeGuard()
    return selfservice.password(containers, guard, _attempt(guard), PASSWORD, required)


# --- the password step -----------------------------------------------------------------------


def test_a_confirmed_factor_makes_the_code_due() -> None:
    containers = FakeContainers(by_marker=[MAILBOX_ROW, _totp_row(confirmed=True), CREATED])
    session = _sign_in(containers)
    assert (session.mailbox, session.admin, session.stage) == (ADDRESS, None, sessions.PASSWORD)
    (created,) = containers.sent("INSERT INTO web_sessions")
    assert "INSERT INTO web_sessions (id_hash, mailbox, stage, source)" in created.stdin
    assert created.variables()["owner"] == ADDRESS
    assert created.variables()["stage"] == sessions.PASSWORD


def test_without_a_factor_the_session_is_full_where_mfa_is_optional() -> None:
    containers = FakeContainers(by_marker=[MAILBOX_ROW, NO_FACTOR, CREATED])
    assert _sign_in(containers).stage == sessions.FULL


def test_with_mfa_required_a_user_without_a_factor_is_sent_to_enrolment_first() -> None:
    for row in (NO_FACTOR, _totp_row(confirmed=False)):
        containers = FakeContainers(by_marker=[MAILBOX_ROW, row, CREATED])
        session = _sign_in(containers, required=True)
        assert session.stage == sessions.ENROL
        # ... and no page takes it before the enrolment.
        with pytest.raises(signin.StageRefused):
            selfservice.overview(containers, session)
        with pytest.raises(signin.StageRefused):
            selfservice.add_app_password(containers, session, "phone")


def test_an_inactive_or_unknown_mailbox_costs_the_same_hash_and_gets_the_same_line() -> None:
    guard = FakeGuard()
    lines, timings = [], []
    for containers, typed in (
        (FakeContainers(by_marker=[MAILBOX_ROW]), "Wrong password 42!"),
        (FakeContainers(), PASSWORD),  # inactive (the query's `AND active`) or unknown
        (FakeContainers(), PASSWORD),
        (FakeContainers(by_marker=[MAILBOX_ROW]), "Wrong password 42!"),
    ):
        started = time.perf_counter()
        with pytest.raises(signin.SignInRefused) as refused:
            selfservice.password(containers, guard, _attempt(guard), typed, False)
        timings.append(time.perf_counter() - started)
        lines.append(refused.value.message)
        assert not containers.sent("INSERT INTO web_sessions")
    assert set(lines) == {selfservice.WRONG_PASSWORD}
    known, unknown = min(timings[0], timings[3]), min(timings[1], timings[2])
    assert unknown > 0.5 * known, timings
    assert [success for _, _, success in guard.reported] == [False] * 4


@pytest.mark.parametrize("login", ["", "bob", "bob@", "a'b@example.test; DROP", "x" * 300])
def test_a_login_that_cannot_be_an_address_asks_no_database_and_gets_the_same_line(
    login: str,
) -> None:
    guard = FakeGuard()
    containers = FakeContainers()
    with pytest.raises(signin.SignInRefused, match=re.escape(selfservice.WRONG_PASSWORD)):
        selfservice.password(containers, guard, _attempt(guard, login), PASSWORD, False)
    assert containers.calls == []
    assert [success for _, _, success in guard.reported] == [False]


def test_the_sign_in_reads_only_an_active_mailbox_and_the_address_is_a_variable() -> None:
    containers = FakeContainers(by_marker=[MAILBOX_ROW, NO_FACTOR, CREATED])
    guard = FakeGuard()
    selfservice.password(containers, guard, _attempt(guard, "Bob@Example.test"), PASSWORD, False)
    read = containers.calls[0]
    assert "WHERE address = :'address' AND active" in read.stdin
    assert read.variables()["address"] == ADDRESS
    assert PASSWORD not in read.stdin and PASSWORD not in " ".join(read.argv)
    # an inactive mailbox's session could not be made either
    (created,) = containers.sent("INSERT INTO web_sessions")
    assert "WHERE address = :'owner' AND active" in created.stdin


def test_a_banned_address_is_refused_before_any_password_is_checked() -> None:
    guard = FakeGuard(verdict=Verdict(refused="banned"))
    containers = FakeContainers(by_marker=[MAILBOX_ROW])
    with pytest.raises(signin.Banned):
        selfservice.password(containers, guard, _attempt(guard), PASSWORD, False)
    assert containers.calls == [] and guard.reported == []


def test_the_bans_service_sees_these_sign_ins_as_protocol_account() -> None:
    client = BansClient("http://bans:12350/", "k", protocol=selfservice.PROTOCOL)
    sent: list[dict[str, object]] = []
    object.__setattr__(client, "_ask", lambda command, body: sent.append(body))
    client.allow("192.0.2.7", ADDRESS)
    client.report("192.0.2.7", ADDRESS, "x", success=False)
    assert [body["protocol"] for body in sent] == ["account", "account"]
    assert BansClient("http://bans:12350/", "k").protocol == "admin"  # the admins' own


# --- the code step ---------------------------------------------------------------------------


def test_a_right_code_makes_the_session_full_under_a_new_id() -> None:
    guard = FakeGuard()
    containers = FakeContainers(
        by_marker=[_totp_row(confirmed=True), ("UPDATE mfa_totp SET last_step", b"accepted,1\n"),
                   ADVANCED]
    )  # fmt: skip
    before = _session(sessions.PASSWORD)
    code = totp.code_at(SECRET, NOW)
    full = selfservice.second_factor(containers, guard, _attempt(guard), KEY, before, code, NOW)
    assert full.full and full.id != before.id and full.mailbox == ADDRESS
    assert guard.reported == [("192.0.2.7", ADDRESS, True)]


def test_a_wrong_or_used_code_is_refused_and_counted() -> None:
    step = int(NOW // 30)
    wrong = f"{(int(totp.code_at(SECRET, NOW)) + 1) % 10**6:06d}"
    for containers, code in (
        (FakeContainers(by_marker=[_totp_row(confirmed=True)]), wrong),
        # used: the step is not newer than last_step
        (FakeContainers(by_marker=[_totp_row(True, last_step=step + 1)]), totp.code_at(SECRET, NOW)),
        # a parallel use won: the UPDATE found no row
        (FakeContainers(by_marker=[_totp_row(confirmed=True)]), totp.code_at(SECRET, NOW)),
    ):  # fmt: skip
        guard = FakeGuard()
        with pytest.raises(signin.SignInRefused, match="wrong, or it was used"):
            selfservice.second_factor(
                containers, guard, _attempt(guard), KEY, _session(sessions.PASSWORD), code, NOW
            )
        assert guard.reported == [("192.0.2.7", ADDRESS, False)]
        assert not containers.sent("UPDATE web_sessions SET id_hash")


def test_no_step_is_skipped_and_an_administrators_session_is_not_a_users() -> None:
    guard = FakeGuard()
    for session in (_session(sessions.FULL), _session(sessions.ENROL), _session("password", None)):
        with pytest.raises(signin.StageRefused):
            selfservice.second_factor(
                FakeContainers(), guard, _attempt(guard), KEY, session, "123456", NOW
            )
    with pytest.raises(signin.StageRefused):
        selfservice.overview(FakeContainers(), _session(sessions.PASSWORD))
    with pytest.raises(signin.StageRefused):
        selfservice.overview(FakeContainers(), _session(sessions.FULL, None))


def test_a_users_lookup_asks_for_a_mailbox_session_of_an_active_mailbox() -> None:
    containers = FakeContainers(by_marker=[("UPDATE web_sessions SET last_seen", b"")])
    assert sessions.lookup(containers, sessions.new_id(), "mailbox") is None
    (call,) = containers.calls
    assert call.variables()["kind"] == "mailbox"
    where = " ".join(call.stdin.split())
    assert "mailbox IN (SELECT address FROM mailboxes WHERE active)" in where
    assert "(:'kind' = 'mailbox' AND mailbox IS NOT NULL)" in where
    assert sessions.lookup(FakeContainers(), sessions.new_id(), "root") is None


# --- enrolment and turning it off -----------------------------------------------------------


def test_an_enrolment_session_becomes_full_when_the_first_code_confirms() -> None:
    sealed = sealing.seal(KEY, SECRET, f"mailbox:{ADDRESS}")
    containers = FakeContainers(
        by_marker=[
            ("SELECT 'totp', t.id", f"account,1\ntotp,7,{sealed},f,0,0\n".encode()),
            ("WITH confirmed AS", b"confirmed,1\ncodes,10\n"),
            ADVANCED,
        ]
    )
    before = _session(sessions.ENROL)
    code = totp.code_at(SECRET, NOW)
    full, codes = selfservice.confirm_enrolment(containers, KEY, before, code, NOW)
    assert full.full and full.id != before.id and len(codes.codes) == 10


def test_a_full_session_with_a_factor_in_force_cannot_enrol_another() -> None:
    containers = FakeContainers(by_marker=[_totp_row(confirmed=True)])
    with pytest.raises(signin.SignInRefused, match="in force already"):
        selfservice.enrolment(containers, KEY, _session(sessions.FULL), "mail.example.test")
    assert not containers.sent("INSERT INTO mfa_totp")


def test_turning_the_factor_off_needs_a_current_code() -> None:
    guard = FakeGuard()
    containers = FakeContainers(by_marker=[_totp_row(confirmed=True)])
    with pytest.raises(signin.SignInRefused, match="wrong"):
        selfservice.disable_second_factor(
            containers, guard, _attempt(guard), KEY, _session(sessions.FULL), "000000", NOW, False
        )
    assert not containers.sent("DELETE FROM mfa_totp")
    assert guard.reported == [("192.0.2.7", ADDRESS, False)]


def test_turning_the_factor_off_with_a_code_removes_only_the_own_one() -> None:
    guard = FakeGuard()
    containers = FakeContainers(
        by_marker=[
            _totp_row(confirmed=True),
            ("UPDATE mfa_totp SET last_step", b"accepted,1\n"),
            ("DELETE FROM mfa_totp", b"account,1\nremoved,t\n"),
        ]
    )
    code = totp.code_at(SECRET, NOW)
    selfservice.disable_second_factor(
        containers, guard, _attempt(guard), KEY, _session(sessions.FULL), code, NOW, False
    )
    (deleted,) = containers.sent("DELETE FROM mfa_totp")
    assert deleted.variables()["owner"] == ADDRESS and deleted.variables()["kind"] == "mailbox"


def test_where_mfa_is_required_the_factor_cannot_be_turned_off() -> None:
    guard = FakeGuard()
    containers = FakeContainers(by_marker=[_totp_row(confirmed=True)])
    with pytest.raises(signin.SignInRefused, match="required"):
        selfservice.disable_second_factor(
            containers, guard, _attempt(guard), KEY, _session(sessions.FULL), "123456", NOW, True
        )
    assert containers.calls == []


# --- the password and app passwords ----------------------------------------------------------


def _change(containers: FakeContainers, current: str, new: str, again: str) -> FakeGuard:
    guard = FakeGuard()
    selfservice.change_password(
        containers, guard, _attempt(guard), _session(sessions.FULL), current, new, again
    )
    return guard


def test_a_password_change_needs_the_current_password_and_the_new_one_twice() -> None:
    new = "Another horse 42 battery"
    for current, again, line in (
        ("Wrong password 42!", new, "current password is wrong"),
        (PASSWORD, new + "x", "repetition differ"),
    ):
        containers = FakeContainers(by_marker=[MAILBOX_ROW])
        with pytest.raises((signin.SignInRefused, UsageError), match=line):
            _change(containers, current, new, again)
        assert not containers.sent("UPDATE mailboxes")


def test_a_new_password_meets_the_clis_strength_rule() -> None:
    containers = FakeContainers(by_marker=[MAILBOX_ROW])
    with pytest.raises(UsageError, match="too short"):
        _change(containers, PASSWORD, "short", "short")
    assert not containers.sent("UPDATE mailboxes")


QUEUED = ("INSERT INTO host_jobs", b"7\n")


def test_a_password_change_writes_a_new_hash_of_the_sessions_own_mailbox() -> None:
    new = "Another horse 42 battery"
    containers = FakeContainers(
        by_marker=[MAILBOX_ROW, ("UPDATE mailboxes", b"x\n"), QUEUED, CREATED]
    )
    guard = _change(containers, PASSWORD, new, new)
    (update,) = containers.sent("UPDATE mailboxes")
    assert update.variables()["address"] == ADDRESS
    stored = _set(update)["password_hash"]
    assert passwords.verify_password(stored, new) and new not in update.stdin
    assert guard.reported == [("192.0.2.7", ADDRESS, True)]


def test_a_password_change_ends_the_old_sessions_and_goes_on_in_a_new_one() -> None:
    # Someone signed in with the old password (web: migration 0014's trigger; IMAP: the
    # queued kick) is out; the user who changed it continues under a new session id.
    new = "Another horse 42 battery"
    containers = FakeContainers(
        by_marker=[MAILBOX_ROW, ("UPDATE mailboxes", b"x\n"), QUEUED, CREATED]
    )
    old = _session(sessions.FULL)
    renewed = selfservice.change_password(
        containers, FakeGuard(), _attempt(FakeGuard()), old, PASSWORD, new, new
    )
    (kick,) = containers.sent("INSERT INTO host_jobs")
    assert (kick.variables()["kind"], kick.variables()["target"]) == ("sessions.kick", ADDRESS)
    assert (renewed.mailbox, renewed.stage) == (ADDRESS, sessions.FULL) and renewed.id != old.id
    trigger = (migrations_dir() / "0014_password_ends_sessions.sql").read_text()
    assert "DELETE FROM web_sessions WHERE mailbox = NEW.address" in trigger
    assert "AFTER UPDATE OF password ON mailboxes" in trigger


def test_an_app_password_is_removed_only_from_the_sessions_own_mailbox() -> None:
    # The attack: another mailbox's app password named in the form. The statement is
    # scoped by the session's address; the form has no say in it.
    containers = FakeContainers(by_marker=[("WITH gone AS", f"mailbox,{ADDRESS}\n".encode())])
    with pytest.raises(UsageError, match="no app password named victim-phone"):
        selfservice.remove_app_password(containers, _session(sessions.FULL), "victim-phone")
    (delete,) = containers.sent("WITH gone AS")
    assert delete.variables()["address"] == ADDRESS
    assert not containers.sent("host_jobs")


def test_removing_an_app_password_queues_the_kick_of_its_sessions() -> None:
    containers = FakeContainers(
        by_marker=[
            ("WITH gone AS", f"revoked,phone\nmailbox,{ADDRESS}\n".encode()),
            ("host_jobs", b"12\n"),
        ]
    )
    selfservice.remove_app_password(containers, _session(sessions.FULL), "phone")
    (queued,) = containers.sent("host_jobs")
    assert queued.variables()["kind"] == "sessions.kick"
    assert queued.variables()["target"] == ADDRESS
    assert all(call.service == "db" for call in containers.calls)  # no doveadm from here


def test_the_audit_log_names_the_user_and_the_clients_address() -> None:
    actor = selfservice.actor(_session(sessions.FULL), "192.0.2.7")
    assert (actor.name, actor.source) == (f"mailbox:{ADDRESS}", "192.0.2.7")


def test_the_self_service_grants_are_only_what_its_pages_need() -> None:
    sql = (migrations_dir() / "0010_self_service.sql").read_text()
    statements = [" ".join(s.split()) for s in re.sub(r"--[^\n]*", "", sql).split(";")]
    assert [statement for statement in statements if statement] == [
        "GRANT SELECT ON app_passwords TO mailstack_admin",
        "GRANT INSERT (address, name, lookup_key, password) ON app_passwords TO mailstack_admin",
        "GRANT DELETE ON app_passwords TO mailstack_admin",
        "GRANT DELETE ON mfa_totp TO mailstack_admin",
    ]
