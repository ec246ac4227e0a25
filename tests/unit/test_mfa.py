"""The second factor's database side against the fake db container: the SQL's shape, what
travels on stdin and never in argv, and each refusal."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from mailstack.errors import MailstackError, UsageError
from mailstack.identity import mfa, recovery, sealing, totp
from mailstack.identity.mfa import CodeRefused, Owner
from tests.unit.fakes import Call, FakeContainers

KEY = bytes(range(32))
NOW = 1_700_000_000.0
STEP = totp.time_step(NOW)
ALICE = Owner.mailbox("alice@example.org")
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
SEALED = sealing.seal(KEY, SECRET, ALICE.label)

READ = "SELECT 'totp'"
ENROL = "INSERT INTO mfa_totp (mailbox, sealed)"
CONFIRM = "WITH confirmed AS"
USE_STEP = "UPDATE mfa_totp SET last_step"
USE_RECOVERY = "WITH owner_totp AS"
DISABLE = "DELETE FROM mfa_totp"


def row(*, confirmed: bool, last_step: int = 0, codes: int = 0, sealed: str = SEALED) -> bytes:
    flag = "t" if confirmed else "f"
    return f"account,1\ntotp,7,{sealed},{flag},{last_step},{codes}\n".encode()


def db(*by_marker: tuple[str, bytes]) -> FakeContainers:
    return FakeContainers(by_marker=list(by_marker))


def values(call: Call) -> dict[str, str]:
    """The psql variables of a call (argv), without psql's own settings."""
    return {k: v for k, v in call.variables().items() if k != "ON_ERROR_STOP"}


def stdin_sets(call: Call) -> dict[str, str]:
    r"""The values a call sets with `\set name 'value'` on stdin."""
    return dict(re.findall(r"^\\set (\w+) '([^']*)'$", call.stdin, re.MULTILINE))


def assert_not_in_argv(call: Call, *values: str) -> None:
    for value in values:
        assert all(value not in argument for argument in call.argv), value


# --- owners -------------------------------------------------------------------------------


def test_owners_are_an_administrator_or_a_mailbox_and_label_what_a_seal_is_bound_to() -> None:
    assert Owner.mailbox("Alice@Example.ORG").label == "mailbox:alice@example.org"
    assert Owner.admin("root-admin").label == "admin:root-admin"
    # An administrator may be named like an address: the kind keeps the two apart.
    assert Owner.admin("alice@example.org").label != ALICE.label


def test_an_administrator_is_named_lower_case_as_the_admins_table_stores_it() -> None:
    assert Owner.admin("Root").label == "admin:root"


@pytest.mark.parametrize("name", ["", "a b", "-x", "x'; DROP TABLE admins; --", "a" * 65])
def test_an_administrator_name_outside_the_schema_rule_is_refused(name: str) -> None:
    with pytest.raises(UsageError, match=r"^ADMIN: "):
        Owner.admin(name)


@pytest.mark.parametrize("address", ["", "alice", "a@b@c", "a b@example.org", "@example.org"])
def test_a_mailbox_owner_must_look_like_an_address(address: str) -> None:
    with pytest.raises(UsageError, match=r"^MAILBOX: "):
        Owner.mailbox(address)


def test_a_hostile_owner_travels_as_a_variable_never_inside_the_sql() -> None:
    fake = db((READ, b"account,0\n"))
    # Quotes and = are allowed in a local part (RFC 5322 atext): they must stay a value.
    hostile = Owner.mailbox("x'or'1'='1@example.org")
    with pytest.raises(UsageError, match="does not exist"):
        mfa.status(fake, hostile)
    assert values(fake.calls[0]) == {"kind": "mailbox", "owner": hostile.name}
    assert "'1'='1" not in fake.calls[0].stdin


# --- enrolment ----------------------------------------------------------------------------


def test_enrolment_stores_the_secret_sealed_on_stdin_and_shows_it_once() -> None:
    fake = db((ENROL, b"account,1\nenrolled,7\n"))
    enrolment = mfa.enrol(fake, ALICE, KEY, issuer="mail.example.org")
    call = fake.calls[0]
    sealed = stdin_sets(call)["sealed"]
    assert sealing.unseal(KEY, sealed, ALICE.label) == enrolment.secret
    assert enrolment.secret not in call.stdin
    assert_not_in_argv(call, sealed, enrolment.secret)
    assert "--single-transaction" in call.argv
    assert enrolment.uri == totp.provisioning_uri(
        enrolment.secret, "alice@example.org", "mail.example.org"
    )
    assert enrolment.secret in str(enrolment)


def test_enrolment_replaces_only_an_unconfirmed_secret() -> None:
    fake = db((ENROL, b"account,1\nenrolled,7\n"))
    mfa.enrol(fake, ALICE, KEY, issuer="Mail")
    sql = fake.calls[0].stdin
    for column in ("admin", "mailbox"):
        assert f"ON CONFLICT ({column}) DO UPDATE SET sealed = excluded.sealed" in sql
    assert sql.count("WHERE mfa_totp.confirmed IS NULL") == 2


