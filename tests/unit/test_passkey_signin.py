"""Passkeys in the web sign-in (api.passkeysignin): the ceremony held by its session and
answered once, the code step passed by a passkey, failures counted by the bans service, and
registration only after a recent password."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

import pytest

from mailstack.adapters.bansclient import ALLOWED, Verdict
from mailstack.api import passkeysignin, signin
from mailstack.api.signin import Attempt, SignInRefused
from mailstack.errors import MailstackError, NotFound
from mailstack.identity import sessions
from mailstack.identity.sessions import Session
from tests.unit.fakes import Call, FakeContainers
from tests.unit.test_passkeys import HOSTNAME, SoftKey, Table

AT_CODE = Session("s" * 43, "alice", None, sessions.PASSWORD, reauthenticated=True)
SIGNED_IN = Session("s" * 43, "alice", None, sessions.FULL, reauthenticated=True)
STALE = Session("s" * 43, "alice", None, sessions.FULL, reauthenticated=False)


@dataclass
class Guard:
    reports: list[tuple[str, bool]] = field(default_factory=list)

    def allow(self, client: str, login: str) -> Verdict:
        return ALLOWED

    def report(self, client: str, login: str, secret: str, *, success: bool) -> None:
        self.reports.append((login, success))


@dataclass
class Held:
    """web_sessions.passkey_state of one session."""

    state: str | None = None

    def hold(self, call: Call) -> bytes:
        self.state = call.variables()["state"]
        return b"held\n"

    def take(self, call: Call) -> bytes:
        state, self.state = self.state, None
        if state is None:
            return b""
        out = io.StringIO()
        csv.writer(out).writerow(["taken", state])
        return out.getvalue().encode()


def stack() -> tuple[FakeContainers, Table, Held]:
    table, held = Table(), Held()
    fake = FakeContainers(
        by_marker=[
            ("SET passkey_state = :'state'", held.hold),
            ("SET passkey_state = NULL", held.take),
            ("stage = :'stage', last_seen", b"advanced\n"),
            ("passkeys", table.answer),
        ]
    )
    return fake, table, held


def attempt() -> Attempt:
    return Attempt("alice", "192.0.2.7", ALLOWED)


def with_passkey(key: SoftKey) -> tuple[FakeContainers, Table, Held]:
    fake, table, held = stack()
    ceremony = passkeysignin.begin_registration(fake, SIGNED_IN, HOSTNAME)
    passkeysignin.finish_registration(
        fake, SIGNED_IN, HOSTNAME, "laptop", key.create(ceremony.options)
    )
    return fake, table, held


def test_a_passkey_passes_the_code_step_and_the_session_becomes_full() -> None:
    key = SoftKey()
    fake, _, held = with_passkey(key)
    ceremony = passkeysignin.offer(fake, AT_CODE, HOSTNAME)
    assert held.state == ceremony.state
    guard = Guard()
    full = passkeysignin.prove(fake, guard, attempt(), AT_CODE, HOSTNAME, key.get(ceremony.options))
    assert full.stage == sessions.FULL and full.id != AT_CODE.id
    assert guard.reports == [("alice", True)]
    assert held.state is None  # taken: the challenge is answered once


def test_an_answer_replayed_after_its_ceremony_is_refused() -> None:
    key = SoftKey()
    fake, _, _ = with_passkey(key)
    ceremony = passkeysignin.offer(fake, AT_CODE, HOSTNAME)
    answer = key.get(ceremony.options)
    passkeysignin.prove(fake, Guard(), attempt(), AT_CODE, HOSTNAME, answer)
    guard = Guard()
    with pytest.raises(SignInRefused, match="expired or was answered already"):
        passkeysignin.prove(fake, guard, attempt(), AT_CODE, HOSTNAME, answer)


def test_a_refused_passkey_is_counted_by_the_bans_service() -> None:
    fake, _, _ = with_passkey(SoftKey())
    ceremony = passkeysignin.offer(fake, AT_CODE, HOSTNAME)
    guard = Guard()
    with pytest.raises(SignInRefused, match="not accepted"):
        passkeysignin.prove(
            fake, guard, attempt(), AT_CODE, HOSTNAME, SoftKey().get(ceremony.options)
        )
    assert guard.reports == [("alice", False)]


def test_a_banned_address_is_refused_before_the_ceremony_is_taken() -> None:
    key = SoftKey()
    fake, _, held = with_passkey(key)
    ceremony = passkeysignin.offer(fake, AT_CODE, HOSTNAME)
    banned = Attempt("alice", "192.0.2.7", Verdict("banned"))
    with pytest.raises(signin.Banned):
        passkeysignin.prove(fake, Guard(), banned, AT_CODE, HOSTNAME, key.get(ceremony.options))
    assert held.state == ceremony.state


def test_no_step_is_skipped_with_a_passkey() -> None:
    fake, _, _ = with_passkey(SoftKey())
    with pytest.raises(signin.StageRefused):
        passkeysignin.offer(fake, SIGNED_IN, HOSTNAME)  # a full session has no code step
    enrolling = Session("s" * 43, "alice", None, sessions.ENROL, reauthenticated=True)
    with pytest.raises(signin.StageRefused):
        passkeysignin.prove(fake, Guard(), attempt(), enrolling, HOSTNAME, "{}")
    with pytest.raises(signin.StageRefused):
        passkeysignin.begin_registration(fake, AT_CODE, HOSTNAME)


def test_without_a_passkey_the_code_step_says_so() -> None:
    fake, _, _ = stack()
    with pytest.raises(NotFound, match="no passkey"):
        passkeysignin.offer(fake, AT_CODE, HOSTNAME)


def test_registering_needs_a_recent_password() -> None:
    fake, table, held = stack()
    with pytest.raises(signin.ReauthNeeded):
        passkeysignin.begin_registration(fake, STALE, HOSTNAME)
    assert held.state is None and table.rows == []


def test_a_registration_answer_without_its_ceremony_stores_nothing() -> None:
    fake, table, _ = stack()
    ceremony = passkeysignin.begin_registration(fake, SIGNED_IN, HOSTNAME)
    answer = SoftKey().create(ceremony.options)
    passkeysignin.finish_registration(fake, SIGNED_IN, HOSTNAME, "laptop", answer)
    with pytest.raises(MailstackError, match="expired or was answered already"):
        passkeysignin.finish_registration(fake, SIGNED_IN, HOSTNAME, "laptop-2", answer)
    assert [row["name"] for row in table.rows] == ["laptop"]


def test_the_ceremony_state_never_travels_as_sql() -> None:
    fake, _, _ = with_passkey(SoftKey())
    passkeysignin.offer(fake, AT_CODE, HOSTNAME)
    (hold,) = fake.sent("SET passkey_state = :'state'")[-1:]
    assert json.loads(hold.variables()["state"])["challenge"] not in hold.stdin
