"""Secrets on disk: tokens and key pairs made once, 0600, never replaced."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailstack.errors import MailstackError
from mailstack.stack.secrets import KEY_PAIR_SECRETS, SECRET_NAMES, TOKEN_SECRETS, ensure_secrets

MAIL_CRYPT = KEY_PAIR_SECRETS[0]


def secret(root: Path, name: str) -> Path:
    return root / "secrets" / name


def test_every_secret_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    first = ensure_secrets(tmp_path)
    assert sorted(first.created) == sorted(SECRET_NAMES) and first.kept == ()
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    before = {name: secret(tmp_path, name).read_bytes() for name in SECRET_NAMES}
    for name in SECRET_NAMES:
        assert stat.S_IMODE(secret(tmp_path, name).stat().st_mode) == 0o600, name
    second = ensure_secrets(tmp_path)
    assert second.created == () and sorted(second.kept) == sorted(SECRET_NAMES)
    assert {name: secret(tmp_path, name).read_bytes() for name in SECRET_NAMES} == before


def test_mail_crypt_keys_are_an_ec_pair_in_pem_pkey_format(tmp_path: Path) -> None:
    ensure_secrets(tmp_path)
    private_pem = secret(tmp_path, "mail_crypt_private_key").read_bytes()
    public_pem = secret(tmp_path, "mail_crypt_public_key").read_bytes()
    # Dovecot wants OpenSSL's "pkey" PEM: PKCS#8 private key, SubjectPublicKeyInfo public key.
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    private = serialization.load_pem_private_key(private_pem, password=None)
    public = serialization.load_pem_public_key(public_pem)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert private.curve.name == "secp521r1"
    assert private.public_key().public_numbers() == public.public_numbers()


def two_stacks(tmp_path: Path) -> tuple[Path, Path]:
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        root.mkdir()
        ensure_secrets(root)
    return one, two


def test_each_stack_gets_its_own_keys(tmp_path: Path) -> None:
    two_stacks(tmp_path)
    for name in SECRET_NAMES:
        assert (
            secret(tmp_path / "one", name).read_bytes()
            != secret(tmp_path / "two", name).read_bytes()
        )


def test_a_deleted_public_key_is_derived_again_from_the_kept_private_key(tmp_path: Path) -> None:
    ensure_secrets(tmp_path)
    private_before = secret(tmp_path, MAIL_CRYPT.private_name).read_bytes()
    public_before = secret(tmp_path, MAIL_CRYPT.public_name).read_bytes()
    secret(tmp_path, MAIL_CRYPT.public_name).unlink()
    report = ensure_secrets(tmp_path)
    assert report.created == (MAIL_CRYPT.public_name,)
    assert secret(tmp_path, MAIL_CRYPT.private_name).read_bytes() == private_before
    assert secret(tmp_path, MAIL_CRYPT.public_name).read_bytes() == public_before
    assert stat.S_IMODE(secret(tmp_path, MAIL_CRYPT.public_name).stat().st_mode) == 0o600


def test_a_lost_private_key_is_never_silently_replaced(tmp_path: Path) -> None:
    ensure_secrets(tmp_path)
    secret(tmp_path, MAIL_CRYPT.private_name).unlink()
    with pytest.raises(MailstackError) as raised:
        ensure_secrets(tmp_path)
    assert "mail_crypt_private_key is missing" in raised.value.message
    assert raised.value.hint is not None and "backup" in raised.value.hint
    assert not secret(tmp_path, MAIL_CRYPT.private_name).exists()


def test_keys_from_two_different_pairs_are_refused(tmp_path: Path) -> None:
    one, two = two_stacks(tmp_path)
    stranger = secret(two, MAIL_CRYPT.public_name).read_bytes()
    public = secret(one, MAIL_CRYPT.public_name)
    public.write_bytes(stranger)
    with pytest.raises(MailstackError, match="not one key pair"):
        ensure_secrets(one)
    assert public.read_bytes() == stranger  # nothing is rewritten behind the operator's back


def test_a_private_key_that_is_not_pem_is_reported_not_replaced(tmp_path: Path) -> None:
    ensure_secrets(tmp_path)
    private = secret(tmp_path, MAIL_CRYPT.private_name)
    private.write_bytes(b"not a key\n")
    with pytest.raises(MailstackError, match="not a PEM private key"):
        ensure_secrets(tmp_path)
    assert private.read_bytes() == b"not a key\n"


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    ensure_secrets(tmp_path)
    for name in (next(iter(TOKEN_SECRETS)), MAIL_CRYPT.private_name, MAIL_CRYPT.public_name):
        secret(tmp_path, name).chmod(0o644)
    ensure_secrets(tmp_path)
    for name in SECRET_NAMES:
        assert stat.S_IMODE(secret(tmp_path, name).stat().st_mode) == 0o600, name
