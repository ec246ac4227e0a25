"""The REST API's alias domains and sender grants scoped by role (api.aliasdomains): both
sides of an alias domain and of a grant must be the caller's, a refusal names the domain
asked about (never the target of another's alias domain) the same whether it exists or not,
a domain administrator cannot claim a name of the world, listings are cut to what the caller
owns, the core's refusals keep their statuses, and the grants the admin role needs are
exactly the adds' (0012)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailstack.accounts import names
from mailstack.api import aliasdomains
from mailstack.api.operations import ApiError
from mailstack.errors import Forbidden
from mailstack.identity.principal import DOMAIN_ADMIN, ROOT, Principal
from mailstack.resources import migrations_dir
from mailstack.runtime import jobqueue, jobs
from mailstack.stack import stackfiles
from mailstack.stack.stackdir import Stack, StackDir
from tests.unit.fakes import Call, FakeContainers

DANA = Principal("token:dana-ci", DOMAIN_ADMIN, frozenset({"a.test"}))
STAMP = "2026-12-06T12:00:00Z"
ALIAS_DOMAINS = "FROM alias_domains ORDER BY name"
DOMAINS = "FROM domains d LEFT JOIN mailboxes"
SENDERS = "SELECT sender, login FROM sender_permissions"
WRITES = ("INSERT INTO alias_domains", "INSERT INTO sender_permissions", "DELETE FROM")


def _refusal(call: object) -> ApiError:
    with pytest.raises(ApiError) as refused:
        call()  # type: ignore[operator]
    return refused.value


def _forbidden(domain: str) -> tuple[int, str]:
    return 403, f"{domain} is not a domain you manage"


def _wrote(fake: FakeContainers) -> bool:
    return any(marker in call.text for call in fake.calls for marker in WRITES)


def _world(*alias_rows: str, domains: str = "a.test,b.test") -> FakeContainers:
    """A directory with these mail domains and alias domains ("name,target" rows)."""
    return FakeContainers(
        by_marker=[
            (ALIAS_DOMAINS, "".join(f"{row},{STAMP}\n" for row in alias_rows).encode()),
            (DOMAINS, "".join(f"{d},t,0,{STAMP}\n" for d in domains.split(",")).encode()),
        ]
    )


# --- scoping -------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["b.test", "never-added.test"])
def test_naming_another_domain_is_403_in_one_line_before_the_database_is_asked(
    domain: str,
) -> None:
    fake = FakeContainers()
    for call in (
        lambda: aliasdomains.create_alias_domain(fake, DANA, "shop.a.test", domain),
        lambda: aliasdomains.create_alias_domain(fake, DANA, domain, "a.test"),
        lambda: aliasdomains.create_sender(fake, DANA, "sales@a.test", f"bob@{domain}"),
        lambda: aliasdomains.remove_sender(fake, DANA, "sales@a.test", f"bob@{domain}"),
    ):
        error = _refusal(call)
        assert (error.status, error.message) == _forbidden(domain)
    assert fake.calls == []


@pytest.mark.parametrize("name", ["gmail.com", "a.test.attacker.example", "evil-a.test"])
def test_a_domain_administrator_cannot_claim_a_name_of_the_world_as_its_alias_domain(
    name: str,
) -> None:
    """An alias domain gmail.com would turn every local user's mail to gmail.com into mail
    for the claimant's mailboxes; a look-alike or a parent is no name under its domain."""
    fake = FakeContainers()
    error = _refusal(lambda: aliasdomains.create_alias_domain(fake, DANA, name, "a.test"))
    assert (error.status, error.message) == _forbidden(name)
    assert fake.calls == []
    with pytest.raises(Forbidden):
        DANA.require_new_name(name)
    ROOT.require_new_name(name)  # an administrator vouches for any name
    # Nor is a parent of its domain.
    with pytest.raises(Forbidden):
        Principal("admin:sub", DOMAIN_ADMIN, frozenset({"shop.a.test"})).require_new_name("a.test")


