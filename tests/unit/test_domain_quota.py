"""A domain's quota (accounts.domain_quota): the rule's figures, the refusals' lines, and the
SQL's shape (values as variables, the domain's row locked in a statement before the sum, in
one transaction), for the domain quota itself and for the mailbox writes it bounds."""

from __future__ import annotations

import re

import pytest

from mailstack.accounts import directory, domain_quota, sync
from mailstack.accounts.domain_quota import OverDomainQuota, mailbox_refusal
from mailstack.accounts.syncplan import Snapshot
from mailstack.api import domains, operations
from mailstack.errors import InUse, NotFound, UsageError
from mailstack.identity.principal import DOMAIN_ADMIN, ROOT, Principal
from mailstack.resources import migrations_dir
from tests.unit.fakes import FakeContainers

HASH = "{ARGON2ID}$argon2id$v=19$m=32768,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"
G = 1 << 30
M = 1 << 20
DANA = Principal("admin:dana", DOMAIN_ADMIN, frozenset({"a.test"}))


# --- the rule's figures (pure) -----------------------------------------------------------------


def test_without_a_domain_quota_anything_goes_even_none() -> None:
    assert mailbox_refusal("a.test", 0, 0, 100 * G) is None
    assert mailbox_refusal("a.test", 5 * G, 0, 100 * G) is None


def test_a_new_mailbox_within_the_domain_quota_is_allowed_up_to_the_last_byte() -> None:
    assert mailbox_refusal("a.test", 3 * G, 10 * G, 7 * G) is None


def test_a_new_mailbox_over_the_domain_quota_is_refused_with_the_figures() -> None:
    refusal = mailbox_refusal("a.test", 5 * G, 10 * G, 7 * G)
    assert isinstance(refusal, OverDomainQuota) and isinstance(refusal, InUse)  # a 409
    assert refusal.message == (
        "quota: 5G would give a.test's mailboxes 12G in all, over its domain quota of 10G "
        "(3G left); nothing was changed"
    )
    assert refusal.hint == (
        "an administrator may raise the domain quota: mailstack domain quota a.test SIZE"
    )


def test_a_changed_mailbox_counts_its_own_old_quota_out_and_says_how_far_it_may_go() -> None:
    # 8G allocated, 1G of it this mailbox's: 5G gives 12G in all; it may have up to 3G.
    refusal = mailbox_refusal("a.test", 5 * G, 10 * G, 8 * G, current=1 * G)
    assert refusal is not None
    assert refusal.message == (
        "quota: 5G would give a.test's mailboxes 12G in all, over its domain quota of 10G "
        "(2G left, at most 3G for this mailbox); nothing was changed"
    )
    assert mailbox_refusal("a.test", 3 * G, 10 * G, 8 * G, current=1 * G) is None


def test_lowering_a_mailbox_is_never_refused_for_the_total_so_an_overfull_domain_comes_down() -> (
    None
):
    assert mailbox_refusal("a.test", 2 * G, 10 * G, 14 * G, current=4 * G) is None


def test_none_is_refused_under_a_domain_quota_even_when_it_lowers_nothing() -> None:
    refusal = mailbox_refusal("a.test", 0, 10 * G, 4 * G, current=1 * G)
    assert type(refusal) is UsageError  # bad input: a 400
    assert refusal.message == (
        "quota: none, but a mailbox of a.test needs a quota within its domain quota of 10G "
        "(6G left, at most 7G for this mailbox); nothing was changed"
    )


def test_the_stacks_default_is_named_when_it_is_what_does_not_fit() -> None:
    refusal = mailbox_refusal("a.test", 2 * G, 10 * M, 4 * M, default=True)
    assert refusal is not None
    assert refusal.message.startswith(
        "quota: the stack's default of 2G (mailboxes.default_quota) would give a.test's "
        "mailboxes 2G in all"
    )
    unlimited = mailbox_refusal("a.test", 0, 10 * M, 0, default=True)
    assert unlimited is not None
    assert unlimited.message.startswith(
        "quota: the stack's default (mailboxes.default_quota) is none, but a mailbox of a.test"
    )


@pytest.mark.parametrize(
    ("typed", "expected"), [("10G", 10 * G), ("none", 0), ("NONE", 0), ("0", 0), ("500M", 500 * M)]
)
def test_a_domain_quota_is_a_size_or_none(typed: str, expected: int) -> None:
    assert domain_quota.parse_quota("SIZE", typed) == expected


def test_a_bad_domain_quota_is_one_line_naming_the_argument() -> None:
    with pytest.raises(UsageError) as refused:
        domain_quota.parse_quota("quota", "lots")
    assert refused.value.message == (
        "quota: 'lots' is not a size (a number with an optional K, M, G or T, e.g. 2G), or none"
    )


# --- the SQL: values as variables, the lock first, one transaction ---------------------------------


def _statements(sql: str) -> list[str]:
    return [statement.strip() for statement in sql.split(";") if statement.strip()]


