"""TOTP (RFC 6238) over HOTP (RFC 4226): the published test vectors, the drift window, replay,
malformed codes, and the otpauth:// URI an authenticator app scans."""

from __future__ import annotations

import base64
import urllib.parse

import pytest

from mailstack.identity import totp

# The RFCs' key: the ASCII string "12345678901234567890" (SHA-1 rows of RFC 6238).
RFC_KEY = b"12345678901234567890"
RFC_SECRET = base64.b32encode(RFC_KEY).decode()
# RFC 4226 Appendix D: HOTP values for counts 0..9.
RFC4226_CODES = [
    "755224", "287082", "359152", "969429", "338314",
    "254676", "287922", "162583", "399871", "520489",
]  # fmt: skip
# RFC 6238 Appendix B, SHA1 rows: (time, T as hex, 8-digit TOTP).
RFC6238_SHA1 = [
    (59, "0000000000000001", "94287082"),
    (1111111109, "00000000023523EC", "07081804"),
    (1111111111, "00000000023523ED", "14050471"),
    (1234567890, "000000000273EF07", "89005924"),
    (2000000000, "0000000003F940AA", "69279037"),
    (20000000000, "0000000027BC86AA", "65353130"),
]
NOW = 1_700_000_000.0  # any moment will do: the caller passes the time


@pytest.mark.parametrize(("counter", "expected"), list(enumerate(RFC4226_CODES)))
def test_hotp_matches_rfc_4226_appendix_d(counter: int, expected: str) -> None:
    assert totp.hotp(RFC_KEY, counter) == expected


@pytest.mark.parametrize(("now", "step_hex", "expected"), RFC6238_SHA1)
def test_totp_matches_rfc_6238_appendix_b_sha1_rows(now: int, step_hex: str, expected: str) -> None:
    assert totp.time_step(now) == int(step_hex, 16)
    assert totp.code_at(RFC_SECRET, now, digits=8) == expected
    assert totp.verify(RFC_SECRET, expected, now, last_step=0, digits=8) == int(step_hex, 16)


def test_apps_see_six_digits_the_low_end_of_the_eight() -> None:
    assert totp.code_at(RFC_SECRET, 59) == "287082"  # 94287082 mod 10^6


