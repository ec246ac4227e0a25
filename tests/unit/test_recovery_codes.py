"""Recovery codes: ten 80-bit codes, grouped for reading, stored as SHA-256 hex only."""

from __future__ import annotations

import hashlib
import re

import pytest

from mailstack.identity import recovery

GROUPED = re.compile(r"^[0-9a-hjkmnp-tv-z]{4}(-[0-9a-hjkmnp-tv-z]{4}){3}$")


def test_an_enrolment_gets_ten_distinct_grouped_codes_without_look_alikes() -> None:
    codes = recovery.new_codes()
    assert len(codes) == 10 == len(set(codes))
    for code in codes:
        assert GROUPED.match(code), code
        assert not set(code) & set("ilou")


def test_a_code_carries_80_bits() -> None:
    # 16 characters of a 32-letter alphabet: 16 x 5 bits.
    assert recovery.LENGTH * 5 == 80
    assert len(set("".join(recovery.new_codes(200)).replace("-", ""))) == 32


def test_the_stored_form_is_sha256_hex_of_the_sixteen_characters() -> None:
    code = recovery.new_codes(1)[0]
    stored = recovery.code_hash(code)
    assert re.fullmatch(r"[0-9a-f]{64}", stored)
    assert stored == hashlib.sha256(code.replace("-", "").encode()).hexdigest()


def test_typing_is_forgiving_about_case_hyphens_spaces_and_look_alikes() -> None:
    code = "0a1b-2c3d-4e5f-6g7h"
    stored = recovery.code_hash(code)
    for typed in (
        "0A1B-2C3D-4E5F-6G7H",
        "0a1b2c3d4e5f6g7h",
        "0a1b 2c3d 4e5f 6g7h",
        " 0a1b-2c3d-4e5f-6g7h\n",
        "oa1b-2c3d-4e5f-6g7h",  # o read as 0
        "0aib-2c3d-4e5f-6g7h",  # i read as 1
        "0alb-2c3d-4e5f-6g7h",  # l read as 1
    ):
        assert recovery.code_hash(typed) == stored, typed


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "0a1b-2c3d-4e5f",  # too short
        "0a1b-2c3d-4e5f-6g7h-8j9k",  # too long
        "0a1b-2c3d-4e5f-6g7u",  # u is not in the alphabet
        "0a1b_2c3d_4e5f_6g7h",
        "123456",  # a TOTP code
        "x" * 10_000,
    ],
)
def test_what_cannot_be_a_recovery_code_is_refused(typed: str) -> None:
    assert recovery.normalize(typed) is None
    with pytest.raises(ValueError, match="not a recovery code"):
        recovery.code_hash(typed)