def _locks_first_then_sums(stdin: str) -> None:
    """The domain's row is locked by a statement of its own before the one that sums (a
    lock inside the summing statement would leave it reading a snapshot from before the
    wait), and the values are variables."""
    sql = "\n".join(line for line in stdin.splitlines() if not line.startswith("\\set "))
    statements = _statements(sql)
    assert statements[0] == "SELECT 'locked', name FROM domains WHERE name = :'domain' FOR UPDATE"
    assert "sum(quota_bytes)" not in statements[0]
    assert "sum(quota_bytes)" in statements[1]


def test_setting_a_domain_quota_locks_the_domain_then_checks_in_one_transaction() -> None:
    db = FakeContainers(answers=[b"locked,a.test\nresult,t,1,0,3221225472,0\n"])
    change = domain_quota.set_quota(db, "a.test", 10 * G)
    assert str(change) == "domain quota of a.test: none -> 10G (3G allocated to its mailboxes)"
    call = db.calls[0]
    assert "--single-transaction" in call.argv
    assert (db.variables()["domain"], db.variables()["quota_bytes"]) == ("a.test", str(10 * G))
    assert "a.test" not in call.stdin and str(10 * G) not in call.stdin
    _locks_first_then_sums(call.stdin)


def test_lowering_a_domain_quota_below_its_allocation_is_refused_with_the_figures() -> None:
    db = FakeContainers(answers=[b"locked,a.test\nresult,t,0,10737418240,7516192768,0\n"])
    with pytest.raises(OverDomainQuota) as refused:
        domain_quota.set_quota(db, "a.test", 5 * G)
    assert refused.value.message == (
        "quota: 5G is below the 7G a.test's mailboxes already hold; give at least 7G, or "
        "lower their quotas first; nothing was changed"
    )


def test_a_domain_quota_over_unlimited_mailboxes_is_refused() -> None:
    db = FakeContainers(answers=[b"locked,a.test\nresult,t,0,0,1073741824,2\n"])
    with pytest.raises(OverDomainQuota, match=r"2 of its mailboxes have no quota"):
        domain_quota.set_quota(db, "a.test", 5 * G)


def test_the_quota_of_an_unknown_domain_is_not_found() -> None:
    db = FakeContainers(answers=[b"result,f,0,0,0,0\n"])
    with pytest.raises(NotFound, match=r"^domain nowhere.test does not exist$"):
        domain_quota.set_quota(db, "nowhere.test", G)
    with pytest.raises(NotFound):
        domain_quota.show_quota(FakeContainers(), "nowhere.test")


def test_showing_a_domain_quota_gives_what_is_allocated_and_left() -> None:
    db = FakeContainers(answers=[b"quota,10737418240,3221225472,3,0\n"])
    shown = domain_quota.show_quota(db, "a.test")
    assert str(shown) == ("a.test: domain quota 10G; 3G allocated to 3 mailbox(es), 7G left")


def test_adding_a_mailbox_locks_its_domain_first_and_checks_in_the_insert() -> None:
    db = FakeContainers(answers=[b"locked,a.test\nresult,1,t,f,10737418240,0\n"])
    directory.add_mailbox(db, "bob@a.test", HASH, 2 * G)
    call = db.calls[0]
    assert "--single-transaction" in call.argv
    assert db.variables()["quota_bytes"] == str(2 * G)
    assert str(2 * G) not in call.stdin
    _locks_first_then_sums(call.stdin)
    insert = _statements(call.stdin)[-1]
    assert "used.allocated + CAST(:'quota_bytes' AS bigint) <= dom.quota_bytes" in insert


def test_a_refused_add_says_the_line_from_the_databases_figures() -> None:
    db = FakeContainers(answers=[b"locked,a.test\nresult,0,t,f,10485760,4194304\n"])
    with pytest.raises(OverDomainQuota) as refused:
        directory.add_mailbox(db, "bob@a.test", HASH, 8 * M)
    assert refused.value.message == (
        "quota: 8M would give a.test's mailboxes 12M in all, over its domain quota of 10M "
        "(6M left); nothing was changed"
    )
    # An existing address is still "already exists", whatever its quota.
    db = FakeContainers(answers=[b"locked,a.test\nresult,0,t,t,10485760,4194304\n"])
    with pytest.raises(UsageError, match="already exists"):
        directory.add_mailbox(db, "bob@a.test", HASH, 8 * M)


def test_a_mailbox_quota_change_locks_the_domain_then_the_mailbox() -> None:
    db = FakeContainers(answers=[b"locked,a.test\nresult,t,0,1048576,10485760,10485760\n"])
    with pytest.raises(OverDomainQuota, match=r"at most 1M for this mailbox"):
        directory.set_mailbox_quota(db, "Bob@a.test", 5 * M)
    call = db.calls[0]
    assert "--single-transaction" in call.argv
    variables = db.variables()
    assert (variables["address"], variables["domain"]) == ("bob@a.test", "a.test")
    assert variables["quota_bytes"] == str(5 * M)
    _locks_first_then_sums(call.stdin)
    assert "WHERE address = :'address' FOR UPDATE" in _statements(call.stdin)[1]