def test_enrolment_is_refused_while_a_confirmed_factor_exists() -> None:
    fake = db((ENROL, b"account,1\n"))
    with pytest.raises(UsageError, match="already has a confirmed second factor"):
        mfa.enrol(fake, ALICE, KEY, issuer="Mail")


def test_enrolment_of_an_unknown_account_is_refused() -> None:
    with pytest.raises(UsageError, match=r"mailbox alice@example\.org does not exist"):
        mfa.enrol(db((ENROL, b"account,0\n")), ALICE, KEY, issuer="Mail")


def test_an_issuer_with_a_colon_is_refused_before_the_database() -> None:
    fake = db()
    with pytest.raises(UsageError, match=r"^ISSUER: "):
        mfa.enrol(fake, ALICE, KEY, issuer="Mail:Evil")
    assert fake.calls == []


# --- confirmation ---------------------------------------------------------------------------


def test_confirmation_with_a_first_code_stores_its_step_and_ten_recovery_hashes() -> None:
    fake = db((READ, row(confirmed=False)), (CONFIRM, b"confirmed,1\ncodes,10\n"))
    shown = mfa.confirm(fake, ALICE, KEY, totp.code_at(SECRET, NOW), NOW)
    assert len(shown.codes) == recovery.COUNT
    write = fake.sent(CONFIRM)[0]
    assert values(write) == {
        "kind": "mailbox",
        "owner": ALICE.name,
        "id": "7",
        "step": str(STEP),
    }
    sets = stdin_sets(write)
    assert sets["sealed"] == SEALED  # confirmed only if the verified secret is still the row's
    hashes = {sets[f"code_hash_{i}"] for i in range(recovery.COUNT)}
    assert hashes == {recovery.code_hash(code) for code in shown.codes}
    for code in shown.codes:
        assert code not in write.stdin and code.replace("-", "") not in write.stdin
    assert_not_in_argv(write, SEALED, *hashes)
    assert "last_step < CAST(:'step' AS bigint)" in write.stdin
    assert "confirmed IS NULL" in write.stdin


def test_a_wrong_first_code_is_refused_and_nothing_is_written() -> None:
    fake = db((READ, row(confirmed=False)))
    wrong = f"{(int(totp.code_at(SECRET, NOW)) + 1) % 10**6:06d}"
    with pytest.raises(CodeRefused, match="does not match; nothing was changed"):
        mfa.confirm(fake, ALICE, KEY, wrong, NOW)
    assert fake.sent(CONFIRM) == []


def test_confirming_an_enrolment_replaced_meanwhile_confirms_nothing() -> None:
    fake = db((READ, row(confirmed=False)), (CONFIRM, b"confirmed,0\ncodes,0\n"))
    with pytest.raises(MailstackError, match="changed meanwhile"):
        mfa.confirm(fake, ALICE, KEY, totp.code_at(SECRET, NOW), NOW)


def test_confirming_twice_or_without_enrolment_is_refused() -> None:
    with pytest.raises(UsageError, match="already confirmed"):
        mfa.confirm(db((READ, row(confirmed=True))), ALICE, KEY, "123456", NOW)
    with pytest.raises(UsageError, match="no TOTP enrolment"):
        mfa.confirm(db((READ, b"account,1\n")), ALICE, KEY, "123456", NOW)


def test_a_secret_sealed_for_another_account_is_refused_not_used() -> None:
    # A row copied from mallory's account (known secret) to alice's does not open.
    mallorys = sealing.seal(KEY, SECRET, "mailbox:mallory@example.org")
    fake = db((READ, row(confirmed=True, sealed=mallorys)))
    with pytest.raises(sealing.SealBroken):
        mfa.check(fake, ALICE, KEY, totp.code_at(SECRET, NOW), NOW)
    assert fake.sent(USE_STEP) == []


# --- checks ----------------------------------------------------------------------------------


def test_a_current_code_is_accepted_by_storing_its_step() -> None:
    fake = db(
        (READ, row(confirmed=True, last_step=STEP - 5)), (USE_STEP, f"accepted,{STEP}\n".encode())
    )
    result = mfa.check(fake, ALICE, KEY, totp.code_at(SECRET, NOW), NOW)
    assert result.accepted and result.method == "totp"
    write = fake.sent(USE_STEP)[0]
    assert write.variables()["step"] == str(STEP)
    assert stdin_sets(write) == {"sealed": SEALED}
    assert_not_in_argv(write, SEALED)


def test_the_replay_guard_is_in_the_update_itself() -> None:
    # The WHERE that accepts a code is the one that stores its step: no read-then-write gap.
    fake = db((READ, row(confirmed=True)), (USE_STEP, f"accepted,{STEP}\n".encode()))
    mfa.check(fake, ALICE, KEY, totp.code_at(SECRET, NOW), NOW)
    sql = fake.sent(USE_STEP)[0].stdin
    assert re.search(r"UPDATE mfa_totp SET last_step = CAST\(:'step' AS bigint\)\s+WHERE", sql)
    assert "AND last_step < CAST(:'step' AS bigint)" in sql
    assert "confirmed IS NOT NULL" in sql


