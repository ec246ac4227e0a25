"""Passkeys (identity.passkeys): both WebAuthn ceremonies against a software authenticator
made here from an EC key (so the checks of fido2's server run on real signatures), and the
rules mailstack adds: storage, the signature counter, hostile answers."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256
from fido2.ctap2 import AttestationObject, AttestedCredentialData, AuthenticatorData

from mailstack.errors import NotFound, UsageError
from mailstack.identity import passkeys
from mailstack.identity.mfa import Owner
from mailstack.identity.passkeys import PasskeyRefused
from tests.unit.fakes import Call, FakeContainers

HOSTNAME = "mail.example.org"
ORIGIN = f"https://{HOSTNAME}"
ALICE = Owner("admin", "alice")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftKey:
    """A security key in software: one credential, a counter, the browser's answers."""

    counter: int = 0
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))
    rp_id: str = HOSTNAME

    def _auth_data(self, with_credential: bool) -> AuthenticatorData:
        flags = AuthenticatorData.FLAG.USER_PRESENT | AuthenticatorData.FLAG.USER_VERIFIED
        credential = None
        if with_credential:
            flags |= AuthenticatorData.FLAG.ATTESTED
            public = ES256.from_cryptography_key(self.key.public_key())
            credential = AttestedCredentialData.create(b"\0" * 16, self.credential_id, public)
        rp_hash = hashlib.sha256(self.rp_id.encode()).digest()
        return AuthenticatorData.create(rp_hash, flags, self.counter, credential or b"")

    @staticmethod
    def _client_data(kind: str, options: str, origin: str) -> bytes:
        challenge = json.loads(options)["publicKey"]["challenge"]
        return json.dumps({"type": kind, "challenge": challenge, "origin": origin}).encode()

    def create(self, options: str, origin: str = ORIGIN) -> str:
        client_data = self._client_data("webauthn.create", options, origin)
        attestation = AttestationObject.create("none", self._auth_data(True), {})
        return json.dumps(
            {
                "id": b64(self.credential_id),
                "clientDataJSON": b64(client_data),
                "attestationObject": b64(bytes(attestation)),
            }
        )

    def get(self, options: str, origin: str = ORIGIN, count: int = 1) -> str:
        self.counter += count
        client_data = self._client_data("webauthn.get", options, origin)
        auth_data = bytes(self._auth_data(False))
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = self.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return json.dumps(
            {
                "id": b64(self.credential_id),
                "clientDataJSON": b64(client_data),
                "authenticatorData": b64(auth_data),
                "signature": b64(signature),
            }
        )


@dataclass
class Table:
    """The passkeys table of one account, answering the module's statements."""

    rows: list[dict[str, str]] = field(default_factory=list)

    def answer(self, call: Call) -> bytes:
        sql, given = call.stdin, call.variables()
        lines = ["account,1"]
        if "INSERT INTO passkeys" in sql:
            if any(row["name"] == given["name"] for row in self.rows):
                return b""
            self.rows.append({**given, "id": str(len(self.rows) + 1)})
            return b"added,1\n"
        if "UPDATE passkeys" in sql:
            for row in self.rows:
                old, new = int(row["sign_count"]), int(given["sign_count"])
                if row["credential_id"] == given["credential_id"] and (
                    old < new or old == new == 0
                ):
                    row["sign_count"] = given["sign_count"]
                    return f"used,{row['name']}\n".encode()
            return b""
        if "DELETE FROM passkeys" in sql:
            kept = [row for row in self.rows if row["name"] != given["name"]]
            removed = len(kept) < len(self.rows)
            self.rows = kept
            return (
                "\n".join(lines + (["removed," + given["name"]] if removed else [])) + "\n"
            ).encode()
        for row in self.rows:
            lines.append(
                f"key,{row['id']},{row['name']},{row['credential_id']},{row['credential']},"
                f"{row['sign_count']},2026-12-06 10:00:00+00,"
            )
        return ("\n".join(lines) + "\n").encode()


def stack() -> tuple[FakeContainers, Table]:
    table = Table()
    return FakeContainers(by_marker=[("passkeys", table.answer)]), table


