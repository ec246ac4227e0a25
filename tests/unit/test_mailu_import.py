"""`accounts import --from mailu`: a Mailu config-export read as the directory, merged into it,
and the hashes it brings verified as Dovecot verifies them."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
import yaml

from mailstack.accounts import mailu, passwords
from mailstack.accounts.syncplan import MailboxState, Snapshot, diff, merged
from mailstack.errors import UsageError
from tests.unit.test_cli import invoke

PASSWORD = "Mailu-horse-42-battery"
DEFAULT_QUOTA = 2 * 1024**3


def mailu_hash(plain: str, salt: str) -> str:
    """A hash as Mailu stores it (passlib's bcrypt / sha512_crypt: crypt(3) strings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # deprecated: imported where its warning is silenced

        hashed = crypt.crypt(plain, salt)
    assert hashed is not None and hashed.startswith(salt[:3])
    return hashed


BCRYPT = mailu_hash(PASSWORD, "$2b$10$abcdefghijklmnopqrstuv")  # how Mailu stores a password
SHA512 = mailu_hash(PASSWORD, "$6$saltsaltsalt$")


def export(**changes: Any) -> dict[str, Any]:
    """Mailu's config-export --secrets, as its docs/cli.rst describes it."""
    data: dict[str, Any] = {
        "domain": [{"name": "example.com", "alternatives": ["alternative.tld"]}],
        "user": [
            {"email": "ann@example.com", "password": BCRYPT, "quota_bytes": 1000000000},
            {"email": "ben@example.com", "password": SHA512, "enabled": False},
            {
                "email": "cid@example.com",
                "password": "$pbkdf2-sha512$25000$c2FsdA$aGFzaA",
                "forward_enabled": True,
                "forward_destination": ["cid@remote.example"],
                "reply_enabled": False,
                "tokens": [{"id": 1, "password": "$5$rounds=1$abc$def"}],
            },
        ],
        "alias": [
            {"email": "team@example.com", "destination": ["ann@example.com", "ben@example.com"]},
            {"email": "sales%@example.com", "destination": ["ann@example.com"], "wildcard": True},
        ],
        "relay": [{"name": "relay.example.com", "smtp": "mx.example.com"}],
    }
    data.update(changes)
    return data


def read(data: dict[str, Any], *, as_json: bool = False) -> mailu.MailuExport:
    raw = (json.dumps(data) if as_json else yaml.safe_dump(data)).encode()
    return mailu.read_export(raw, "mailu.yaml", DEFAULT_QUOTA)


def test_an_export_becomes_domains_alias_domains_mailboxes_and_aliases() -> None:
    found = read(export())
    snapshot = found.snapshot
    assert snapshot.domains == {"example.com": True}
    assert snapshot.alias_domains == {"alternative.tld": "example.com"}
    ann, ben, cid = (snapshot.mailboxes[f"{n}@example.com"] for n in ("ann", "ben", "cid"))
    assert ann == MailboxState("{BLF-CRYPT}" + BCRYPT, 1000000000, True)
    assert ben == MailboxState("{SHA512-CRYPT}" + SHA512, DEFAULT_QUOTA, False)
    assert cid.password_hash.startswith("{ARGON2ID}$argon2id$")  # unusable until reset
    assert not passwords.verify_password(cid.password_hash, PASSWORD)
    assert passwords.is_password_hash(cid.password_hash)
    assert cid.password_hash != read(export()).snapshot.mailboxes["cid@example.com"].password_hash
    assert snapshot.aliases == {
        "team@example.com": frozenset({"ann@example.com", "ben@example.com"})
    }
    assert found.needs_password == ("cid@example.com",)


def test_what_has_no_place_here_is_named_not_dropped() -> None:
    notes = read(export()).notes
    text = "\n".join(notes)
    assert "mailbox passwd cid@example.com" in text
    assert (
        "cid@example.com: forwarding" in text and "cid@example.com: authentication tokens" in text
    )
    assert "an auto-reply" not in text  # reply_enabled: false is nothing to carry
    assert "sales%@example.com: a wildcard alias" in text
    assert "relay.example.com: a relayed domain" in text


def test_json_exports_and_comma_separated_destinations_read_the_same() -> None:
    data = export(alias=[{"email": "team@example.com", "destination": "ann@example.com, b@x.org"}])
    snapshot = read(data, as_json=True).snapshot
    assert snapshot.aliases["team@example.com"] == {"ann@example.com", "b@x.org"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"user": [{"email": "not an address", "password": BCRYPT}]}, "user[0]: email: 'not an"),
        ({"user": [{"email": "x@elsewhere.org"}]}, "user x@elsewhere.org: its domain elsewhere"),
        ({"user": "ann"}, "user: must be a list of objects"),
        ({"user": [{"email": "a@example.com", "quota_bytes": -1}]}, "quota_bytes: '-1'"),
        ({"user": [{"email": "a@example.com", "enabled": "yes"}]}, "enabled: 'yes' is not"),
        ({"alias": [{"email": "t@example.com", "destination": []}]}, "needs at least one"),
        ({"domain": [{"name": "a\nb.com"}]}, "domain[0]: name:"),
    ],
)
def test_bad_entries_are_one_line_naming_object_and_key(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError) as refused:
        read(export(**changes))
    assert message in refused.value.message and "\n" not in refused.value.message
    assert PASSWORD not in refused.value.message