def test_a_code_whose_step_was_used_is_refused_without_a_write() -> None:
    fake = db((READ, row(confirmed=True, last_step=STEP)))
    result = mfa.check(fake, ALICE, KEY, totp.code_at(SECRET, NOW), NOW)
    assert not result.accepted and "refused" in str(result)
    assert fake.sent(USE_STEP) == []


def test_a_code_used_in_parallel_is_refused_when_the_update_finds_its_step_taken() -> None:
    # Both requests read last_step before either wrote; the database lets one UPDATE through.
    fake = db((READ, row(confirmed=True, last_step=STEP - 1)), (USE_STEP, b""))
    result = mfa.check(fake, ALICE, KEY, totp.code_at(SECRET, NOW), NOW)
    assert not result.accepted and result.method == ""


def test_a_wrong_code_is_refused_without_a_write() -> None:
    fake = db((READ, row(confirmed=True)))
    assert not mfa.check(fake, ALICE, KEY, "000000", NOW).accepted
    assert fake.sent(USE_STEP) == []


def test_a_recovery_code_is_spent_by_deleting_its_hash_sent_on_stdin() -> None:
    fake = db((READ, row(confirmed=True, codes=10)), (USE_RECOVERY, b"used,1\nleft,10\n"))
    code = "0a1b-2c3d-4e5f-6g7h"
    result = mfa.check(fake, ALICE, KEY, code.upper(), NOW)
    assert result.accepted and result.method == "recovery" and result.recovery_codes_left == 9
    write = fake.sent(USE_RECOVERY)[0]
    assert stdin_sets(write) == {"code_hash": recovery.code_hash(code)}
    assert "0a1b" not in write.stdin.lower().replace(recovery.code_hash(code), "")
    assert_not_in_argv(write, recovery.code_hash(code), "0a1b")
    assert "DELETE FROM mfa_recovery_codes" in write.stdin


def test_a_spent_or_unknown_recovery_code_is_refused() -> None:
    fake = db((READ, row(confirmed=True, codes=9)), (USE_RECOVERY, b"used,0\nleft,9\n"))
    result = mfa.check(fake, ALICE, KEY, "0a1b-2c3d-4e5f-6g7h", NOW)
    assert not result.accepted and result.recovery_codes_left is None


@pytest.mark.parametrize("code", ["12345", "1234567", "12a456", "", "abc-def", "x" * 500])
def test_malformed_codes_are_refused_in_one_line_that_does_not_echo_them(code: str) -> None:
    fake = db()
    with pytest.raises(UsageError, match=r"^CODE: the value given \(\d+ characters\)") as refused:
        mfa.check(fake, ALICE, KEY, code, NOW)
    if code:
        assert code not in refused.value.message
    assert fake.calls == []


def test_a_check_without_a_confirmed_factor_is_refused() -> None:
    with pytest.raises(UsageError, match="no confirmed second factor"):
        mfa.check(db((READ, row(confirmed=False))), ALICE, KEY, "123456", NOW)
    with pytest.raises(UsageError, match="no confirmed second factor"):
        mfa.check(db((READ, b"account,1\n")), ALICE, KEY, "0a1b-2c3d-4e5f-6g7h", NOW)


# --- status and disabling --------------------------------------------------------------------


def test_status_tells_enrolled_confirmed_and_codes_left() -> None:
    assert not mfa.status(db((READ, b"account,1\n")), ALICE).enrolled
    waiting = mfa.status(db((READ, row(confirmed=False))), ALICE)
    assert waiting.enrolled and not waiting.confirmed
    on = mfa.status(db((READ, row(confirmed=True, codes=8))), ALICE)
    assert on.confirmed and on.recovery_codes_left == 8
    assert "8 recovery code(s) left" in str(on)


def test_disabling_removes_the_row_and_its_codes_with_it() -> None:
    fake = db((DISABLE, b"account,1\nremoved,t\n"))
    assert mfa.disable(fake, ALICE).was_confirmed
    assert "--single-transaction" in fake.calls[0].argv
    with pytest.raises(UsageError, match="has no second factor"):
        mfa.disable(db((DISABLE, b"account,1\n")), ALICE)
    with pytest.raises(UsageError, match="does not exist"):
        mfa.disable(db((DISABLE, b"account,0\n")), ALICE)


# --- what the admin container may import --------------------------------------------------


def test_the_identity_package_imports_nothing_of_pydantic_typer_or_rich() -> None:
    # The admin container runs this code on Debian bookworm's Python libraries (no pydantic 2).
    probe = (
        "import sys, pkgutil, importlib, mailstack.identity as p\n"
        "for m in pkgutil.iter_modules(p.__path__): importlib.import_module(f'{p.__name__}.{m.name}')\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'pydantic', 'typer', 'rich', 'click', 'jinja2', 'yaml'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
