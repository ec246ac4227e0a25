"""mailstack.accounts.names: the one set of rules for what may enter the mail directory, whoever
writes it (CLI, accounts import, the core itself)."""

from __future__ import annotations

import pytest

from mailstack.accounts import names
from mailstack.errors import UsageError


def test_mailboxes_and_sources_are_stored_lower_case_destinations_keep_their_local_part() -> None:
    assert names.mailbox("Bob@Example.ORG") == "bob@example.org"
    assert names.source("Sales@Example.ORG") == "sales@example.org"
    assert names.source("@Example.ORG") == "@example.org"
    # Outside the stack a local part may be case-sensitive (RFC 5321): kept as written.
    assert names.address("Friend@Elsewhere.Example") == "Friend@elsewhere.example"
    assert names.domain("Bücher.Example.") == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("rule", "value", "reason"),
    [
        (names.domain, "exаmple.org", "mixes Cyrillic and Latin letters in one label"),
        (names.mailbox, "a/b@example.org", "'/' in the local part"),
        (names.source, "@not a domain", "is not a catch-all"),
        (names.address, "no-at-sign", "is not a mail address"),
        (names.password_hash, "{PLAIN}secret", "uses the weak scheme {PLAIN}"),
        (names.password_hash, "hunter2", "is not a password hash"),
        (names.app_password_name, "-phone", "is not accepted: 1-64 of letters"),
        (names.lookup_key, "ABCDEF12", "is not a lookup key"),
    ],
)
def test_each_rule_says_why_a_value_is_refused(rule: names.Rule, value: str, reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        rule(value)
    assert reason in str(refused.value)


def test_require_is_one_line_naming_the_argument_and_the_value() -> None:
    with pytest.raises(UsageError) as refused:
        names.require("ADDRESS", names.mailbox, "a/b@example.org\n")
    message = refused.value.message
    assert message.startswith("ADDRESS: 'a/b@example.org\\n' ") and "\n" not in message


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        (names.app_password_name, "phone\n"),
        (names.lookup_key, "0a1b2c3d\n"),
        (names.domain, "example.org\n"),
        (names.mailbox, "bob@example.org\n"),
        (names.password_hash, "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA\n"),
    ],
)
def test_a_trailing_newline_is_refused_by_every_rule(rule: names.Rule, value: str) -> None:
    # A regular expression's '$' also matches before a final newline: every rule anchors at
    # the very end of the value instead.
    with pytest.raises(ValueError):
        rule(value)