def test_a_file_that_is_no_mailu_export_says_how_to_make_one() -> None:
    with pytest.raises(UsageError) as refused:
        mailu.read_export(b"version: 1\nmailboxes: []\n", "accounts.yaml", DEFAULT_QUOTA)
    assert "is not a Mailu export" in refused.value.message
    assert refused.value.hint and "config-export --secrets" in refused.value.hint


def test_the_import_adds_and_updates_and_removes_nothing() -> None:
    current = Snapshot(
        domains={"example.com": True, "here.org": True},
        mailboxes={
            "ann@example.com": MailboxState("{ARGON2ID}$argon2id$old", 5, True),
            "zoe@here.org": MailboxState("{ARGON2ID}$argon2id$z", 5, True),
        },
        aliases={"info@here.org": frozenset({"zoe@here.org"})},
    )
    changes = diff(current, merged(current, read(export()).snapshot))
    assert not [change for change in changes if change.op == "-"]
    assert {(c.op, c.kind, c.key) for c in changes} >= {
        ("~", "mailbox", "ann@example.com"),
        ("+", "mailbox", "cid@example.com"),
        ("+", "alias domain", "alternative.tld"),
    }


def test_imported_crypt_hashes_sign_in_on_the_web_as_in_dovecot() -> None:
    for stored in ("{BLF-CRYPT}" + BCRYPT, "{SHA512-CRYPT}" + SHA512):
        assert passwords.verify_password(stored, PASSWORD)
        assert not passwords.verify_password(stored, PASSWORD + "x")
    assert not passwords.verify_password("{MD5-CRYPT}$1$abc$def", PASSWORD)


def test_an_unknown_source_format_is_one_line(tmp_path: Any) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("domain: []\n")
    code, text = invoke(
        "accounts", "import", str(path), "--from", "mailcow", "--dir", str(tmp_path)
    )
    assert code == 2 and "--from: 'mailcow' is not mailstack or mailu" in text
    assert "Traceback" not in text


def test_a_second_import_keeps_a_password_set_here_since() -> None:
    found = read(export())
    reset = MailboxState(passwords.hash_password(PASSWORD), DEFAULT_QUOTA, True)
    current = found.onto(Snapshot())
    current = merged(current, Snapshot(mailboxes={"cid@example.com": reset}))
    again = read(export()).onto(current)  # a new random hash for cid in this export
    assert again.mailboxes["cid@example.com"].password_hash == reset.password_hash
    assert not [change for change in diff(current, again) if change.key == "cid@example.com"]
