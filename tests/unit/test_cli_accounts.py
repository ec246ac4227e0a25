"""`domain`, `mailbox` and `alias` through the CLI: validation first, purge only when asked."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from mailstack.accounts import mailstore
from mailstack.accounts.passwords import verify_password
from mailstack.errors import ExternalCommandFailed
from mailstack.stack.stackdir import Stack
from tests.unit.clirun import invoke
from tests.unit.fakes import Call, FakeContainers

PASSWORD = "Correct-horse-42-battery"


NO_SESSIONS = ExternalCommandFailed("docker compose exec (exit 68)", "no users kicked")
MISSING = ExternalCommandFailed(
    "docker compose exec (exit 1)", "du: cannot access '/var/mail/x': No such file or directory"
)

ONE_HOST = SimpleNamespace(nodes=[], mailbox_nodes=[])  # no cluster: commands run through Compose


@pytest.fixture
def containers(monkeypatch: pytest.MonkeyPatch) -> FakeContainers:
    fake = FakeContainers()
    config = SimpleNamespace(
        domain="example.test", features=SimpleNamespace(dav=False), cluster=ONE_HOST
    )
    stack = SimpleNamespace(compose=fake, config=config)
    monkeypatch.setattr(Stack, "load", lambda root: stack)
    return fake


@pytest.fixture
def with_calendars(monkeypatch: pytest.MonkeyPatch) -> FakeContainers:
    """The same with features.dav on: a purge deletes calendars and contacts too."""
    fake = FakeContainers()
    config = SimpleNamespace(
        domain="example.test", features=SimpleNamespace(dav=True), cluster=ONE_HOST
    )
    stack = SimpleNamespace(compose=fake, config=config)
    monkeypatch.setattr(Stack, "load", lambda root: stack)
    return fake


# --- hostile input: refused in one line, exit 2, before the stack is touched -------------------

HOSTILE_ADDRESSES = [
    "x'; DROP TABLE mailboxes; --@example.test",
    "o\\'brien@example.test",
    'say"hi"@example.test',
    "alice@example.test' OR '1'='1",
    "alice@example.test\nbcc@evil.example",
    "SELECT * FROM mailboxes",
    "@@example.test",
    "\u0430lice@example.test",  # Cyrillic a in the local part
    "alice@ex\u0430mple.test",  # Cyrillic a among Latin letters in the domain
    "x" * 1000 + "@example.test",
    "alice@exa_mple.test",
    "alice@{{config}}.test",
]
HOSTILE_DOMAINS = [
    "example.test; DROP TABLE domains",
    "example.test'--",
    "exa%mple.test",
    "exa_mple.test",
    "example-.test",
    "ex\u0430mple.test",
    "x" * 300 + ".test",
    "localhost",
    "example.test\\",
]


@pytest.mark.parametrize("hostile", HOSTILE_ADDRESSES)
@pytest.mark.parametrize(
    ("command", "stdin"),
    [
        (["mailbox", "add", "{}", "--password-stdin"], PASSWORD + "\n"),
        (["mailbox", "remove", "{}", "--purge", "--yes"], None),
        (["mailbox", "passwd", "{}", "--password-stdin"], PASSWORD + "\n"),
        (["mailbox", "quota", "{}", "1G"], None),
        (["alias", "add", "{}", "bob@example.test"], None),
        (["alias", "add", "info@example.test", "{}"], None),
        (["alias", "remove", "{}"], None),
    ],
)
def test_hostile_address_is_refused_before_the_stack_is_touched(
    untouchable: None, hostile: str, command: list[str], stdin: str | None
) -> None:
    args = [hostile if part == "{}" else part for part in command]
    code, text = invoke(*args, input=stdin)
    assert code == 2, text
    assert text.startswith("error: ")
    assert re.match(r"error: (ADDRESS|SOURCE|DEST): ['\"]", text), text
    assert "Traceback" not in text


@pytest.mark.parametrize("hostile", HOSTILE_DOMAINS)
@pytest.mark.parametrize(
    "command",
    [
        ["domain", "add", "{}"],
        ["domain", "remove", "{}", "--force", "--purge", "--yes"],
        ["mailbox", "list", "--domain", "{}"],
        ["alias", "list", "--domain", "{}"],
        ["alias", "add", "@{}", "bob@example.test"],
    ],
)
def test_hostile_domain_is_refused_before_the_stack_is_touched(
    untouchable: None, hostile: str, command: list[str]
) -> None:
    args = [part.replace("{}", hostile) for part in command]
    code, text = invoke(*args)
    assert code == 2, text
    assert re.match(r"error: (DOMAIN|SOURCE): ['\"]", text), text
    assert "Traceback" not in text


def test_a_1000_character_local_part_is_named_too_long(untouchable: None) -> None:
    code, text = invoke("mailbox", "remove", "x" * 1000 + "@example.test")
    assert code == 2
    assert "is too long (1013 characters; at most 320)" in text
    assert len(text.splitlines()) == 1


def test_look_alike_domain_names_both_scripts(untouchable: None) -> None:
    code, text = invoke("domain", "add", "p\u0430ypal.example")
    assert code == 2
    assert "mixes Cyrillic and Latin letters in one label" in text


def test_a_catch_all_is_not_a_mailbox(untouchable: None) -> None:
    code, text = invoke("mailbox", "add", "@example.test", "--password-stdin", input=PASSWORD)
    assert code == 2
    assert "ADDRESS: '@example.test' is not a mail address" in text


def test_a_slash_in_a_new_mailbox_s_local_part_is_refused(untouchable: None) -> None:
    code, text = invoke(
        "mailbox", "add", "a/b@example.test", "--password-stdin", input=PASSWORD + "\n"
    )
    assert code == 2
    assert "'/' in the local part" in text


@pytest.mark.parametrize("size", ["1e9", "5.5G", "5X", "", "1G; DROP"])
def test_a_bad_quota_size_is_refused_before_the_stack_is_touched(
    untouchable: None, size: str
) -> None:
    code, text = invoke("mailbox", "quota", "alice@example.test", size)
    assert code == 2
    assert "SIZE: " in text and "is not a size" in text


def test_weak_or_mismatched_new_password_is_refused_before_the_stack_is_touched(
    untouchable: None,
) -> None:
    code, text = invoke("mailbox", "passwd", "alice@example.test", "--password-stdin", input="x\n")
    assert code == 2 and "too short" in text
    code, text = invoke("mailbox", "passwd", "alice@example.test", input=f"{PASSWORD}\nother\n")
    assert code == 2 and "the two entries differ" in text


def test_yes_without_purge_is_refused(untouchable: None) -> None:
    code, text = invoke("mailbox", "remove", "alice@example.test", "--yes")
    assert code == 2 and "--yes only confirms --purge" in text


# --- values reach the database only as variables ------------------------------------------------


@pytest.mark.parametrize("local_part", ["o'brien", "a_b", "a%b", "select", "x-DROP-TABLE"])
def test_odd_but_valid_addresses_travel_verbatim_as_variables(
    containers: FakeContainers, local_part: str
) -> None:
    address = f"{local_part}@Example.TEST"
    containers.by_marker = [("UPDATE mailboxes", b"alice@example.test\n")]
    code, text = invoke("mailbox", "passwd", address, "--password-stdin", input=PASSWORD + "\n")
    assert code == 0, text
    (call,) = containers.sent("UPDATE mailboxes")
    assert call.variables()["address"] == f"{local_part.lower()}@example.test"
    assert local_part not in call.text.replace("\\set password_hash", "")
    assert PASSWORD not in call.text and all(PASSWORD not in arg for arg in call.argv)
    assert all("ARGON2ID" not in argument for argument in call.argv)


def test_generated_password_is_printed_once_and_only_its_hash_is_stored(
    containers: FakeContainers,
) -> None:
    containers.by_marker = [("UPDATE mailboxes", b"alice@example.test\n")]
    code, text = invoke("mailbox", "passwd", "alice@example.test", "--generate-password")
    assert code == 0, text
    shown = text.split("stored): ", 1)[1].split()[0]
    assert len(shown) >= 20 and text.count(shown) == 1
    (call,) = containers.sent("UPDATE mailboxes")
    assert shown not in call.text and all(shown not in arg for arg in call.argv)
    stored = re.search(r"^\\set password_hash '([^']+)'$", call.text, re.MULTILINE)
    assert stored and verify_password(stored.group(1), shown)


def test_generate_password_and_password_stdin_exclude_each_other(untouchable: None) -> None:
    code, text = invoke(
        "mailbox", "add", "a@example.test", "--generate-password", "--password-stdin", input="x\n"
    )
    assert code == 2 and "choose one" in text


def test_alias_with_several_destinations_and_a_catch_all_source(
    containers: FakeContainers,
) -> None:
    containers.by_marker = [
        (
            "INSERT INTO aliases",
            b"domain,t\nadded,bob@example.test\nadded,Friend@elsewhere.example\n",
        )
    ]
    code, text = invoke(
        "alias", "add", "@Example.TEST", "bob@example.test", "Friend@Elsewhere.Example"
    )
    assert code == 0, text
    (call,) = containers.sent("INSERT INTO aliases")
    assert call.variables()["source"] == "@example.test"
    assert call.variables()["destinations"] == "bob@example.test,Friend@elsewhere.example"
    assert "added alias @example.test -> bob@example.test" in text
    assert "added alias @example.test -> Friend@elsewhere.example" in text


def test_an_alias_cannot_point_to_itself(containers: FakeContainers) -> None:
    code, text = invoke("alias", "add", "info@example.test", "INFO@example.test")
    assert code == 2 and "cannot point to itself" in text
    assert containers.calls == []


def test_removing_an_unknown_destination_removes_nothing(containers: FakeContainers) -> None:
    containers.by_marker = [("DELETE FROM aliases", b"missing,carol@example.test\n")]
    code, text = invoke(
        "alias", "remove", "info@example.test", "bob@example.test", "carol@example.test"
    )
    assert code == 2
    assert "has no destination carol@example.test; nothing was removed" in text


def test_alias_list_groups_destinations_by_source(containers: FakeContainers) -> None:
    containers.by_marker = [
        (
            "FROM aliases",
            b"@example.test,bob@example.test\ninfo@example.test,a@example.test\n"
            b"info@example.test,b@elsewhere.example\n",
        )
    ]
    code, text = invoke("alias", "list")
    assert code == 0
    assert text.splitlines() == [
        "@example.test -> bob@example.test  (catch-all)",
        "info@example.test -> a@example.test, b@elsewhere.example",
    ]


# --- removal and purge ---------------------------------------------------------------------------


def test_mailbox_remove_keeps_the_stored_mail(containers: FakeContainers) -> None:
    containers.by_marker = [
        ("SELECT 'state'", b"state,t\n"),
        (
            "DELETE FROM mailboxes",
            b"mailbox,alice@example.test,\nalias,info@example.test,alice@example.test\n",
        ),
        ("doveadm kick", NO_SESSIONS),
    ]
    code, text = invoke("mailbox", "remove", "Alice@example.test")
    assert code == 0, text
    assert "removed mailbox alice@example.test" in text
    assert "removed alias info@example.test -> alice@example.test" in text
    assert "kept in /var/mail/example.test/alice" in text
    assert "mailstack mailbox remove alice@example.test --purge" in text
    assert containers.sent("rm ") == [] and containers.sent("du ") == []


def test_purge_not_confirmed_changes_nothing(containers: FakeContainers) -> None:
    containers.by_marker = [
        ("SELECT 'state'", b"state,t\n"),
        ("du ", b"2048\t/var/mail/example.test/alice\n"),
    ]
    code, text = invoke("mailbox", "remove", "alice@example.test", "--purge", input="n\n")
    assert code == 1
    assert "/var/mail/example.test/alice (2M) for good" in text
    assert "not confirmed: nothing was removed" in text
    assert containers.sent("DELETE") == [] and containers.sent("rm ") == []


def test_purge_without_an_answer_changes_nothing(containers: FakeContainers) -> None:
    containers.by_marker = [
        ("SELECT 'state'", b"state,t\n"),
        ("du ", b"8\t/var/mail/example.test/alice\n"),
    ]
    code, _ = invoke("mailbox", "remove", "alice@example.test", "--purge", input="")
    assert code == 1
    assert containers.sent("DELETE") == [] and containers.sent("rm ") == []


def test_confirmed_purge_deletes_exactly_the_mailbox_directory(containers: FakeContainers) -> None:
    def du(_: Call) -> bytes | Exception:
        return MISSING if containers.sent("rm ") else b"8\t/var/mail/example.test/o'brien\n"

    containers.by_marker = [
        ("SELECT 'state'", b"state,t\n"),
        ("DELETE FROM mailboxes", b"mailbox,o'brien@example.test,\n"),
        ("doveadm kick", NO_SESSIONS),
        ("du ", du),
    ]
    code, text = invoke("mailbox", "remove", "o'brien@example.test", "--purge", input="y\n")
    assert code == 0, text
    (rm,) = containers.sent("rm ")
    assert rm.argv == ["rm", "-rf", "--one-file-system", "--", "/var/mail/example.test/o'brien"]
    assert rm.service == "dovecot" and rm.user == "vmail"
    assert "deleted the stored mail in /var/mail/example.test/o'brien" in text


COLLECTIONS = "/var/lib/radicale/collections/collection-root"


def test_a_purge_deletes_the_mailboxs_calendars_and_contacts_too(
    with_calendars: FakeContainers,
) -> None:
    with_calendars.by_marker = [
        ("SELECT 'state'", b"state,t\n"),
        ("DELETE FROM mailboxes", b"mailbox,a*b@example.test,\n"),
        ("doveadm kick", NO_SESSIONS),
        ("du ", MISSING),
        ("find ", f"{COLLECTIONS}/a*b@example.test\n".encode()),
    ]
    code, text = invoke("mailbox", "remove", "a*b@example.test", "--purge", "--yes")
    assert code == 0, text
    (find,) = with_calendars.sent("find ")
    assert find.service == "dav"
    # The address is matched as itself: a * in it is no wildcard for other users' names.
    assert find.argv[:8] == [
        "find", COLLECTIONS, "-mindepth", "1", "-maxdepth", "1", "-name", "a\\*b@example.test",
    ]  # fmt: skip
    assert find.argv[8:] == ["-print", "-exec", "rm", "-rf", "--one-file-system", "--", "{}", "+"]
    assert "deleted the calendars and contacts of a*b@example.test (1 user(s))" in text


def test_a_domain_purge_deletes_every_users_collections_of_that_domain_only(
    with_calendars: FakeContainers,
) -> None:
    with_calendars.by_marker = [  # the removal's script also holds "SELECT 'state'": first
        ("DELETE FROM domains", b"domain,gone.example,\n"),
        ("SELECT 'state'", b"state,t,0,0\n"),
        ("doveadm kick", NO_SESSIONS),
        ("du ", MISSING),
        ("find ", b""),
    ]
    code, text = invoke("domain", "remove", "gone.example", "--purge", "--yes")
    assert code == 0, text
    (find,) = with_calendars.sent("find ")
    assert find.argv[7] == "*@gone.example"
    assert "no calendars or contacts of *@gone.example" in text


def test_without_purge_calendars_are_not_touched(with_calendars: FakeContainers) -> None:
    with_calendars.by_marker = [
        ("SELECT 'state'", b"state,t\n"),
        ("DELETE FROM mailboxes", b"mailbox,alice@example.test,\n"),
        ("doveadm kick", NO_SESSIONS),
    ]
    code, text = invoke("mailbox", "remove", "alice@example.test")
    assert code == 0, text
    assert with_calendars.sent("find ") == []


def test_a_dav_service_that_does_not_answer_keeps_them_and_says_so(
    with_calendars: FakeContainers,
) -> None:
    with_calendars.by_marker = [
        ("SELECT 'state'", b"state,t\n"),
        ("DELETE FROM mailboxes", b"mailbox,alice@example.test,\n"),
        ("doveadm kick", NO_SESSIONS),
        ("du ", MISSING),
        ("find ", ExternalCommandFailed("docker compose exec (exit 1)", "service not running")),
    ]
    code, text = invoke("mailbox", "remove", "alice@example.test", "--purge", "--yes")
    assert code == 0, text  # the mailbox is gone; what was not deleted is said
    assert "calendars and contacts of alice@example.test (if any) are kept" in text


def test_a_stack_where_nobody_used_calendars_yet_has_none_to_delete(
    with_calendars: FakeContainers,
) -> None:
    # Radicale makes its collection root at the first sign-in: before, find finds no root.
    never = f"find: '{COLLECTIONS}': No such file or directory"
    with_calendars.by_marker = [
        ("SELECT 'state'", b"state,t\n"),
        ("DELETE FROM mailboxes", b"mailbox,alice@example.test,\n"),
        ("doveadm kick", NO_SESSIONS),
        ("du ", MISSING),
        ("find ", ExternalCommandFailed("docker compose exec (exit 1)", never)),
    ]
    code, text = invoke("mailbox", "remove", "alice@example.test", "--purge", "--yes")
    assert code == 0, text
    assert "no calendars or contacts of alice@example.test" in text


def test_domain_purge_needs_the_domain_name_typed(containers: FakeContainers) -> None:
    containers.by_marker = [
        ("SELECT 'state'", b"state,t,0,0\n"),
        ("du ", b"64\t/var/mail/gone.example\n"),
    ]
    code, text = invoke("domain", "remove", "gone.example", "--purge", input="y\n")
    assert code == 1
    assert "not confirmed" in text
    assert containers.sent("DELETE") == [] and containers.sent("rm ") == []


def test_domain_in_use_is_refused_without_force(containers: FakeContainers) -> None:
    containers.by_marker = [("SELECT 'state'", b"state,t,2,1\n")]
    code, text = invoke("domain", "remove", "busy.example", "--purge", "--yes")
    assert code == 2
    assert "busy.example still has 2 mailbox(es) and 1 alias(es); nothing was removed" in text
    assert "--force" in text
    assert containers.sent("DELETE") == [] and containers.sent("du ") == []


def test_alias_domains_pointing_at_a_domain_keep_it_without_force(
    containers: FakeContainers,
) -> None:
    containers.by_marker = [("SELECT 'state'", b"state,t,0,0\nalias_domain,other.example\n")]
    code, text = invoke("domain", "remove", "busy.example")
    assert code == 2
    assert "0 alias(es) and the alias domain(s) other.example; nothing was removed" in text
    assert containers.sent("DELETE") == []


def test_domain_remove_with_force_keeps_mail_and_reports_what_went(
    containers: FakeContainers,
) -> None:
    containers.by_marker = [
        (
            "FOR UPDATE",
            b"locked,old.example\nstate,t,1,1\nalias,info@old.example,a@old.example\n"
            b"mailbox,a@old.example\ndomain,old.example\n",
        ),
        ("SELECT 'state'", b"state,t,1,1\n"),
        ("doveadm kick", NO_SESSIONS),
    ]
    code, text = invoke("domain", "remove", "old.example", "--force")
    assert code == 0, text
    (removal,) = containers.sent("FOR UPDATE")
    assert removal.variables()["force"] == "yes"
    assert "--single-transaction" in removal.argv
    assert "removed domain old.example" in text
    assert "removed mailbox a@old.example" in text
    assert "kept in /var/mail/old.example" in text
    assert containers.sent("rm ") == []


def test_the_stack_s_own_domain_cannot_be_removed(containers: FakeContainers) -> None:
    code, text = invoke("domain", "remove", "EXAMPLE.test", "--force")
    assert code == 2 and "the stack's own domain" in text
    assert containers.calls == []


# --- usage against quota ------------------------------------------------------------------------

QUOTA_TABLE = (
    "Username\tQuota name\tType\tValue\tLimit\t%\n"
    "alice@example.test\tUser quota\tSTORAGE\t1536\t2048\t75\n"
    "alice@example.test\tUser quota\tMESSAGE\t12\t-\t0\n"
    "bob@example.test\tUser quota\tSTORAGE\t0\t-\t0\n"
    "bob@example.test\tUser quota\tMESSAGE\t0\t-\t0\n"
)


def test_quota_table_is_read_in_bytes_and_messages() -> None:
    usage = mailstore.parse_quota_table(QUOTA_TABLE)
    assert usage["alice@example.test"] == mailstore.Usage(1536 * 1024, 12)
    assert usage["bob@example.test"] == mailstore.Usage(0, 0)


def test_mailbox_list_shows_usage_against_quota(containers: FakeContainers) -> None:
    containers.by_marker = [
        (
            "FROM mailboxes",
            b"alice@example.test,example.test,2097152,t,2026-01-01T00:00:00Z\n"
            b"bob@example.test,example.test,0,t,2026-01-01T00:00:00Z\n",
        ),
        ("doveadm -f tab quota get -A", QUOTA_TABLE.encode()),
    ]
    code, text = invoke("mailbox", "list")
    assert code == 0, text
    assert text.splitlines() == [
        "alice@example.test  1.5M used of 2M (75%), 12 message(s)",
        "bob@example.test  0B used, no quota, 0 message(s)",
    ]


def test_mailbox_list_without_dovecot_still_lists_and_says_why(
    containers: FakeContainers,
) -> None:
    containers.by_marker = [
        ("FROM mailboxes", b"alice@example.test,example.test,1024,t,2026-01-01T00:00:00Z\n"),
        ("doveadm", ExternalCommandFailed("docker compose exec (exit 1)", "service not running")),
    ]
    code, text = invoke("mailbox", "list", "--json")
    assert code == 0
    assert "warning: usage unknown" in text
    assert '"storage_bytes": null' in text


def test_quota_change_reports_old_and_new(containers: FakeContainers) -> None:
    containers.by_marker = [("UPDATE mailboxes", b"result,t,1,2147483648,0,2147483648\n")]
    code, text = invoke("mailbox", "quota", "alice@example.test", "4K")
    assert code == 0
    assert text.strip() == "quota of alice@example.test: 2G -> 4K"
    assert containers.calls[0].variables()["quota_bytes"] == "4096"


# --- a cluster's mailboxes: each has a home back end (docs/cluster.md) ------------------------


def _sent_variables(call: Call) -> str:
    return call.text + "\n".join(call.argv)


def test_a_new_mailbox_may_go_to_any_mailbox_node_the_least_used_first(
    containers: FakeContainers, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = SimpleNamespace(nodes=["given"], mailbox_nodes=["node1", "node2"])
    monkeypatch.setattr(Stack.load(None).config, "cluster", cluster)  # type: ignore[arg-type]
    monkeypatch.setattr("mailstack.cli.accounts.executor", lambda stack: containers)
    containers.by_marker = [("INSERT INTO mailboxes", b"result,1,t,t,0,0\n")]
    code, text = invoke("mailbox", "add", "alice@example.test", "--quota", "1G", "--password-stdin",
                        input=PASSWORD + "\n")  # fmt: skip
    assert code == 0, text
    (call,) = containers.sent("INSERT INTO mailboxes")
    assert "node1 node2" in _sent_variables(call)
    containers.calls.clear()
    code, text = invoke("mailbox", "add", "bob@example.test", "--quota", "1G", "--back-end", "node2",
                        "--password-stdin", input=PASSWORD + "\n")  # fmt: skip
    assert code == 0, text
    (call,) = containers.sent("INSERT INTO mailboxes")
    assert "node1 node2" not in _sent_variables(call) and "node2" in _sent_variables(call)


def test_a_back_end_that_is_no_mailbox_node_is_refused_in_one_line(
    containers: FakeContainers, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = SimpleNamespace(nodes=["given"], mailbox_nodes=["node1", "node2"])
    monkeypatch.setattr(Stack.load(None).config, "cluster", cluster)  # type: ignore[arg-type]
    code, text = invoke("mailbox", "add", "alice@example.test", "--back-end", "node3'--",
                        "--password-stdin", input=PASSWORD + "\n")  # fmt: skip
    assert code == 2
    assert text.strip() == (
        "error: --back-end node3'--: not a mailbox node of this cluster; allowed: node1, node2"
    )
    assert not containers.calls


def test_one_host_has_no_back_end_to_choose(containers: FakeContainers) -> None:
    code, text = invoke("mailbox", "add", "alice@example.test", "--back-end", "node1",
                        "--password-stdin", input=PASSWORD + "\n")  # fmt: skip
    assert code == 2 and "this stack runs on one host" in text
    assert not containers.calls
