"""`mailstack admin` through the CLI: every rule before the stack is touched, one line per refusal,
and `init` saying how the first administrator is made."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mailstack.stack.stackdir import Stack
from tests.unit.clirun import invoke, one_error_line
from tests.unit.fakes import FakeContainers

PASSWORD = "Correct-horse-42-battery"


@pytest.fixture
def containers(monkeypatch: pytest.MonkeyPatch) -> FakeContainers:
    fake = FakeContainers()
    stack = SimpleNamespace(compose=fake, config=SimpleNamespace(domain="example.test"))
    monkeypatch.setattr(Stack, "load", lambda root: stack)
    return fake


@pytest.mark.usefixtures("untouchable")
@pytest.mark.parametrize(
    "args",
    [
        ("add", "a'b"),
        ("add", "x;DROP"),
        ("add", "ali\nce"),
        ("add", "a" * 65),
        ("remove", "x'; DROP TABLE admins; --"),
        ("grant", "bob\n", "example.test"),
        ("revoke", "bob", "example.test'--"),
        ("reset-mfa", "al ice"),
        ("add", "bob", "--role", "root"),
        ("add", "bob", "--role", "domain-admin"),
        ("add", "bob", "--role", "admin", "--domain", "example.test"),
        ("add", "bob", "--domain", "exa mple.test"),
    ],
    ids=lambda args: " ".join(args)[:40],
)
def test_bad_input_is_one_line_exit_2_before_the_stack_is_touched(args: tuple[str, ...]) -> None:
    code, text = invoke("admin", *args)
    assert code == 2, text
    assert one_error_line(text).split(":")[0] in {"NAME", "ROLE", "DOMAIN"}


@pytest.mark.usefixtures("untouchable")
def test_a_weak_password_from_stdin_is_refused_before_the_stack_is_touched() -> None:
    code, text = invoke("admin", "add", "alice", "--password-stdin", input="password\n")
    assert code == 2 and "password" in one_error_line(text)


@pytest.mark.usefixtures("untouchable")
def test_empty_stdin_is_refused() -> None:
    code, text = invoke("admin", "add", "alice", "--password-stdin", input="")
    assert code == 2 and "standard input is empty" in text


def test_add_generates_a_password_and_shows_it_once(containers: FakeContainers) -> None:
    containers.answers.append(b"added,alice\n")
    code, text = invoke("admin", "add", "alice")
    assert code == 0, text
    assert text.startswith("added admin alice\npassword (shown once, only its hash is stored): ")
    password = text.splitlines()[1].rsplit(" ", 1)[1]
    assert password not in containers.calls[0].stdin
    assert containers.variables()["role"] == "admin"


def test_add_reads_the_password_from_stdin_and_never_prints_it(
    containers: FakeContainers,
) -> None:
    containers.answers.append(b"added,alice\n")
    code, text = invoke("admin", "add", "alice", "--password-stdin", input=PASSWORD + "\n")
    assert code == 0, text
    assert PASSWORD not in text and "password" not in text.splitlines()[0]


def test_a_domain_makes_a_domain_admin_and_an_idn_is_stored_as_punycode(
    containers: FakeContainers,
) -> None:
    containers.answers.append(b"added,bob\ngranted,xn--bcher-kva.test\n")
    code, text = invoke(
        "admin", "add", "Bob", "--domain", "bücher.test", "--domain", "example.test"
    )
    assert code == 0, text
    assert containers.variables()["role"] == "domain_admin"
    assert containers.variables()["domains"] == "example.test,xn--bcher-kva.test"
    assert text.startswith("added domain-admin bob of example.test, xn--bcher-kva.test")


def test_a_domain_admin_for_an_unknown_domain_is_one_line(containers: FakeContainers) -> None:
    containers.answers.append(b"missing,nowhere.test\n")
    code, text = invoke("admin", "add", "bob", "--domain", "nowhere.test")
    assert code == 2
    assert one_error_line(text) == "DOMAIN: 'nowhere.test' is not a mail domain of this stack"


def test_list_as_json(containers: FakeContainers) -> None:
    containers.answers.append(b'bob,domain_admin,t,2026-01-03T00:00:00Z,"a.test,b.test",none\n')
    code, text = invoke("admin", "list", "--json")
    assert code == 0, text
    assert json.loads(text) == [
        {
            "name": "bob",
            "role": "domain_admin",
            "domains": ["a.test", "b.test"],
            "mfa": "none",
            "active": True,
            "created": "2026-01-03T00:00:00Z",
        }
    ]


def test_an_empty_list_says_how_to_make_the_first_administrator(
    containers: FakeContainers,
) -> None:
    code, text = invoke("admin", "list")
    assert code == 0 and "mailstack admin add NAME" in text
    code, text = invoke("admin", "list", "--json")
    assert code == 0 and json.loads(text) == []


def test_reset_mfa_says_whether_there_was_a_second_factor(containers: FakeContainers) -> None:
    containers.answers += [b"admin,alice\nremoved,3\n", b"admin,alice\n"]
    assert "removed the second factor of alice" in invoke("admin", "reset-mfa", "alice")[1]
    assert "has no second factor" in invoke("admin", "reset-mfa", "alice")[1]


def test_init_says_how_to_make_the_first_administrator(stack_root: Path) -> None:
    code, text = invoke(
        "init",
        "--non-interactive",
        "--hostname",
        "mail.example.test",
        "--domain",
        "example.test",
        "--dir",
        str(stack_root),
    )
    assert code == 0, text
    assert "the first administrator: `mailstack admin add NAME`" in text
    assert "no default" in text
