"""Sealing a TOTP secret for the database: AES-GCM under secrets/mfa_key, bound to its owner."""

from __future__ import annotations

import base64
import secrets
import stat
from pathlib import Path

import pytest

from mailstack.errors import MailstackError
from mailstack.identity import sealing, totp
from mailstack.identity.sealing import SealBroken
from mailstack.stack.secrets import MFA_KEY, SECRETS_DIR, ensure_secrets, read_secret

KEY = bytes(range(32))
OWNER = "mailbox:alice@example.org"


def test_a_sealed_secret_opens_for_its_owner_under_its_key() -> None:
    secret = totp.new_secret()
    sealed = sealing.seal(KEY, secret, OWNER)
    assert sealing.unseal(KEY, sealed, OWNER) == secret


def test_the_sealed_text_is_versioned_base64url_and_hides_the_secret() -> None:
    secret = totp.new_secret()
    sealed = sealing.seal(KEY, secret, OWNER)
    version, _, body = sealed.partition(":")
    assert version == "v1"
    raw = base64.urlsafe_b64decode(body)
    assert len(raw) == sealing.NONCE_BYTES + len(secret) + sealing.TAG_BYTES
    assert secret not in sealed and secret.encode() not in raw
    assert len(sealed) <= 400  # the column's CHECK


def test_sealing_twice_gives_two_texts_a_fresh_nonce_each() -> None:
    secret = totp.new_secret()
    assert sealing.seal(KEY, secret, OWNER) != sealing.seal(KEY, secret, OWNER)


def test_a_sealed_secret_copied_to_another_account_does_not_open() -> None:
    # An attacker with write access to the table moves a known row to a victim's account.
    sealed = sealing.seal(KEY, totp.new_secret(), "mailbox:mallory@example.org")
    for victim in ("mailbox:alice@example.org", "admin:mallory@example.org", "admin:root"):
        with pytest.raises(SealBroken, match="does not open"):
            sealing.unseal(KEY, sealed, victim)


def test_a_sealed_secret_under_another_key_does_not_open() -> None:
    sealed = sealing.seal(KEY, totp.new_secret(), OWNER)
    with pytest.raises(SealBroken, match="another mfa_key"):
        sealing.unseal(secrets.token_bytes(32), sealed, OWNER)


def test_every_flipped_bit_of_a_sealed_secret_is_detected() -> None:
    sealed = sealing.seal(KEY, totp.new_secret(), OWNER)
    raw = bytearray(base64.urlsafe_b64decode(sealed.partition(":")[2]))
    for index in range(len(raw)):
        for bit in (0x01, 0x80):
            tampered = bytearray(raw)
            tampered[index] ^= bit
            text = "v1:" + base64.urlsafe_b64encode(bytes(tampered)).decode()
            with pytest.raises(SealBroken):
                sealing.unseal(KEY, text, OWNER)


@pytest.mark.parametrize(
    "sealed",
    ["", "v1", "v1:", "v2:AAAA", "v1:not base64!", "v1:" + "A" * 8, "plain-secret", "v1:AAAA\n"],
)
def test_damaged_or_unknown_forms_are_refused(sealed: str) -> None:
    with pytest.raises(SealBroken):
        sealing.unseal(KEY, sealed, OWNER)


def test_extra_characters_in_the_text_are_refused_not_skipped() -> None:
    sealed = sealing.seal(KEY, totp.new_secret(), OWNER)
    with pytest.raises(SealBroken):
        sealing.unseal(KEY, sealed[:10] + "*" + sealed[10:], OWNER)


def test_the_mfa_key_is_made_with_the_other_secrets_and_reads_as_a_256_bit_key(
    tmp_path: Path,
) -> None:
    report = ensure_secrets(tmp_path)
    assert MFA_KEY in report.created
    path = tmp_path / SECRETS_DIR / MFA_KEY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = sealing.read_key(path)
    assert len(key) == sealing.KEY_BYTES
    assert sealing.key_from_text(read_secret(tmp_path, MFA_KEY)) == key
    # Kept on the next render: every sealed secret depends on it.
    assert MFA_KEY in ensure_secrets(tmp_path).kept
    assert sealing.read_key(path) == key


@pytest.mark.parametrize("text", ["", "short", "A" * 42, "A" * 44, "!" * 43, "é" * 43])
def test_a_key_file_that_is_not_256_bits_is_refused(text: str) -> None:
    with pytest.raises(MailstackError, match="not a 256-bit key"):
        sealing.key_from_text(text)


def test_a_missing_key_file_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(MailstackError, match="mfa_key cannot be read"):
        sealing.read_key(tmp_path / "mfa_key")
