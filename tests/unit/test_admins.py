"""Administrators (mailstack.identity.admins): the rules, and the SQL they send, against the fake
of the Compose adapter. Values travel as psql variables, the password hash on stdin."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mailstack.accounts import names
from mailstack.accounts.passwords import verify_password
from mailstack.errors import MailstackError, UsageError
from mailstack.identity import admins
from tests.unit.fakes import FakeContainers

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Correct-horse-42-battery"

HOSTILE_NAMES = [
    "a'b",
    "x;DROP",
    "x'; DROP TABLE admins; --",
    "alice\n",
    "ali\nce",
    "a b",
    "a\\b",
    "a/b",
    "a" * 65,
    "",
    ".alice",
    "-alice",
    "@example.org",
    "ali\u212ace",  # KELVIN SIGN: lower() would make it an ASCII k
    "al\u0131ce",  # dotless i
    "al\x00ice",
]


def added(*domains: str) -> bytes:
    return b"added,x\n" + b"".join(b"granted,%s\n" % d.encode() for d in domains)


# --- rules -----------------------------------------------------------------------------------


def test_the_name_rule_is_the_tables_check() -> None:
    schema = (ROOT / "mailstack" / "migrations" / "0003_admin.sql").read_text()
    check = re.search(r"CHECK \(name ~ '\^(.*?)\$'\)", schema)
    assert check is not None
    assert names.ADMIN_NAME.pattern == f"^{check.group(1)}\\Z"


@pytest.mark.parametrize("good", ["alice", "ops@example.org", "a", "a" * 64, "x.y_z-1", "0day"])
def test_names_of_the_tables_alphabet_are_accepted(good: str) -> None:
    assert names.admin_name(good) == good


def test_a_name_is_stored_lower_case() -> None:
    assert names.admin_name("Alice@Example.ORG") == "alice@example.org"


@pytest.mark.parametrize("hostile", HOSTILE_NAMES)
def test_hostile_names_are_refused_in_one_line_before_the_database(hostile: str) -> None:
    db = FakeContainers()
    with pytest.raises(UsageError) as refused:
        admins.add_admin(db, hostile, password=PASSWORD)
    assert refused.value.message.startswith("NAME: ")
    assert "\n" not in refused.value.message
    assert "1-64 of letters" in refused.value.message
    assert db.calls == []


@pytest.mark.parametrize("role", ["root", "Admin", "domain admin", "superuser", "", "admin\n"])
def test_a_role_is_admin_or_domain_admin_in_one_line(role: str) -> None:
    db = FakeContainers()
    with pytest.raises(UsageError, match=r"^ROLE: .* is not a role: admin or domain-admin$"):
        admins.add_admin(db, "alice", role, password=PASSWORD)
    assert db.calls == []


def test_the_typed_role_is_stored_with_an_underscore() -> None:
    assert admins.admin_role("domain-admin") == admins.DOMAIN_ADMIN == "domain_admin"
    assert admins.admin_role("admin") == admins.ADMIN


def test_a_domain_admin_needs_a_domain() -> None:
    db = FakeContainers()
    with pytest.raises(UsageError, match=r"^DOMAIN: a domain-admin needs at least one"):
        admins.add_admin(db, "bob", "domain-admin", password=PASSWORD)
    assert db.calls == []


def test_an_admin_takes_no_domain() -> None:
    db = FakeContainers()
    with pytest.raises(UsageError, match=r"^DOMAIN: example\.org: an admin manages every domain"):
        admins.add_admin(db, "alice", "admin", ["example.org"], password=PASSWORD)
    assert db.calls == []


@pytest.mark.parametrize(
    "hostile",
    ["example.org'; --", "exa mple.org", "example.org\n", "-x.org", "exa\u0430mple.org", ""],
)
def test_hostile_domains_are_refused_in_one_line(hostile: str) -> None:
    db = FakeContainers()
    with pytest.raises(UsageError, match=r"^DOMAIN: "):
        admins.add_admin(db, "bob", "domain-admin", [hostile], password=PASSWORD)
    with pytest.raises(UsageError, match=r"^DOMAIN: "):
        admins.grant_domain(db, "bob", hostile)
    assert db.calls == []


def test_a_weak_password_is_refused_before_the_database() -> None:
    db = FakeContainers()
    with pytest.raises(UsageError, match="password is too short"):
        admins.add_admin(db, "alice", password="short1!")
    assert db.calls == []


# --- add -------------------------------------------------------------------------------------


def test_a_generated_password_is_shown_once_and_only_its_hash_travels_on_stdin() -> None:
    db = FakeContainers(answers=[added()])
    result = admins.add_admin(db, "alice")
    assert result.password is not None
    call = db.calls[0]
    stored = re.match(r"\\set password_hash '(\{ARGON2ID\}[^']+)'\n", call.stdin)
    assert stored is not None
    assert verify_password(stored.group(1), result.password)
    assert all(stored.group(1) not in argument for argument in call.argv)
    assert result.password not in call.stdin and result.password not in " ".join(call.argv)
    assert result.password in str(result) and "shown once" in str(result)
    assert result.password not in repr(result)


def test_a_given_password_is_hashed_and_never_shown() -> None:
    db = FakeContainers(answers=[added()])
    result = admins.add_admin(db, "alice", password=PASSWORD)
    assert result.password is None
    assert PASSWORD not in str(result)
    assert PASSWORD not in db.calls[0].stdin and PASSWORD not in " ".join(db.calls[0].argv)


def test_every_value_travels_as_a_psql_variable() -> None:
    db = FakeContainers(answers=[added("example.net", "example.org")])
    result = admins.add_admin(
        db, "Bob", "domain-admin", ["example.org", "Example.NET", "example.org"], PASSWORD
    )
    assert db.variables() == {
        "ON_ERROR_STOP": "1",
        "name": "bob",
        "role": "domain_admin",
        "domains": "example.net,example.org",
    }
    sql = db.calls[0].stdin
    assert "bob" not in sql and "example.org" not in sql
    assert ":'name'" in sql and ":'domains'" in sql
    assert result.domains == ("example.net", "example.org")
    assert str(result).startswith("added domain-admin bob of example.net, example.org")


def test_an_unknown_domain_is_refused_in_one_line() -> None:
    db = FakeContainers(answers=[b"missing,nowhere.test\n"])
    with pytest.raises(UsageError) as refused:
        admins.add_admin(db, "bob", "domain-admin", ["example.org", "nowhere.test"], PASSWORD)
    assert refused.value.message == "DOMAIN: 'nowhere.test' is not a mail domain of this stack"
    # The one statement inserts the admin only when no domain is missing.
    assert "WHERE NOT EXISTS (SELECT 1 FROM missing)" in db.calls[0].stdin


def test_an_existing_name_is_refused() -> None:
    db = FakeContainers(answers=[b"taken,alice\n"])
    with pytest.raises(UsageError, match=r"^administrator alice already exists$"):
        admins.add_admin(db, "alice", password=PASSWORD)


def test_an_unexpected_answer_is_an_error_not_a_success() -> None:
    db = FakeContainers(answers=[b"added\n"])
    with pytest.raises(MailstackError, match="unexpected answer"):
        admins.add_admin(db, "alice", password=PASSWORD)


# --- list ------------------------------------------------------------------------------------


def test_the_list_shows_role_domains_and_second_factor() -> None:
    db = FakeContainers(
        answers=[
            b"alice,admin,t,2026-01-02T03:04:05Z,,confirmed\n"
            b'bob,domain_admin,f,2026-01-03T00:00:00Z,"example.net,example.org",pending\n'
            b"carol,domain_admin,t,2026-01-04T00:00:00Z,,none\n"
        ]
    )
    alice, bob, carol = admins.list_admins(db)
    assert alice == admins.Admin("alice", "admin", (), "confirmed", True, "2026-01-02T03:04:05Z")
    assert bob.domains == ("example.net", "example.org") and not bob.active
    assert bob.mfa == admins.MFA_PENDING
    assert str(alice).startswith("alice  admin of every domain  second factor: confirmed")
    assert "bob (inactive)  domain-admin of example.net, example.org" in str(bob)
    assert "enrolment not confirmed" in str(bob)
    assert "domain-admin of no domain  second factor: not enrolled" in str(carol)


# --- remove ----------------------------------------------------------------------------------


def test_removal_says_what_went_with_it() -> None:
    db = FakeContainers(
        answers=[
            b"removed,domain_admin\ndomain,example.org\ntokens,2\nmfa,1\nadmins_left,1\n",
        ]
    )
    removal = admins.remove_admin(db, "bob")
    assert removal == admins.AdminRemoval("bob", "domain_admin", ("example.org",), 2, True, 1)
    assert str(removal) == (
        "removed domain-admin bob of example.org with 2 API token(s) and its second factor"
    )
    assert db.variables()["name"] == "bob"


def test_removing_the_last_admin_is_allowed_and_says_only_root_is_left() -> None:
    db = FakeContainers(answers=[b"removed,admin\ntokens,0\nmfa,0\nadmins_left,0\n"])
    text = str(admins.remove_admin(db, "alice"))
    assert text.startswith("removed admin alice\n")
    assert "no active administrator is left" in text and "mailstack admin add NAME" in text


def test_removing_an_admin_while_others_remain_has_no_warning() -> None:
    db = FakeContainers(answers=[b"removed,admin\ntokens,0\nmfa,0\nadmins_left,2\n"])
    assert str(admins.remove_admin(db, "alice")) == "removed admin alice"


def test_removing_an_unknown_admin_is_refused() -> None:
    db = FakeContainers(answers=[b"tokens,0\nmfa,0\nadmins_left,1\n"])
    with pytest.raises(UsageError, match=r"^administrator nobody does not exist$"):
        admins.remove_admin(db, "nobody")


# --- grant / revoke --------------------------------------------------------------------------


def test_granting_a_domain_to_a_domain_admin() -> None:
    db = FakeContainers(answers=[b"role,domain_admin\ndomain,example.net\nadded,example.net\n"])
    grant = admins.grant_domain(db, "bob", "Example.NET")
    assert str(grant) == "bob now manages example.net"
    assert db.variables()["domain"] == "example.net"


def test_granting_a_domain_held_already_changes_nothing() -> None:
    db = FakeContainers(answers=[b"role,domain_admin\ndomain,example.net\n"])
    assert str(admins.grant_domain(db, "bob", "example.net")) == "bob already manages example.net"


def test_a_domain_is_never_granted_to_an_admin() -> None:
    db = FakeContainers(answers=[b"role,admin\ndomain,example.net\n"])
    with pytest.raises(UsageError, match="alice is an admin and manages every domain"):
        admins.grant_domain(db, "alice", "example.net")
    assert "WHERE t.role = 'domain_admin'" in db.calls[0].stdin


def test_granting_an_unknown_domain_is_refused_in_one_line() -> None:
    db = FakeContainers(answers=[b"role,domain_admin\n"])
    with pytest.raises(UsageError, match=r"^DOMAIN: 'nowhere\.test' is not a mail domain"):
        admins.grant_domain(db, "bob", "nowhere.test")


def test_granting_to_an_unknown_admin_is_refused() -> None:
    db = FakeContainers(answers=[b"domain,example.net\n"])
    with pytest.raises(UsageError, match=r"^administrator nobody does not exist$"):
        admins.grant_domain(db, "nobody", "example.net")


def test_revoking_a_domain_locks_the_admin_first_in_one_transaction() -> None:
    db = FakeContainers(
        answers=[
            b"locked,bob\nrole,domain_admin\nheld,example.net\nheld,example.org\n"
            b"revoked,example.net\n"
        ]
    )
    revoked = admins.revoke_domain(db, "bob", "example.net")
    assert str(revoked) == "bob no longer manages example.net"
    call = db.calls[0]
    assert "--single-transaction" in call.argv
    assert call.stdin.index("FOR UPDATE") < call.stdin.index("DELETE FROM admin_domains")


def test_the_last_domain_of_a_domain_admin_is_never_revoked() -> None:
    db = FakeContainers(answers=[b"locked,bob\nrole,domain_admin\nheld,example.org\n"])
    with pytest.raises(UsageError, match=r"example\.org is the only domain bob manages") as refused:
        admins.revoke_domain(db, "bob", "example.org")
    assert "mailstack admin remove bob" in (refused.value.hint or "")
    assert "(SELECT count(*) FROM held) > 1" in db.calls[0].stdin


def test_revoking_a_domain_not_held_is_refused() -> None:
    db = FakeContainers(answers=[b"locked,bob\nrole,domain_admin\nheld,example.org\n"])
    with pytest.raises(UsageError, match=r"^bob does not manage example\.net$"):
        admins.revoke_domain(db, "bob", "example.net")


# --- reset-mfa -------------------------------------------------------------------------------


def test_reset_mfa_deletes_the_second_factor_and_says_so() -> None:
    db = FakeContainers(answers=[b"admin,alice\nremoved,7\n"])
    reset = admins.reset_mfa(db, "alice")
    assert reset.had_factor
    assert "the next sign-in enrols a new one" in str(reset)
    assert "DELETE FROM mfa_totp WHERE admin = :'name'" in db.calls[0].stdin


def test_reset_mfa_without_a_second_factor_says_there_was_none() -> None:
    db = FakeContainers(answers=[b"admin,alice\n"])
    assert str(admins.reset_mfa(db, "alice")) == "alice has no second factor; nothing to reset"


def test_reset_mfa_of_an_unknown_admin_is_refused() -> None:
    with pytest.raises(UsageError, match=r"^administrator nobody does not exist$"):
        admins.reset_mfa(FakeContainers(), "nobody")


# --- the admin service's constraints ---------------------------------------------------------


def test_the_module_imports_nothing_of_pydantic_typer_or_rich() -> None:
    # The admin container runs it on Debian's own libraries (no pydantic 2).
    probe = (
        "import sys, mailstack.identity.admins; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'typer', 'rich'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"
