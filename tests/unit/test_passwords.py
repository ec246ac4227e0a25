"""Mailbox passwords: strength rules and Dovecot-ready Argon2id hashes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstack.accounts.passwords import (
    check_password_strength,
    hash_password,
    is_password_hash,
    verify_password,
)
from mailstack.errors import UsageError

GOOD = "Correct horse 9 battery"


def test_hash_has_dovecot_scheme_prefix_and_argon2id_parameters() -> None:
    hashed = hash_password(GOOD)
    assert hashed.startswith("{ARGON2ID}$argon2id$v=19$m=32768,t=2,p=1$")


def test_hash_verifies_the_right_password_only() -> None:
    hashed = hash_password(GOOD)
    assert verify_password(hashed, GOOD)
    assert not verify_password(hashed, GOOD + "x")
    assert not verify_password(hashed.replace("{ARGON2ID}", "{PLAIN}"), GOOD)


def test_same_password_hashes_differently_each_time() -> None:
    assert hash_password(GOOD) != hash_password(GOOD)


def test_hash_is_safe_to_store_as_it_is() -> None:
    assert is_password_hash(hash_password(GOOD))


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("Short 1", "too short"),
        ("alllowercaseletters", "only one kind"),
        ("aaaaaaaaaaaA", "too few characters"),
        ("Tab\tinside password 1", "control character"),
        ("Line\nbreak password 1", "control character"),
        (" Leading space 12", "starts or ends with a space"),
        ("Trailing space 12 ", "starts or ends with a space"),
        ("Aa1!" * 300, "too long"),
    ],
)
def test_weak_or_unsafe_passwords_are_refused(password: str, why: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_password_strength(password)
    assert why in caught.value.message


def test_hash_password_refuses_a_weak_password() -> None:
    with pytest.raises(UsageError):
        hash_password("password")


def test_a_passphrase_of_words_is_accepted() -> None:
    check_password_strength("staple Battery horse correct")


@given(st.text(min_size=1, max_size=40))
def test_text_with_quote_backslash_or_newline_is_never_a_storable_hash(text: str) -> None:
    for bad in ("'", "\\", "\n", " "):
        assert not is_password_hash("{ARGON2ID}" + text + bad + text)
