"""The second factor's core on the running stack's database (mailstack.identity.mfa): a
mailbox enrols, confirms with a code computed by mailstack.identity.totp, signs in with the
next step's code once, spends a recovery code once, and disables it; and the attacks on it:
replay, the same code twice at once, a sealed secret moved to another account."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from mailstack.adapters import psql
from mailstack.adapters.compose import Compose
from mailstack.errors import UsageError
from mailstack.identity import mfa, sealing, totp
from mailstack.identity.mfa import MfaCheck, Owner
from mailstack.stack.secrets import MFA_KEY, SECRETS_DIR
from mailstack.stack.stackdir import Stack
from tests.e2e.conftest import HOSTNAME, RunningStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def db(stack: RunningStack) -> Compose:
    return Stack.load(stack.root).compose


@pytest.fixture(scope="module")
def key(stack: RunningStack) -> bytes:
    return sealing.read_key(stack.root / SECRETS_DIR / MFA_KEY)


def enrolled(stack: RunningStack, db: Compose, key: bytes) -> tuple[Owner, str, tuple[str, ...]]:
    """A new mailbox with a confirmed second factor: (owner, secret, recovery codes)."""
    address, _ = stack.new_mailbox()
    owner = Owner.mailbox(address)
    enrolment = mfa.enrol(db, owner, key, issuer=HOSTNAME)
    now = time.time()
    shown = mfa.confirm(db, owner, key, totp.code_at(enrolment.secret, now), now)
    return owner, enrolment.secret, shown.codes


def stored(db: Compose, owner: Owner) -> list[list[str]]:
    return psql.query(
        db,
        "SELECT sealed, confirmed IS NOT NULL, last_step FROM mfa_totp WHERE mailbox = :'owner';",
        {"owner": owner.name},
    )


def test_a_mailbox_enrols_confirms_and_signs_in_with_the_next_code_only_once(
    stack: RunningStack, db: Compose, key: bytes
) -> None:
    address, _ = stack.new_mailbox()
    owner = Owner.mailbox(address)
    assert not mfa.status(db, owner).enrolled
    enrolment = mfa.enrol(db, owner, key, issuer=HOSTNAME)
    assert enrolment.uri.startswith(f"otpauth://totp/{HOSTNAME}:{address}?secret=")
    [(sealed, confirmed, _)] = stored(db, owner)
    assert confirmed == "f" and enrolment.secret not in sealed
    assert sealing.unseal(key, sealed, owner.label) == enrolment.secret
    # Not in force until confirmed: a check is refused outright.
    with pytest.raises(UsageError, match="no confirmed second factor"):
        mfa.check(db, owner, key, totp.code_at(enrolment.secret, time.time()), time.time())

    now = time.time()
    shown = mfa.confirm(db, owner, key, totp.code_at(enrolment.secret, now), now)
    assert len(shown.codes) == 10
    status = mfa.status(db, owner)
    assert status.confirmed and status.recovery_codes_left == 10

    # The same code again (the confirmation's step is spent), then the next step's code.
    assert not mfa.check(db, owner, key, totp.code_at(enrolment.secret, now), now).accepted
    later = now + totp.STEP_SECONDS
    code = totp.code_at(enrolment.secret, later)
    assert mfa.check(db, owner, key, code, later) == MfaCheck(str(owner), True, "totp")
    replay = mfa.check(db, owner, key, code, later + 5)
    assert not replay.accepted
    assert stored(db, owner)[0][2] == str(totp.time_step(later))

    disabled = mfa.disable(db, owner)
    assert disabled.was_confirmed
    assert stored(db, owner) == []
    assert not mfa.status(db, owner).enrolled


def test_a_recovery_code_works_once_and_the_others_stay(
    stack: RunningStack, db: Compose, key: bytes
) -> None:
    owner, _, codes = enrolled(stack, db, key)
    first = mfa.check(db, owner, key, codes[0].upper(), time.time())
    assert first.accepted and first.method == "recovery" and first.recovery_codes_left == 9
    assert not mfa.check(db, owner, key, codes[0], time.time()).accepted
    assert mfa.check(db, owner, key, codes[1].replace("-", " "), time.time()).accepted
    assert mfa.status(db, owner).recovery_codes_left == 8
    # Another account's code opens nothing here.
    _other, _, others = enrolled(stack, db, key)
    assert not mfa.check(db, owner, key, others[0], time.time()).accepted


def test_one_code_sent_four_times_at_once_is_accepted_once(
    stack: RunningStack, db: Compose, key: bytes
) -> None:
    owner, secret, _ = enrolled(stack, db, key)
    later = time.time() + totp.STEP_SECONDS
    code = totp.code_at(secret, later)
    start = threading.Barrier(4)
    results: list[bool] = []

    def sign_in() -> None:
        start.wait()
        results.append(mfa.check(db, owner, key, code, later).accepted)

    threads = [threading.Thread(target=sign_in) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == [False, False, False, True]


def test_a_code_checked_while_another_sign_in_stores_its_step_is_refused(
    stack: RunningStack, db: Compose, key: bytes
) -> None:
    # The race made certain: another session has verified the same code and is storing its
    # step (row locked, not committed). This check reads the old last_step, so the code passes
    # in Python; only the guard in its UPDATE, re-evaluated once the lock is released, refuses.
    owner, secret, _ = enrolled(stack, db, key)
    later = time.time() + totp.STEP_SECONDS
    step = totp.time_step(later)
    other = threading.Thread(
        target=psql.query,
        args=(
            db,
            "BEGIN; UPDATE mfa_totp SET last_step = CAST(:'step' AS bigint) "
            "WHERE mailbox = :'owner'; SELECT pg_sleep(4); COMMIT;",
            {"step": str(step), "owner": owner.name},
        ),
    )
    other.start()
    deadline = time.monotonic() + 30
    while not psql.query(
        db,
        "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(4)%' "
        "AND state = 'active' AND pid <> pg_backend_pid();",
    ):
        assert time.monotonic() < deadline, "the other session never started"
        time.sleep(0.1)
    result = mfa.check(db, owner, key, totp.code_at(secret, later), later)
    other.join(timeout=60)
    assert not result.accepted
    assert stored(db, owner)[0][2] == str(step)


def test_a_recovery_code_sent_twice_at_once_is_accepted_once(
    stack: RunningStack, db: Compose, key: bytes
) -> None:
    owner, _, codes = enrolled(stack, db, key)
    start = threading.Barrier(3)
    results: list[bool] = []

    def sign_in() -> None:
        start.wait()
        results.append(mfa.check(db, owner, key, codes[0], time.time()).accepted)

    threads = [threading.Thread(target=sign_in) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == [False, False, True]
    assert mfa.status(db, owner).recovery_codes_left == 9


def test_a_sealed_secret_copied_to_another_mailbox_does_not_open(
    stack: RunningStack, db: Compose, key: bytes
) -> None:
    # Someone with write access to the table (not to secrets/) gives the victim's row the
    # attacker's sealed secret, whose codes they can compute.
    attacker, attacker_secret, _ = enrolled(stack, db, key)
    victim, _, _ = enrolled(stack, db, key)
    psql.query(
        db,
        "UPDATE mfa_totp SET sealed = (SELECT sealed FROM mfa_totp WHERE mailbox = :'attacker') "
        "WHERE mailbox = :'victim';",
        {"attacker": attacker.name, "victim": victim.name},
    )
    later = time.time() + totp.STEP_SECONDS
    with pytest.raises(sealing.SealBroken, match="does not open"):
        mfa.check(db, victim, key, totp.code_at(attacker_secret, later), later)


def test_a_confirmed_factor_is_not_replaced_by_a_new_enrolment_until_disabled(
    stack: RunningStack, db: Compose, key: bytes
) -> None:
    owner, secret, _ = enrolled(stack, db, key)
    with pytest.raises(UsageError, match="already has a confirmed second factor"):
        mfa.enrol(db, owner, key, issuer=HOSTNAME)
    later = time.time() + totp.STEP_SECONDS
    assert mfa.check(db, owner, key, totp.code_at(secret, later), later).accepted
    mfa.disable(db, owner)
    again = mfa.enrol(db, owner, key, issuer=HOSTNAME)
    # An unconfirmed enrolment is replaced by the next one; only the last one confirms.
    newer = mfa.enrol(db, owner, key, issuer=HOSTNAME)
    now = time.time()
    with pytest.raises(mfa.CodeRefused):
        mfa.confirm(db, owner, key, totp.code_at(again.secret, now), now)
    assert len(mfa.confirm(db, owner, key, totp.code_at(newer.secret, now), now).codes) == 10


def test_an_administrator_has_a_second_factor_of_its_own(
    stack: RunningStack, db: Compose, key: bytes
) -> None:
    # No `admin add` in this part: the row is made directly (the hash is never checked here).
    name = f"admin-{uuid.uuid4().hex[:8]}"
    psql.query(
        db,
        "INSERT INTO admins (name, role, password) VALUES (:'name', 'admin', '{ARGON2ID}x');",
        {"name": name},
    )
    owner = Owner.admin(name)
    try:
        enrolment = mfa.enrol(db, owner, key, issuer=HOSTNAME)
        now = time.time()
        mfa.confirm(db, owner, key, totp.code_at(enrolment.secret, now), now)
        later = now + totp.STEP_SECONDS
        assert mfa.check(db, owner, key, totp.code_at(enrolment.secret, later), later).accepted
        # A mailbox of the same name would be another account: its row is not this one.
        rows = psql.query(
            db, "SELECT admin, mailbox FROM mfa_totp WHERE admin = :'name';", {"name": name}
        )
        assert rows == [[name, ""]]
    finally:
        psql.query(db, "DELETE FROM admins WHERE name = :'name';", {"name": name})
    assert psql.query(
        db, "SELECT count(*) FROM mfa_totp WHERE admin = :'name';", {"name": name}
    ) == [["0"]]