def test_another_domains_alias_domain_is_refused_by_its_own_name_never_its_target() -> None:
    fake = _world("theirs.test,b.test", "ours.test,a.test")
    for call, refused in [
        (lambda: aliasdomains.remove_alias_domain(fake, DANA, "theirs.test"), "theirs.test"),
        (lambda: aliasdomains.remove_alias_domain(fake, DANA, "unknown.test"), "unknown.test"),
        (lambda: aliasdomains.create_sender(fake, DANA, "x@theirs.test", "bob@a.test"), "theirs.test"),
        (lambda: aliasdomains.create_sender(fake, DANA, "x@unknown.test", "bob@a.test"), "unknown.test"),
        (lambda: aliasdomains.remove_sender(fake, DANA, "@theirs.test", "bob@a.test"), "theirs.test"),
        (lambda: aliasdomains.list_senders(fake, DANA, "theirs.test"), "theirs.test"),
    ]:  # fmt: skip
        error = _refusal(call)
        assert (error.status, error.message) == _forbidden(refused)
    assert not _wrote(fake)


@pytest.mark.parametrize(
    "taken",
    [
        _world(domains="a.test,sub.a.test"),  # a mail domain granted to someone else
        _world("sub.a.test,b.test"),  # an alias domain of another's domain
    ],
)
def test_a_name_under_its_domain_that_is_already_anothers_is_the_same_403(
    taken: FakeContainers,
) -> None:
    error = _refusal(lambda: aliasdomains.create_alias_domain(taken, DANA, "sub.a.test", "a.test"))
    assert (error.status, error.message) == _forbidden("sub.a.test")
    assert not _wrote(taken)


def test_a_domain_administrator_adds_an_alias_domain_under_its_domain_and_its_key_is_queued() -> (
    None
):
    fake = _world()
    fake.by_marker.insert(0, ("INSERT INTO alias_domains", b"target,1\nclash,0\nadded,1\n"))
    fake.by_marker.insert(0, ("INSERT INTO host_jobs", b"7\n"))
    added = aliasdomains.create_alias_domain(fake, DANA, "Shop.A.test", "a.test")
    assert (added["name"], added["target"], added["dkim_key"], added["job"]) == (
        "shop.a.test",
        "a.test",
        "queued",
        7,
    )
    (insert,) = fake.sent("INSERT INTO alias_domains")
    assert (insert.variables()["name"], insert.variables()["target"]) == ("shop.a.test", "a.test")
    (job,) = fake.sent("INSERT INTO host_jobs")
    assert (job.variables()["kind"], job.variables()["target"]) == (
        jobqueue.PUBLISH_KEY,
        "shop.a.test",
    )


def test_an_alias_domain_of_its_domain_is_its_own_to_remove_and_to_grant() -> None:
    fake = _world("example.net,a.test")
    fake.by_marker.insert(0, ("INSERT INTO sender_permissions", b"mailbox,1\ndomain,1\nadded,1\n"))
    fake.by_marker.insert(0, ("DELETE FROM alias_domains", b"removed,a.test\n"))
    granted = aliasdomains.create_sender(fake, DANA, "@example.net", "bob@a.test")
    assert granted == {"sender": "@example.net", "mailbox": "bob@a.test", "added": True}
    removed = aliasdomains.remove_alias_domain(fake, DANA, "example.net")
    assert removed == {"name": "example.net", "target": "a.test"}


def test_listings_are_cut_to_what_the_caller_owns_on_both_sides() -> None:
    fake = _world("ours.test,a.test", "theirs.test,b.test")
    fake.by_marker.insert(0, ("DISTINCT ON (target)", b"ours.test,failed,render conflict\n"))
    fake.by_marker.insert(
        0,
        (
            SENDERS,
            b"x@a.test,bob@a.test\n@ours.test,bob@a.test\nx@b.test,bob@a.test\n"
            b"x@a.test,eve@b.test\n@theirs.test,bob@a.test\n",
        ),
    )
    listed = aliasdomains.list_alias_domains(fake, DANA)["alias_domains"]
    assert [(a["name"], a["dkim_key"], a["dkim_key_detail"]) for a in listed] == [
        ("ours.test", "failed", "render conflict")
    ]
    assert aliasdomains.list_senders(fake, DANA, None)["senders"] == [
        {"sender": "x@a.test", "mailbox": "bob@a.test"},
        {"sender": "@ours.test", "mailbox": "bob@a.test"},
    ]
    assert len(aliasdomains.list_senders(fake, ROOT, None)["senders"]) == 5
    assert len(aliasdomains.list_alias_domains(fake, ROOT)["alias_domains"]) == 2