# --- the API: who may set it, and its statuses ---------------------------------------------------


def test_a_domain_administrator_may_not_set_its_domain_quota() -> None:
    db = FakeContainers()
    with pytest.raises(operations.ApiError) as refused:
        domains.set_domain_quota(db, DANA, "a.test", "1T")
    assert (refused.value.status, refused.value.message) == (
        403,
        "only an administrator may do this",
    )
    assert db.calls == []


def test_an_administrator_sets_it_and_a_refusal_below_the_allocation_is_409() -> None:
    db = FakeContainers(answers=[b"locked,a.test\nresult,t,1,0,0,0\n"])
    assert domains.set_domain_quota(db, ROOT, "a.test", "10G") == {
        "name": "a.test",
        "quota_bytes": 10 * G,
        "previous_quota_bytes": 0,
        "allocated_bytes": 0,
    }
    db = FakeContainers(answers=[b"locked,a.test\nresult,t,0,0,7516192768,0\n"])
    with pytest.raises(operations.ApiError) as refused:
        domains.set_domain_quota(db, ROOT, "a.test", "5G")
    assert refused.value.status == 409
    with pytest.raises(operations.ApiError) as bad:
        domains.set_domain_quota(FakeContainers(), ROOT, "a.test", "lots")
    assert bad.value.status == 400 and bad.value.message.startswith("quota: 'lots'")


def test_an_api_add_over_the_domain_quota_is_409_and_none_under_it_is_400() -> None:
    over = FakeContainers(by_marker=[("INSERT INTO mailboxes", b"result,0,t,f,10485760,0\n")])
    with pytest.raises(operations.ApiError) as refused:
        operations.create_mailbox(over, DANA, "bob@a.test", "Correct-horse-42-battery", None, "2G")
    assert refused.value.status == 409
    assert refused.value.message.startswith("quota: the stack's default of 2G")
    none = FakeContainers(by_marker=[("INSERT INTO mailboxes", b"result,0,t,f,10485760,0\n")])
    with pytest.raises(operations.ApiError) as refused:
        operations.create_mailbox(none, DANA, "bob@a.test", "Correct-horse-42-battery", "0", "2G")
    assert refused.value.status == 400
    assert refused.value.message.startswith("quota: none, but a mailbox of a.test needs a quota")


def test_the_admin_role_gets_only_the_right_to_set_a_domains_quota() -> None:
    """0015 grants the admin service's role UPDATE of quota_bytes on domains (PATCH
    /domains/{name}) and nothing else; FOR UPDATE needs no more than that."""
    sql = re.sub(r"--[^\n]*", "", (migrations_dir() / "0015_domain_quota.sql").read_text())
    grants = [" ".join(s.split()) for s in sql.split(";") if s.strip().startswith("GRANT")]
    assert grants == ["GRANT UPDATE (quota_bytes) ON domains TO mailstack_admin"]


# --- accounts import: held to the domain quotas too --------------------------------------------


def test_an_import_over_a_domain_quota_is_refused_in_one_line_before_anything_is_sent() -> None:
    quotas = {"a.test": 10 * M}
    assert domain_quota.import_refusal("f.yaml", quotas, {"x@a.test": 4 * M, "y@b.test": 0}) is None
    over = domain_quota.import_refusal("f.yaml", quotas, {"x@a.test": 6 * M, "y@a.test": 6 * M})
    assert over is not None and over.message == (
        "f.yaml: mailboxes: its mailboxes' quotas come to 12M, over a.test's domain quota of "
        "10M; nothing was changed"
    )
    unlimited = domain_quota.import_refusal("f.yaml", quotas, {"x@a.test": 0})
    assert unlimited is not None and "1 of its mailboxes have no quota" in unlimited.message


def test_the_import_transaction_fails_in_the_database_too_when_a_domain_ends_over() -> None:
    # The guard runs after every write of the import and before its answer: a change made
    # meanwhile cannot leave a domain over its quota either.
    db = FakeContainers(answers=[b"applied,0\n"])
    sync.apply(db, Snapshot())
    applied = db.calls[0].stdin
    assert "--single-transaction" in db.calls[0].argv
    guard = applied.index(domain_quota.IMPORT_GUARD)
    assert applied.rindex("INSERT INTO mailboxes") < guard < applied.index("'applied'")
    assert "RAISE EXCEPTION" in domain_quota.IMPORT_GUARD


def test_a_domain_listing_gets_each_domains_quota_and_allocation_from_a_query_of_its_own() -> None:
    db = FakeContainers(answers=[b"quota,a.test,10737418240,3221225472\nquota,b.test,0,0\n"])
    listed = [directory.Domain("a.test", True, 2, "2026-01-02T03:04:05Z")]
    (shown,) = domain_quota.with_quotas(db, listed)
    assert (shown.quota_bytes, shown.allocated_bytes) == (10 * G, 3 * G)
    assert str(shown) == "a.test  2 mailbox(es), quota 10G, 3G allocated"
    assert domain_quota.with_quotas(FakeContainers(), []) == []  # nothing to ask