def test_new_secrets_are_160_bit_base32_without_padding_and_never_repeat() -> None:
    secrets = {totp.new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert len(secret) == 32 and "=" not in secret
        assert set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        assert len(totp.secret_bytes(secret)) == totp.SECRET_BYTES


def test_the_current_step_and_one_either_side_are_accepted_for_clock_drift() -> None:
    secret = totp.new_secret()
    step = totp.time_step(NOW)
    for offset in (-1, 0, 1):
        code = totp.code_at(secret, NOW + 30 * offset)
        assert totp.verify(secret, code, NOW, last_step=0) == step + offset


def test_a_code_two_steps_away_is_refused() -> None:
    # A fixed secret and time, so no code of the window happens to equal a farther one's.
    window = {totp.code_at(RFC_SECRET, NOW + 30 * offset) for offset in (-1, 0, 1)}
    for offset in (-2, 2, 10):
        code = totp.code_at(RFC_SECRET, NOW + 30 * offset)
        assert code not in window
        assert totp.verify(RFC_SECRET, code, NOW, last_step=0) is None


def test_a_replayed_code_is_refused_once_its_step_was_accepted() -> None:
    secret = totp.new_secret()
    code = totp.code_at(secret, NOW)
    step = totp.verify(secret, code, NOW, last_step=0)
    assert step == totp.time_step(NOW)
    assert totp.verify(secret, code, NOW, last_step=step) is None
    assert totp.verify(secret, code, NOW + 29, last_step=step) is None


def test_an_older_code_is_refused_after_a_newer_step_was_accepted() -> None:
    # The code of the step before stays in the drift window, but its step is spent.
    secret = totp.new_secret()
    step = totp.time_step(NOW)
    previous = totp.code_at(secret, NOW - 30)
    assert totp.verify(secret, previous, NOW, last_step=step) is None
    assert totp.verify(secret, previous, NOW, last_step=step - 2) == step - 1


def test_a_wrong_code_is_refused() -> None:
    window = {totp.code_at(RFC_SECRET, NOW + 30 * offset) for offset in (-1, 0, 1)}
    right = totp.code_at(RFC_SECRET, NOW)
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    assert wrong not in window
    assert totp.verify(RFC_SECRET, wrong, NOW, last_step=0) is None
    assert totp.verify(RFC_SECRET, "000000", NOW, last_step=0) is None


def test_spaces_as_apps_show_them_are_accepted() -> None:
    # Apps show "123 456"; people type what they see, and a paste may bring a newline.
    secret = totp.new_secret()
    code = totp.code_at(secret, NOW)
    step = totp.time_step(NOW)
    for typed in (f"{code[:3]} {code[3:]}", f" {code} ", f"{code}\n", f"{code[:3]}  {code[3:]}"):
        assert totp.verify(secret, typed, NOW, last_step=0) == step


@pytest.mark.parametrize(
    "typed",
    [
        "12345",  # 5 digits
        "1234567",  # 7 digits
        "12a456",  # a letter
        "",
        "      ",
        "123-456",  # only spaces are forgiven
        "123\t456",
        "１２３４５６",  # full-width digits are digits to str.isdigit, not to us
        "٣٤٥٦٧٨",  # Arabic-Indic digits
        "1" * 10_000,  # bounded work on hostile input
    ],
)
def test_malformed_codes_are_refused(typed: str) -> None:
    secret = totp.new_secret()
    assert totp.normalize_code(typed) is None
    assert totp.verify(secret, typed, NOW, last_step=0) is None


def test_a_malformed_stored_secret_is_an_error_not_a_silent_refusal() -> None:
    with pytest.raises(ValueError, match="base32"):
        totp.verify("not base32!", "123456", NOW, last_step=0)


def test_the_provisioning_uri_follows_the_key_uri_format() -> None:
    uri = totp.provisioning_uri("JBSWY3DPEHPK3PXP", "alice@example.org", "mail.example.org")
    assert uri == (
        "otpauth://totp/mail.example.org:alice@example.org?secret=JBSWY3DPEHPK3PXP"
        "&issuer=mail.example.org&algorithm=SHA1&digits=6&period=30"
    )


def test_the_provisioning_uri_percent_encodes_label_and_issuer() -> None:
    uri = totp.provisioning_uri("JBSWY3DPEHPK3PXP", "Alice Smith/ops?x=1&y#z", "ACME Co & Sons")
    parsed = urllib.parse.urlsplit(uri)
    assert parsed.scheme == "otpauth" and parsed.netloc == "totp"
    # Space is %20 (a '+' would show as a plus in some apps); '/', '?', '&', '#' cannot break
    # out of the label into the path, the query or a fragment.
    assert parsed.path == "/ACME%20Co%20%26%20Sons:Alice%20Smith%2Fops%3Fx%3D1%26y%23z"
    assert parsed.fragment == ""
    query = urllib.parse.parse_qs(parsed.query, strict_parsing=True)
    assert query["issuer"] == ["ACME Co & Sons"]
    assert query["secret"] == ["JBSWY3DPEHPK3PXP"]
    assert "+" not in uri
    issuer, _, account = urllib.parse.unquote(parsed.path[1:]).partition(":")
    assert (issuer, account) == ("ACME Co & Sons", "Alice Smith/ops?x=1&y#z")


def test_unicode_in_the_label_is_utf8_percent_encoded() -> None:
    uri = totp.provisioning_uri("JBSWY3DPEHPK3PXP", "jörg@bücher.example", "Mail")
    assert "/Mail:j%C3%B6rg@b%C3%BCcher.example?" in uri


@pytest.mark.parametrize(
    ("account", "issuer"),
    [("alice:bob", "Mail"), ("alice", "Mail:Evil"), ("", "Mail"), ("alice", ""), ("a\nb", "M")],
)
def test_a_colon_or_control_character_in_the_label_is_refused(account: str, issuer: str) -> None:
    # The format forbids ':' in either part: it would shift where the issuer ends.
    with pytest.raises(ValueError, match=r"without ':'"):
        totp.provisioning_uri("JBSWY3DPEHPK3PXP", account, issuer)


def test_the_uri_of_a_new_secret_gives_the_codes_verify_accepts() -> None:
    # What the app computes from the scanned URI is what the server checks.
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, "alice@example.org", "Mail")
    scanned = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["secret"][0]
    code = totp.hotp(base64.b32decode(scanned + "=" * (-len(scanned) % 8)), totp.time_step(NOW))
    assert totp.verify(secret, code, NOW, last_step=0) == totp.time_step(NOW)
