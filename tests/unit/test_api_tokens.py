"""API tokens: the scope rule, the token's shape, what reaches psql (only the hash, on stdin),
refusals before the database, and the three ways a presented token is refused."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from mailstack.cli.main import app
from mailstack.errors import UsageError
from mailstack.identity import tokens
from mailstack.stack.stackdir import Stack
from tests.unit.fakes import FakeContainers

runner = CliRunner()
NOW = datetime.datetime(2026, 3, 14, 12, 0, tzinfo=datetime.UTC)
CREATED = b"creator,1\nname_taken,0\nadded,never\n"

HOSTILE_NAMES = [
    "x'; DROP TABLE api_tokens;--",
    "back\\slash",
    "50%_off",
    "a" * 65,
    "-leading-dash",
    "new\nline",
    "trailing\n",
    "",
    "fünf",
    "two words",
]


def stored(answer: bytes = CREATED) -> FakeContainers:
    return FakeContainers(by_marker=[("INSERT INTO api_tokens", answer)])


# --- the scope rule ----------------------------------------------------------------------------

# (a token's scope, the scope an operation needs): granted?
SCOPE_RULE = {
    ("read", "read"): True,
    ("read", "accounts"): False,
    ("read", "domains"): False,
    ("read", "admin"): False,
    ("accounts", "read"): True,
    ("accounts", "accounts"): True,
    ("accounts", "domains"): False,
    ("accounts", "admin"): False,
    ("domains", "read"): True,
    ("domains", "accounts"): False,
    ("domains", "domains"): True,
    ("domains", "admin"): False,
    ("admin", "read"): True,
    ("admin", "accounts"): True,
    ("admin", "domains"): True,
    ("admin", "admin"): True,
}


def test_the_scope_rule_table_covers_every_pair() -> None:
    assert set(SCOPE_RULE) == {(a, b) for a in tokens.SCOPES for b in tokens.SCOPES}


@pytest.mark.parametrize(("scope", "needed"), sorted(SCOPE_RULE))
def test_scope_rule(scope: str, needed: str) -> None:
    assert tokens.allows([scope], needed) is SCOPE_RULE[(scope, needed)]


def test_several_scopes_grant_what_any_of_them_grants() -> None:
    assert tokens.allows(["accounts", "domains"], "domains")
    assert tokens.allows(["accounts", "domains"], "accounts")
    assert not tokens.allows(["accounts", "domains"], "admin")


def test_no_scope_and_unknown_scopes_grant_nothing() -> None:
    for needed in tokens.SCOPES:
        assert not tokens.allows([], needed)
        assert not tokens.allows(["write", "ADMIN", "*"], needed)


def test_an_operation_needing_an_unknown_scope_is_a_bug_not_a_refusal() -> None:
    with pytest.raises(ValueError, match="not a scope"):
        tokens.allows(["admin"], "write")


# --- the token ---------------------------------------------------------------------------------


def test_generated_tokens_carry_the_prefix_and_256_random_bits() -> None:
    drawn = {tokens.generate_token() for _ in range(200)}
    assert len(drawn) == 200
    for token in drawn:
        assert token.startswith("msk_") and len(token) == 47
        assert tokens.TOKEN.fullmatch(token)
        secret = token.removeprefix("msk_")
        assert len(base64.urlsafe_b64decode(secret + "=")) == 32


def test_what_is_stored_is_the_sha256_of_the_whole_token() -> None:
    token = "msk_" + "A" * 43
    assert tokens.token_hash(token) == hashlib.sha256(token.encode()).hexdigest()


def test_a_new_token_reaches_the_database_only_as_its_hash_on_stdin() -> None:
    db = stored()
    created = tokens.create_token(db, "provisioning", ["accounts", "read", "accounts"])
    (call,) = db.calls
    digest = tokens.token_hash(created.token)
    assert call.service == "db"
    assert created.token not in " ".join(call.argv) and created.token not in call.stdin
    assert created.token.removeprefix("msk_") not in call.stdin
    assert digest not in " ".join(call.argv)  # a command line is visible to every local user
    assert call.stdin.startswith(f"\\set token_hash '{digest}'\n")
    assert call.variables() == {
        "ON_ERROR_STOP": "1",
        "name": "provisioning",
        "scopes": "read,accounts",  # each once, in the order of SCOPES
        "created_by": "",
        "expires_seconds": "",
    }
    assert created == tokens.NewApiToken("provisioning", ("read", "accounts"), None, created.token)
    assert created.token in str(created)  # shown this once


def test_an_expiry_travels_as_seconds_and_comes_back_as_stored() -> None:
    db = stored(b"creator,1\nname_taken,0\nadded,2026-06-12T12:00:00Z\n")
    created = tokens.create_token(db, "ci", ["read"], "90d")
    assert db.variables()["expires_seconds"] == str(90 * 86400)
    assert created.expires == "2026-06-12T12:00:00Z"
    assert "expires 2026-06-12T12:00:00Z" in str(created)


def test_a_taken_name_is_refused_with_a_hint() -> None:
    with pytest.raises(UsageError, match="NAME: an API token named ci exists already") as refused:
        tokens.create_token(stored(b"creator,1\nname_taken,1\n"), "ci", ["read"])
    assert "revoked token keeps its name" in (refused.value.hint or "")


def test_a_token_for_an_unknown_administrator_is_refused() -> None:
    with pytest.raises(UsageError, match="administrator ghost does not exist"):
        tokens.create_token(
            stored(b"creator,0\nname_taken,0\n"), "ci", ["read"], created_by="ghost"
        )


def test_a_hash_collision_draws_a_new_token() -> None:
    db = FakeContainers(answers=[b"creator,1\nname_taken,0\n", CREATED])
    created = tokens.create_token(db, "ci", ["read"])
    first, second = (call.stdin.splitlines()[0] for call in db.calls)
    assert first != second and tokens.token_hash(created.token) in second


# --- bad input: one line naming the argument, nothing sent --------------------------------------


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused_before_the_database(name: str) -> None:
    db = FakeContainers()
    with pytest.raises(UsageError, match=r"^NAME: "):
        tokens.create_token(db, name, ["read"])
    with pytest.raises(UsageError, match=r"^NAME: "):
        tokens.revoke_token(db, name)
    assert db.calls == []


@pytest.mark.parametrize(
    "scopes", [[], ["write"], ["READ"], ["read,admin"], ["admin'--"], ["read", ""], ["*"]]
)
def test_bad_scopes_are_refused_before_the_database(scopes: list[str]) -> None:
    db = FakeContainers()
    with pytest.raises(UsageError, match=r"^--scope: .*read, accounts, domains, admin"):
        tokens.create_token(db, "ci", scopes)
    assert db.calls == []


@pytest.mark.parametrize(
    "expires", ["90x", "0", "0d", "-1d", "90 days", "1.5h", "3651d", "", "90d;DROP", "1e9"]
)
def test_bad_expiries_are_refused_before_the_database(expires: str) -> None:
    db = FakeContainers()
    with pytest.raises(UsageError, match=r"^--expires: ") as refused:
        tokens.create_token(db, "ci", ["read"], expires)
    assert "\n" not in refused.value.message
    assert db.calls == []


def test_the_longest_expiry_is_ten_years() -> None:
    assert tokens.check_expiry("3650d") == 3650 * 86400
    assert tokens.check_expiry("12h") == 12 * 3600
    assert tokens.check_expiry(None) is None


# --- authenticate ------------------------------------------------------------------------------

GOOD = "msk_" + "a1B2-c_" * 6 + "x"


def answering(row: bytes) -> FakeContainers:
    return FakeContainers(by_marker=[("WHERE token_hash = :'token_hash'", row)])


def test_an_active_token_authenticates_and_its_use_is_recorded() -> None:
    db = answering(b'ci,"read,accounts",,active\n')
    identity = tokens.authenticate(db, GOOD, NOW)
    assert identity == tokens.TokenIdentity("ci", ("read", "accounts"), None)
    (call,) = db.calls
    assert "SET last_used = CAST(:'now' AS timestamptz)" in call.stdin
    assert call.variables()["now"] == "2026-03-14T12:00:00+00:00"


def test_a_token_made_by_an_administrator_acts_for_them() -> None:
    identity = tokens.authenticate(answering(b"ci,domains,alice,active\n"), GOOD, NOW)
    assert identity.created_by == "alice" and identity.allows("read")


def test_a_presented_token_reaches_the_database_only_as_its_hash_on_stdin() -> None:
    db = answering(b"ci,read,,active\n")
    tokens.authenticate(db, GOOD, NOW)
    (call,) = db.calls
    assert GOOD not in call.stdin and GOOD not in " ".join(call.argv)
    assert tokens.token_hash(GOOD) not in " ".join(call.argv)
    assert call.stdin.startswith(f"\\set token_hash '{tokens.token_hash(GOOD)}'\n")


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "msk_",
        GOOD[:-1],
        GOOD + "a",
        GOOD + "\n",
        GOOD.removeprefix("msk_"),
        "MSK_" + GOOD[4:],
        GOOD[:-1] + "=",
        "msk_" + "a" * 42 + "'",
        "x" * 100_000,
    ],
)
def test_a_malformed_token_is_unknown_without_asking_the_database(presented: str) -> None:
    db = FakeContainers()
    with pytest.raises(tokens.UnknownToken) as refused:
        tokens.authenticate(db, presented, NOW)
    assert refused.value.name is None
    assert db.calls == []


@pytest.mark.parametrize(
    ("row", "refusal"),
    [
        (b"", tokens.UnknownToken),
        (b"ci,read,,expired\n", tokens.ExpiredToken),
        (b"ci,read,,revoked\n", tokens.RevokedToken),
    ],
)
def test_unknown_expired_and_revoked_tokens_are_told_apart_for_the_audit_log_only(
    row: bytes, refusal: type[tokens.TokenRefused]
) -> None:
    with pytest.raises(refusal) as refused:
        tokens.authenticate(answering(row), GOOD, NOW)
    # The API maps every TokenRefused to the same 401; the reason is for the log.
    assert isinstance(refused.value, tokens.TokenRefused)
    assert refused.value.reason == refusal.reason
    assert refused.value.name == (None if refusal is tokens.UnknownToken else "ci")
    assert GOOD not in refused.value.message and GOOD[4:] not in refused.value.message


def test_a_time_without_its_zone_is_a_bug() -> None:
    with pytest.raises(ValueError, match="time zone"):
        tokens.authenticate(answering(b""), GOOD, datetime.datetime(2026, 3, 14))


# --- list and revoke ---------------------------------------------------------------------------


def test_the_list_never_reads_a_hash_and_shows_every_state() -> None:
    db = FakeContainers(
        answers=[
            b'ci,"read,accounts",active,2026-03-01T10:00:00Z,,,2026-03-14T11:59:00Z,\n'
            b"old,admin,revoked,2026-01-01T10:00:00Z,2026-04-01T00:00:00Z,"
            b"2026-02-01T09:00:00Z,,alice\n"
        ]
    )
    listed = tokens.list_tokens(db, NOW)
    assert "token_hash" not in db.calls[0].stdin
    assert db.variables()["now"] == NOW.isoformat()
    active, revoked = listed
    assert active == tokens.ApiToken(
        "ci", ("read", "accounts"), "active", "2026-03-01T10:00:00Z", None, None,
        "2026-03-14T11:59:00Z", None,
    )  # fmt: skip
    assert str(active) == (
        "ci  read,accounts  active  created 2026-03-01T10:00:00Z by root  expires never  "
        "last used 2026-03-14T11:59:00Z"
    )
    assert "revoked 2026-02-01T09:00:00Z" in str(revoked) and "by alice" in str(revoked)


def test_revoking_sets_revoked_once_and_says_so_the_second_time() -> None:
    fresh = tokens.revoke_token(
        FakeContainers(answers=[b"before,\nnow,2026-03-14T12:00:00Z\n"]), "ci"
    )
    assert fresh == tokens.TokenRevoked("ci", "2026-03-14T12:00:00Z")
    again = tokens.revoke_token(FakeContainers(answers=[b"before,2026-03-14T12:00:00Z\n"]), "ci")
    assert again.already and "already revoked at 2026-03-14T12:00:00Z" in str(again)


def test_revoking_an_unknown_token_is_refused() -> None:
    with pytest.raises(UsageError, match="NAME: there is no API token named ci"):
        tokens.revoke_token(FakeContainers(answers=[b""]), "ci")


# --- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def containers(monkeypatch: pytest.MonkeyPatch) -> FakeContainers:
    fake = stored()
    monkeypatch.setattr(Stack, "load", lambda root: SimpleNamespace(compose=fake))
    return fake


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["create", "it's", "--scope", "read"], "NAME"),
        (["create", "a" * 200, "--scope", "read"], "NAME"),
        (["create", "ci"], "--scope"),
        (["create", "ci", "--scope", "write"], "--scope"),
        (["create", "ci", "--scope", "read", "--scope", "Admin"], "--scope"),
        (["create", "ci", "--scope", "read", "--expires", "forever"], "--expires"),
        (["create", "ci", "--scope", "read", "--expires", "0"], "--expires"),
        (["create", "ci", "--scope", "read", "--expires", "99999d"], "--expires"),
        (["revoke", "'; DELETE FROM api_tokens;--"], "NAME"),
    ],
)
def test_bad_arguments_get_one_line_naming_them_and_touch_nothing(
    untouchable: None, args: list[str], named: str
) -> None:
    result = runner.invoke(app, ["api", "token", *args])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.startswith(f"error: {named}: "), result.output
    assert "Traceback" not in result.output


def test_create_prints_the_token_once_as_text_or_json(containers: FakeContainers) -> None:
    text = runner.invoke(app, ["api", "token", "create", "ci", "--scope", "admin"])
    assert text.exit_code == 0, text.output
    assert "msk_" in text.output and "shown only now" in text.output
    as_json = runner.invoke(app, ["api", "token", "create", "ci", "--scope", "read", "--json"])
    created = json.loads(as_json.output)
    assert tokens.TOKEN.fullmatch(created["token"])
    assert created["scopes"] == ["read"] and created["expires"] is None


def test_the_token_module_loads_without_pydantic_typer_or_rich() -> None:
    # The admin service runs it on Debian bookworm's own Python libraries (no pydantic 2).
    probe = (
        "import sys, mailstack.identity.tokens; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'typer', 'rich', 'click')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
