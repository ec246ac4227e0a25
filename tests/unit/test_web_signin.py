"""The admin service's web sign-in (mailstack.api.signin) and its sessions
(mailstack.identity.sessions), without a web framework: what each step demands, what it
refuses, what reaches the database and the bans service."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field

import pytest

from mailstack.accounts import passwords
from mailstack.adapters.bansclient import ALLOWED, BansClient, Verdict
from mailstack.api import signin
from mailstack.api.operations import ApiError
from mailstack.identity import principal, sealing, sessions, totp
from mailstack.identity.sessions import Session
from tests.unit.fakes import Call, FakeContainers

KEY = bytes(range(32))
SECRET = totp.new_secret()
NOW = 1_800_000_000.0
PASSWORD = "Correct horse 42 battery"  # a test value
HASH = passwords.hash_password(PASSWORD)
ADMIN_ROW = ("SELECT 'admin', password", f'admin,"{HASH}"\n'.encode())  # psql --csv quotes it
CREATED = ("INSERT INTO web_sessions", b"created\n")
ADVANCED = ("UPDATE web_sessions SET id_hash", b"advanced\n")


@dataclass
class FakeGuard:
    """The bans service: answers `allow` with `verdict`, records every call."""

    verdict: Verdict = ALLOWED
    asked: list[tuple[str, str]] = field(default_factory=list)
    reported: list[tuple[str, str, bool]] = field(default_factory=list)

    def allow(self, client: str, login: str) -> Verdict:
        self.asked.append((client, login))
        return self.verdict

    def report(self, client: str, login: str, secret: str, *, success: bool) -> None:
        self.reported.append((client, login, success))


def _set(call: Call) -> dict[str, str]:
    r"""The values a call sets with `\set name 'value'` on stdin."""
    return dict(re.findall(r"^\\set (\w+) '([^']*)'$", call.stdin, re.MULTILINE))


def _totp_row(confirmed: bool, last_step: int = 0) -> tuple[str, bytes]:
    sealed = sealing.seal(KEY, SECRET, "admin:alice")
    flag = "t" if confirmed else "f"
    return ("SELECT 'totp', t.id", f"account,1\ntotp,7,{sealed},{flag},{last_step},10\n".encode())


def _session(stage: str) -> Session:
    return Session(sessions.new_id(), "alice", None, stage, reauthenticated=True)


def _attempt(guard: FakeGuard, login: str = "alice") -> signin.Attempt:
    return signin.admit(guard, "192.0.2.7", login)


# --- sessions --------------------------------------------------------------------------------


def test_a_session_id_is_256_random_bits_and_only_its_sha256_reaches_the_database() -> None:
    containers = FakeContainers(by_marker=[CREATED])
    session = sessions.create(containers, "alice", sessions.PASSWORD, "192.0.2.7")
    assert len(session.id) == 43 and sessions.well_formed(session.id)  # token_urlsafe(32)
    assert session.id != sessions.create(containers, "alice", sessions.PASSWORD, "x").id
    (call, _) = containers.calls
    assert session.id not in call.stdin and session.id not in " ".join(call.argv)
    assert _set(call)["id_hash"] == hashlib.sha256(session.id.encode()).hexdigest()
    assert "id_hash" not in call.variables()  # on stdin, never in argv


def test_an_inactive_or_unknown_administrator_gets_no_session() -> None:
    with pytest.raises(Exception, match="does not exist or is inactive"):
        sessions.create(FakeContainers(), "alice", sessions.PASSWORD, "192.0.2.7")


def test_the_timeouts_are_enforced_by_the_lookups_own_where() -> None:
    assert (sessions.IDLE_TIMEOUT_SECONDS, sessions.ABSOLUTE_TIMEOUT_SECONDS) == (900, 28800)
    assert sessions.REAUTH_WINDOW_SECONDS == 300
    containers = FakeContainers(by_marker=[("UPDATE web_sessions SET last_seen", b"")])
    assert sessions.lookup(containers, sessions.new_id()) is None  # the database found none
    (call,) = containers.calls
    assert call.variables() == {
        "ON_ERROR_STOP": "1",
        "idle_seconds": "900",
        "absolute_seconds": "28800",
        "step_seconds": "600",
        "reauth_seconds": "300",
        "kind": "admin",  # an administrator's page finds only an administrator's session
    }
    where = " ".join(call.stdin.split())
    assert "last_seen >= now() - make_interval(secs => CAST(:'idle_seconds' AS integer))" in where
    assert "created >= now() - make_interval(secs => CAST(:'absolute_seconds' AS integer))" in where
    assert "admin IN (SELECT name FROM admins WHERE active)" in where  # deactivated: gone


def test_a_lookup_answers_the_stage_and_whether_the_password_is_recent() -> None:
    containers = FakeContainers(
        by_marker=[("UPDATE web_sessions SET last_seen", b"session,alice,,full,f\n")]
    )
    found = sessions.lookup(containers, sessions.new_id())
    assert found is not None
    assert (found.admin, found.stage, found.full, found.reauthenticated) == (
        "alice", "full", True, False,
    )  # fmt: skip


@pytest.mark.parametrize("cookie", [None, "", "x" * 43 + "!", "short", "é" * 43, "a" * 44])
def test_a_malformed_cookie_never_reaches_the_database(cookie: str | None) -> None:
    containers = FakeContainers()
    assert sessions.lookup(containers, cookie) is None
    assert sessions.end(containers, cookie) is False
    assert containers.calls == []


def test_csrf_token_belongs_to_its_session_only() -> None:
    mine, other = sessions.new_id(), sessions.new_id()
    token = sessions.csrf_token(mine)
    assert sessions.csrf_valid(mine, token)
    assert not sessions.csrf_valid(other, token)  # another session's token
    assert not sessions.csrf_valid(mine, None)  # a form without it
    assert not sessions.csrf_valid(mine, "")
    assert not sessions.csrf_valid(mine, token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert not sessions.csrf_valid(None, token)  # no session cookie at all
    assert not sessions.csrf_valid(mine, token * 10)  # bounded before comparing
    assert token not in mine and mine not in token  # the token does not reveal the id


def test_advancing_a_session_gives_it_a_new_id_and_only_from_the_stage_seen() -> None:
    containers = FakeContainers(by_marker=[ADVANCED])
    before = _session(sessions.PASSWORD)
    after = sessions.advance(containers, before, sessions.FULL)
    assert after.id != before.id and after.full
    (call,) = containers.calls
    assert call.variables() == {"ON_ERROR_STOP": "1", "stage": "full", "from_stage": "password"}
    assert _set(call) == {
        "id_hash": sessions.id_hash(before.id),
        "new_hash": sessions.id_hash(after.id),
    }
    with pytest.raises(Exception, match="changed meanwhile"):  # a parallel advance won
        sessions.advance(FakeContainers(), before, sessions.FULL)
    with pytest.raises(ValueError):
        sessions.advance(containers, after, sessions.PASSWORD)


# --- the password step -----------------------------------------------------------------------


def test_the_right_password_with_a_confirmed_factor_leads_to_the_code_step() -> None:
    guard = FakeGuard()
    containers = FakeContainers(by_marker=[ADMIN_ROW, _totp_row(confirmed=True), CREATED])
    session = signin.password(containers, guard, _attempt(guard), PASSWORD)
    assert (session.admin, session.stage, session.full) == ("alice", sessions.PASSWORD, False)
    assert guard.asked == [("192.0.2.7", "alice")]
    assert guard.reported == [("192.0.2.7", "alice", True)]


def test_the_right_password_without_a_confirmed_factor_leads_to_enrolment() -> None:
    guard = FakeGuard()
    for row in (_totp_row(confirmed=False), ("SELECT 'totp', t.id", b"account,1\n")):
        containers = FakeContainers(by_marker=[ADMIN_ROW, row, CREATED])
        assert signin.password(containers, guard, _attempt(guard), PASSWORD).stage == "enrol"


def test_an_unknown_name_costs_the_same_hash_and_gets_the_same_line_as_a_wrong_password() -> None:
    guard = FakeGuard()
    timings, lines = [], []
    for containers, typed in (
        (FakeContainers(by_marker=[ADMIN_ROW]), "wrong password 42!"),
        (FakeContainers(), PASSWORD),  # no such administrator
        (FakeContainers(), PASSWORD),
        (FakeContainers(by_marker=[ADMIN_ROW]), "wrong password 42!"),
    ):
        started = time.perf_counter()
        with pytest.raises(signin.SignInRefused) as refused:
            signin.password(containers, guard, _attempt(guard), typed)
        timings.append(time.perf_counter() - started)
        lines.append(refused.value.message)
        assert not containers.sent("INSERT INTO web_sessions")
    assert set(lines) == {signin.WRONG_PASSWORD}
    # The stand-in hash has the real parameters, so it takes the real Argon2id's time.
    stand_in = signin.STAND_IN_HASH  # the value under test
    assert f"m={passwords.MEMORY_KIB},t={passwords.TIME_COST},p={passwords.PARALLELISM}$" in (
        stand_in
    )
    known, unknown = min(timings[0], timings[3]), min(timings[1], timings[2])
    assert unknown > 0.5 * known, timings
    assert [success for _, _, success in guard.reported] == [False] * 4


def test_a_name_that_cannot_be_one_asks_no_database_and_costs_the_hash() -> None:
    guard = FakeGuard()
    containers = FakeContainers()
    with pytest.raises(signin.SignInRefused, match="wrong"):
        signin.password(containers, guard, _attempt(guard, "'; DROP TABLE admins; --"), PASSWORD)
    assert containers.calls == []


def test_a_banned_address_is_refused_before_any_password_check() -> None:
    guard = FakeGuard(Verdict("Too many failed logins from your address; try again later"))
    containers = FakeContainers(by_marker=[ADMIN_ROW, _totp_row(True), CREATED])
    with pytest.raises(signin.Banned, match="Too many failed logins"):
        signin.password(containers, guard, _attempt(guard), PASSWORD)
    assert containers.calls == []  # not even the administrator was looked up
    assert guard.reported == []


def test_the_bans_services_delay_is_handed_to_the_caller() -> None:
    guard = FakeGuard(Verdict(delay=4))
    assert _attempt(guard).verdict.delay == 4


def test_a_sensitive_action_needs_the_password_typed_within_five_minutes() -> None:
    stale = Session(sessions.new_id(), "alice", None, sessions.FULL, reauthenticated=False)
    with pytest.raises(signin.ReauthNeeded):
        signin.require_recent_password(stale)
    signin.require_recent_password(_session(sessions.FULL))  # just signed in: fine
    guard = FakeGuard()
    with pytest.raises(signin.SignInRefused):
        signin.reauthenticate(
            FakeContainers(by_marker=[ADMIN_ROW]), guard, _attempt(guard), stale, "wrong one 42!"
        )
    containers = FakeContainers(by_marker=[ADMIN_ROW, ("SET reauth_at", b"reauthenticated\n")])
    fresh = signin.reauthenticate(containers, guard, _attempt(guard), stale, PASSWORD)
    signin.require_recent_password(fresh)
    assert [success for _, _, success in guard.reported] == [False, True]


# --- the code step ---------------------------------------------------------------------------


def _code_containers(used: bool) -> FakeContainers:
    answer = b"" if used else b"accepted,1\n"
    return FakeContainers(
        by_marker=[
            _totp_row(confirmed=True),
            ("UPDATE mfa_totp SET last_step", answer),
            ADVANCED,
        ]
    )


def test_a_right_code_makes_the_session_full_under_a_new_id() -> None:
    guard = FakeGuard()
    session = _session(sessions.PASSWORD)
    code = totp.code_at(SECRET, NOW)
    full = signin.second_factor(
        _code_containers(used=False), guard, _attempt(guard), KEY, session, code, NOW
    )
    assert full.full and full.id != session.id
    assert guard.reported == [("192.0.2.7", "alice", True)]


def test_a_used_code_is_refused_and_reported_as_a_failure() -> None:
    guard = FakeGuard()
    containers = _code_containers(used=True)  # the replay guard's UPDATE matched no row
    with pytest.raises(signin.SignInRefused, match="used already"):
        signin.second_factor(
            containers, guard, _attempt(guard), KEY, _session(sessions.PASSWORD),
            totp.code_at(SECRET, NOW), NOW,
        )  # fmt: skip
    assert not containers.sent("UPDATE web_sessions SET id_hash")
    assert guard.reported == [("192.0.2.7", "alice", False)]


def test_a_wrong_or_malformed_code_is_refused_and_counted() -> None:
    guard = FakeGuard()
    wrong = str((int(totp.code_at(SECRET, NOW)) + 500_000) % 1_000_000).zfill(6)
    for code in (wrong, "12ab56"):
        with pytest.raises(signin.SignInRefused):
            signin.second_factor(
                _code_containers(used=False), guard, _attempt(guard), KEY,
                _session(sessions.PASSWORD), code, NOW,
            )  # fmt: skip
    assert [success for _, _, success in guard.reported] == [False, False]


def test_a_banned_address_gets_no_code_checked() -> None:
    guard = FakeGuard(Verdict("banned"))
    containers = _code_containers(used=False)
    with pytest.raises(signin.Banned):
        signin.second_factor(
            containers, guard, _attempt(guard), KEY, _session(sessions.PASSWORD),
            totp.code_at(SECRET, NOW), NOW,
        )  # fmt: skip
    assert containers.calls == []


# --- no step is skipped ----------------------------------------------------------------------


def test_a_session_that_passed_only_the_password_reaches_no_page() -> None:
    containers = FakeContainers()
    for stage in (sessions.PASSWORD, sessions.ENROL):
        with pytest.raises(signin.StageRefused):
            signin.acting(containers, _session(stage), "192.0.2.7")
    with pytest.raises(signin.StageRefused):
        signin.require_stage(None, sessions.FULL)
    assert containers.calls == []


def test_the_code_step_and_the_enrolment_take_only_their_own_stage() -> None:
    guard = FakeGuard()
    containers = FakeContainers()
    for stage in (sessions.ENROL, sessions.FULL):
        with pytest.raises(signin.StageRefused):
            signin.second_factor(
                containers, guard, _attempt(guard), KEY, _session(stage), "123456", NOW
            )
    for stage in (sessions.PASSWORD, sessions.FULL):
        with pytest.raises(signin.StageRefused):
            signin.enrolment(containers, KEY, _session(stage), "mail.example.test")
        with pytest.raises(signin.StageRefused):
            signin.confirm_enrolment(containers, KEY, _session(stage), "123456", NOW)
    assert containers.calls == []


# --- enrolment -------------------------------------------------------------------------------


def test_the_enrolment_shows_the_waiting_secret_again_instead_of_a_new_one() -> None:
    containers = FakeContainers(by_marker=[_totp_row(confirmed=False)])
    shown = signin.enrolment(containers, KEY, _session(sessions.ENROL), "mail.example.test")
    assert shown.secret == SECRET
    assert shown.uri.startswith("otpauth://totp/mail.example.test:alice?secret=")
    assert not containers.sent("INSERT INTO mfa_totp")


def test_the_first_code_confirms_the_enrolment_and_gives_the_recovery_codes_once() -> None:
    containers = FakeContainers(
        by_marker=[
            _totp_row(confirmed=False),
            ("UPDATE mfa_totp SET confirmed", b"confirmed,1\ncodes,10\n"),
            ADVANCED,
        ]
    )
    full, codes = signin.confirm_enrolment(
        containers, KEY, _session(sessions.ENROL), totp.code_at(SECRET, NOW), NOW
    )
    assert full.full and len(codes.codes) == 10


def test_a_wrong_first_code_is_one_line_and_the_session_stays_at_enrolment() -> None:
    containers = FakeContainers(by_marker=[_totp_row(confirmed=False), ADVANCED])
    wrong = str((int(totp.code_at(SECRET, NOW)) + 1) % 1_000_000).zfill(6)
    with pytest.raises(signin.SignInRefused, match="CODE: the code does not match"):
        signin.confirm_enrolment(containers, KEY, _session(sessions.ENROL), wrong, NOW)
    assert not containers.sent("UPDATE web_sessions")


# --- what a full session does ----------------------------------------------------------------


def test_a_full_session_acts_as_its_administrator_from_the_clients_address() -> None:
    containers = FakeContainers(by_marker=[("FROM admins a LEFT JOIN", b"admin,\n")])
    who, actor = signin.acting(containers, _session(sessions.FULL), "198.51.100.4")
    assert (who.actor, who.domains) == ("admin:alice", None)
    assert (actor.name, actor.source) == ("admin:alice", "198.51.100.4")


def test_a_domain_administrator_sees_and_adds_only_in_its_domains() -> None:
    who = principal.Principal("admin:dom", principal.DOMAIN_ADMIN, frozenset({"ours.test"}))
    containers = FakeContainers(
        by_marker=[
            ("FROM mailboxes", b"a@ours.test,ours.test,0,t,2026-01-01T00:00:00Z\n"
                               b"b@theirs.test,theirs.test,0,t,2026-01-01T00:00:00Z\n"),
        ]
    )  # fmt: skip
    assert [m.address for m in signin.visible_mailboxes(containers, who)] == ["a@ours.test"]
    with pytest.raises(ApiError, match=r"theirs\.test is not a domain you manage") as refused:
        signin.add_mailbox(containers, who, "New@Theirs.Test", PASSWORD, None, "1G")
    assert refused.value.status == 403
    assert not containers.sent("INSERT INTO mailboxes")


# --- the bans service's client ---------------------------------------------------------------


def test_the_bans_service_sees_a_16_bit_salted_hash_never_the_password() -> None:
    client = BansClient("http://bans:12350/", "k" * 32)
    first = client.secret_hash("alice", PASSWORD)
    assert re.fullmatch(r"[0-9a-f]{4}", first)
    assert first == client.secret_hash("alice", PASSWORD)  # one stale password counts once
    assert BansClient("http://bans:12350/", "other" * 8).secret_hash("alice", PASSWORD) != first


def test_an_unreachable_bans_service_fails_open_unless_told_to_fail_closed() -> None:
    # Nothing listens on port 9 of the loopback: refused at once.
    assert BansClient("http://127.0.0.1:9/", "k").allow("192.0.2.7", "alice") == ALLOWED
    closed = BansClient("http://127.0.0.1:9/", "k", fail_closed=True).allow("192.0.2.7", "a")
    assert closed.refused is not None