def registered(fake: FakeContainers, key: SoftKey, name: str = "laptop") -> None:
    ceremony = passkeys.begin_registration(fake, ALICE, HOSTNAME)
    passkeys.finish_registration(
        fake, ALICE, HOSTNAME, name, ceremony.state, key.create(ceremony.options)
    )


def test_a_registered_passkey_signs_in_and_its_counter_is_stored() -> None:
    fake, table = stack()
    key = SoftKey()
    registered(fake, key)
    assert [row["name"] for row in table.rows] == ["laptop"]
    assert table.rows[0]["credential_id"] == b64(key.credential_id)
    ceremony = passkeys.begin_authentication(fake, ALICE, HOSTNAME)
    options = json.loads(ceremony.options)["publicKey"]
    assert options["rpId"] == HOSTNAME
    assert [item["id"] for item in options["allowCredentials"]] == [b64(key.credential_id)]
    proven = passkeys.finish_authentication(
        fake, ALICE, HOSTNAME, ceremony.state, key.get(ceremony.options)
    )
    assert proven.name == "laptop"
    assert table.rows[0]["sign_count"] == "1"


def test_registration_options_name_the_stack_and_exclude_known_keys() -> None:
    fake, _ = stack()
    key = SoftKey()
    registered(fake, key)
    options = json.loads(passkeys.begin_registration(fake, ALICE, HOSTNAME).options)["publicKey"]
    assert options["rp"] == {"id": HOSTNAME, "name": "mailstack"}
    assert options["user"]["name"] == "alice" and options["user"]["id"] != b64(b"alice")
    assert [item["id"] for item in options["excludeCredentials"]] == [b64(key.credential_id)]
    assert len(unb64(options["challenge"])) >= 16
    # The spellings the browser knows (fido2's enums as their values, not their names).
    assert {item["type"] for item in options["pubKeyCredParams"]} == {"public-key"}
    assert {item["alg"] for item in options["pubKeyCredParams"]} >= {-7, -257}
    assert options["authenticatorSelection"] == {"userVerification": "preferred"}
    assert [item["type"] for item in options["excludeCredentials"]] == ["public-key"]


def test_a_passkey_answering_another_site_is_refused() -> None:
    fake, _ = stack()
    key = SoftKey()
    registered(fake, key)
    ceremony = passkeys.begin_authentication(fake, ALICE, HOSTNAME)
    phished = key.get(ceremony.options, origin="https://mail.example.org.evil.test")
    with pytest.raises(PasskeyRefused, match="origin"):
        passkeys.finish_authentication(fake, ALICE, HOSTNAME, ceremony.state, phished)


def test_an_answer_to_another_challenge_is_refused() -> None:
    fake, _ = stack()
    key = SoftKey()
    registered(fake, key)
    first = passkeys.begin_authentication(fake, ALICE, HOSTNAME)
    second = passkeys.begin_authentication(fake, ALICE, HOSTNAME)
    with pytest.raises(PasskeyRefused, match="challenge"):
        passkeys.finish_authentication(fake, ALICE, HOSTNAME, second.state, key.get(first.options))


def test_a_forged_signature_is_refused() -> None:
    fake, _ = stack()
    key = SoftKey()
    registered(fake, key)
    ceremony = passkeys.begin_authentication(fake, ALICE, HOSTNAME)
    impostor = SoftKey(credential_id=key.credential_id)  # the id is public; the key is not
    with pytest.raises(PasskeyRefused, match="signature"):
        passkeys.finish_authentication(
            fake, ALICE, HOSTNAME, ceremony.state, impostor.get(ceremony.options)
        )


def test_a_cloned_key_whose_counter_went_back_is_refused() -> None:
    fake, table = stack()
    key = SoftKey()
    registered(fake, key)
    ceremony = passkeys.begin_authentication(fake, ALICE, HOSTNAME)
    passkeys.finish_authentication(
        fake, ALICE, HOSTNAME, ceremony.state, key.get(ceremony.options, count=5)
    )
    clone = SoftKey(counter=1, key=key.key, credential_id=key.credential_id)
    again = passkeys.begin_authentication(fake, ALICE, HOSTNAME)
    with pytest.raises(PasskeyRefused, match="counter"):
        passkeys.finish_authentication(fake, ALICE, HOSTNAME, again.state, clone.get(again.options))
    assert table.rows[0]["sign_count"] == "5"


