"""restic key files: one written by restic 0.14 opens; a sealed one opens the same master key."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from pathlib import Path

import pytest

from mailstack.images import repository_key

# Written by `restic init` (0.14.0, Debian bookworm) for a throwaway repository whose password
# was this test value; the file's name in keys/ was the SHA-256 of its bytes.
RESTIC_KEY = Path(__file__).parent / "data" / "restic-0.14-key.json"
RESTIC_KEY_NAME = "c1807c81cfef13f42c9396aff8b2f1a0ac377c66d68f004b71593134a82c848d"
RESTIC_PASSWORD = "bench-only-password"  # the throwaway repository's


def test_a_key_written_by_restic_opens_with_its_password() -> None:
    content = RESTIC_KEY.read_bytes()
    assert hashlib.sha256(content).hexdigest() == RESTIC_KEY_NAME
    opened = repository_key.open_key(content, RESTIC_PASSWORD)
    assert (opened.n, opened.r, opened.p) == (32768, 8, 10)  # restic's calibration here
    master = json.loads(opened.master_key)
    assert len(base64.b64decode(master["encrypt"])) == 32
    assert len(base64.b64decode(master["mac"]["k"])) == 16
    assert len(base64.b64decode(master["mac"]["r"])) == 16


def test_a_wrong_password_does_not_open_a_key() -> None:
    with pytest.raises(ValueError, match="does not open"):
        repository_key.open_key(RESTIC_KEY.read_bytes(), "bench-only-passwore")


def test_a_sealed_key_opens_the_same_master_key_with_one_scrypt_lane() -> None:
    master = repository_key.open_key(RESTIC_KEY.read_bytes(), RESTIC_PASSWORD).master_key
    name, content = repository_key.seal_key(
        master, RESTIC_PASSWORD, username="root", hostname="mailstack-backup"
    )
    assert name == hashlib.sha256(content).hexdigest()
    fields = json.loads(content)
    assert (fields["kdf"], fields["N"], fields["r"], fields["p"]) == ("scrypt", 2**15, 8, 1)
    assert len(base64.b64decode(fields["salt"])) == 64  # restic refuses other salt lengths
    reopened = repository_key.open_key(content, RESTIC_PASSWORD)
    assert reopened.master_key == master and reopened.hostname == "mailstack-backup"
    with pytest.raises(ValueError, match="does not open"):
        repository_key.open_key(content, "another-password")
    # A fresh salt and nonce each time: sealing the same master key again is another file.
    assert repository_key.seal_key(master, RESTIC_PASSWORD, username="", hostname="")[0] != name


def test_a_damaged_key_file_is_refused_without_running_scrypt_on_its_numbers() -> None:
    fields = json.loads(RESTIC_KEY.read_bytes())
    with pytest.raises(ValueError, match="not a restic key file"):
        repository_key.open_key(b"{}", RESTIC_PASSWORD)
    with pytest.raises(ValueError, match="unusable scrypt parameters"):
        repository_key.open_key(json.dumps(fields | {"N": 2**30}).encode(), RESTIC_PASSWORD)
    with pytest.raises(ValueError, match="unusable scrypt parameters"):
        repository_key.open_key(json.dumps(fields | {"N": 1000}).encode(), RESTIC_PASSWORD)


def test_only_a_password_shaped_like_the_generated_token_gets_the_fast_key() -> None:
    assert repository_key.is_random_token(secrets.token_urlsafe(32))
    assert not repository_key.is_random_token(RESTIC_PASSWORD)
    assert not repository_key.is_random_token("correct horse battery staple " * 3)
