"""Who may touch which domain through the admin service (identity.principal)."""

from __future__ import annotations

import pytest

from mailstack.api import operations
from mailstack.errors import Forbidden
from mailstack.identity import principal
from mailstack.identity.principal import ADMIN, DOMAIN_ADMIN, USER, Principal
from tests.unit.fakes import FakeContainers


def test_an_administrator_manages_every_domain() -> None:
    admin = Principal("admin:alice", ADMIN, None)
    admin.require_domain("example.org")
    admin.require_address("bob@other.net")
    admin.require_admin()
    assert admin.visible(["a.org", "b.org"]) == ["a.org", "b.org"]


def test_a_domain_administrator_is_refused_another_domain_with_one_line() -> None:
    owner = Principal("admin:dana", DOMAIN_ADMIN, frozenset({"a.org"}))
    owner.require_domain("a.org")
    owner.require_address("bob@a.org")
    with pytest.raises(Forbidden, match=r"^b\.org is not a domain you manage$"):
        owner.require_domain("b.org")
    with pytest.raises(Forbidden):
        owner.require_address("bob@b.org")
    with pytest.raises(Forbidden, match="only an administrator"):
        owner.require_admin()
    assert owner.visible(["a.org", "b.org"]) == ["a.org"]


def test_a_user_manages_no_domain_not_even_its_own() -> None:
    user = principal.for_user("bob@a.org")
    assert user.actor == "mailbox:bob@a.org" and user.role == USER
    with pytest.raises(Forbidden):
        user.require_address("bob@a.org")
    assert user.visible(["a.org"]) == []


def test_forbidden_is_a_403_with_the_same_line() -> None:
    answer = operations.refusal(Forbidden("b.org is not a domain you manage"))
    assert answer.status == 403
    assert answer.body() == {"error": "b.org is not a domain you manage"}


def test_a_domain_administrator_is_read_with_its_domains() -> None:
    fake = FakeContainers(by_marker=[("FROM admins a", b'domain_admin,"a.org,b.org"\n')])
    loaded = principal.for_admin(fake, "dana")
    assert loaded == Principal("admin:dana", DOMAIN_ADMIN, frozenset({"a.org", "b.org"}))
    assert fake.variables()["name"] == "dana"


def test_an_inactive_or_unknown_administrator_acts_for_nobody() -> None:
    with pytest.raises(principal.InactiveAdmin):
        principal.for_admin(FakeContainers(), "gone")


def test_a_token_acts_for_its_creator_or_for_root() -> None:
    assert principal.for_token(FakeContainers(), "ci", None) == Principal("token:ci", ADMIN, None)
    fake = FakeContainers(by_marker=[("FROM admins a", b"domain_admin,a.org\n")])
    assert principal.for_token(fake, "ci", "dana") == Principal(
        "token:ci", DOMAIN_ADMIN, frozenset({"a.org"})
    )