def test_another_accounts_passkey_is_refused() -> None:
    fake, _ = stack()
    registered(fake, SoftKey())
    ceremony = passkeys.begin_authentication(fake, ALICE, HOSTNAME)
    stranger = SoftKey()
    with pytest.raises(PasskeyRefused, match="not one of this account's"):
        passkeys.finish_authentication(
            fake, ALICE, HOSTNAME, ceremony.state, stranger.get(ceremony.options)
        )


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "[]",
        "not json",
        '{"id": 5}',
        '{"id": "!!", "clientDataJSON": "x", "authenticatorData": "x", "signature": "x"}',
        json.dumps({"id": "A" * 20_000}),
    ],
)
def test_hostile_answers_are_one_refusal(answer: str) -> None:
    fake, _ = stack()
    registered(fake, SoftKey())
    ceremony = passkeys.begin_authentication(fake, ALICE, HOSTNAME)
    with pytest.raises(PasskeyRefused):
        passkeys.finish_authentication(fake, ALICE, HOSTNAME, ceremony.state, answer)


def test_a_garbled_registration_is_refused_and_nothing_stored() -> None:
    fake, table = stack()
    ceremony = passkeys.begin_registration(fake, ALICE, HOSTNAME)
    answer = json.loads(SoftKey().create(ceremony.options))
    answer["attestationObject"] = b64(b"\xa0")
    with pytest.raises(PasskeyRefused, match="not registered"):
        passkeys.finish_registration(
            fake, ALICE, HOSTNAME, "laptop", ceremony.state, json.dumps(answer)
        )
    assert table.rows == []


def test_a_registration_for_another_site_is_refused() -> None:
    fake, table = stack()
    ceremony = passkeys.begin_registration(fake, ALICE, HOSTNAME)
    key = SoftKey(rp_id="evil.test")
    with pytest.raises(PasskeyRefused):
        passkeys.finish_registration(
            fake, ALICE, HOSTNAME, "laptop", ceremony.state, key.create(ceremony.options)
        )
    assert table.rows == []


def test_a_name_is_checked_before_anything_is_stored() -> None:
    fake, table = stack()
    ceremony = passkeys.begin_registration(fake, ALICE, HOSTNAME)
    with pytest.raises(UsageError, match=r"^NAME: "):
        passkeys.finish_registration(
            fake, ALICE, HOSTNAME, "bad\nname", ceremony.state, SoftKey().create(ceremony.options)
        )
    assert table.rows == []


def test_listing_and_removing() -> None:
    fake, table = stack()
    registered(fake, SoftKey(), "laptop")
    registered(fake, SoftKey(), "yubikey-5")
    assert [key.name for key in passkeys.list_passkeys(fake, ALICE)] == ["laptop", "yubikey-5"]
    passkeys.remove_passkey(fake, ALICE, "laptop")
    assert [row["name"] for row in table.rows] == ["yubikey-5"]
    with pytest.raises(NotFound, match="no passkey named laptop"):
        passkeys.remove_passkey(fake, ALICE, "laptop")


def test_signing_in_without_a_passkey_is_not_found() -> None:
    fake, _ = stack()
    with pytest.raises(NotFound, match="has no passkey"):
        passkeys.begin_authentication(fake, ALICE, HOSTNAME)


def test_values_reach_psql_as_variables_never_in_the_sql() -> None:
    fake, _ = stack()
    key = SoftKey()
    registered(fake, key)
    insert = fake.sent("INSERT INTO passkeys")[0]
    assert b64(key.credential_id) not in insert.stdin
    assert insert.variables()["credential_id"] == b64(key.credential_id)
    assert insert.variables()["owner"] == "alice" and insert.variables()["kind"] == "admin"