# --- the core's rules and lines ------------------------------------------------------------------


def test_the_cores_refusals_keep_their_lines_as_404_and_409() -> None:
    gone = FakeContainers(by_marker=[("DELETE FROM alias_domains", b"")])
    error = _refusal(lambda: aliasdomains.remove_alias_domain(gone, ROOT, "example.net"))
    assert (error.status, error.message) == (404, "example.net is not an alias domain")
    taken = FakeContainers(
        by_marker=[("INSERT INTO alias_domains", b"target,1\nclash,0\nexisting,a.test\nadded,0\n")]
    )
    error = _refusal(lambda: aliasdomains.create_alias_domain(taken, ROOT, "example.net", "a.test"))
    assert (error.status, error.message) == (
        409,
        "example.net is already an alias domain (of a.test)",
    )
    nobody = FakeContainers(
        by_marker=[("INSERT INTO sender_permissions", b"mailbox,0\ndomain,1\nadded,0\n")]
    )
    error = _refusal(lambda: aliasdomains.create_sender(nobody, ROOT, "x@a.test", "gone@a.test"))
    assert (error.status, error.message) == (
        404,
        "MAILBOX: gone@a.test is not a mailbox of this stack",
    )
    missing = FakeContainers(by_marker=[("DELETE FROM sender_permissions", b"")])
    error = _refusal(lambda: aliasdomains.remove_sender(missing, ROOT, "x@a.test", "bob@a.test"))
    assert (error.status, error.message) == (
        404,
        "bob@a.test has no permission to send as x@a.test",
    )


@pytest.mark.parametrize(
    ("kind", "rule", "value", "call"),
    [
        ("ALIAS_DOMAIN", names.domain, "evil.test\r\nX: y",
         lambda v: aliasdomains.create_alias_domain(FakeContainers(), ROOT, v, "a.test")),
        ("SENDER", names.source, "x@a.test\r\nBcc: all@a.test",
         lambda v: aliasdomains.create_sender(FakeContainers(), ROOT, v, "bob@a.test")),
        ("MAILBOX", names.mailbox, "bob@a.test,eve@b.test",
         lambda v: aliasdomains.remove_sender(FakeContainers(), ROOT, "x@a.test", v)),
    ],
)  # fmt: skip
def test_a_hostile_value_gets_the_clis_line_whoever_asks(
    kind: str, rule: names.Rule, value: str, call: object
) -> None:
    with pytest.raises(Exception) as cli:
        names.require(kind, rule, value)
    error = _refusal(lambda: call(value))  # type: ignore[operator]
    assert (error.status, error.message) == (400, str(cli.value))


def test_the_admin_role_gets_exactly_the_inserts_the_adds_need() -> None:
    sql = re.sub(r"--[^\n]*", "", (migrations_dir() / "0012_alias_domains_api.sql").read_text())
    grants = [" ".join(s.split()) for s in sql.split(";") if s.strip()]
    assert grants == [
        "GRANT INSERT (name, target) ON alias_domains TO mailstack_admin",
        "GRANT INSERT (sender, login) ON sender_permissions TO mailstack_admin",
    ]


def test_the_host_makes_a_queued_alias_domains_key(tmp_path: Path) -> None:
    """`jobs run` takes an alias domain's key job as a domain's (the database knows it only
    as an alias domain), as `domain alias add` makes it at once."""
    claims = [b"3,domain.publish_key,example.net\n"]

    def claim(call: Call) -> bytes:
        return claims.pop(0) if claims else b""

    fake = FakeContainers(
        by_marker=[
            ("FOR UPDATE SKIP LOCKED", claim),
            ("UNION SELECT a.name FROM alias_domains a", b"example.test\nexample.net\n"),
        ],
        running=("db", "dovecot", "rspamd"),
    )
    config = stackfiles.initial_config("mail.example.test", "example.test", {"mode": "sandbox"})
    stackfiles.init_stack(tmp_path / "stack", config, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    stack = Stack(stack_dir, stack_dir.load_config(), fake)  # type: ignore[arg-type]
    (outcome,) = jobs.run_jobs(stack).outcomes
    assert (outcome.target, outcome.state) == ("example.net", "done"), outcome.reason
    assert list((stack.dir.root / "dkim").glob("example.net.*.key"))
