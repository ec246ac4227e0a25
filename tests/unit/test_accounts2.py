"""App passwords, sender permissions, alias domains and DKIM rotation: validation and pure logic."""

from __future__ import annotations

import datetime
import hashlib
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailstack.accounts import access, alias_domains
from mailstack.accounts.passwords import check_password_strength, generate_password, verify_password
from mailstack.cli.main import app
from mailstack.errors import UsageError
from mailstack.mailauth import dkim, dkim_rotation
from mailstack.stack import Stack
from mailstack.stack.stackdir import StackDir
from mailstack.stack.stackfiles import init_stack, initial_config
from tests.unit.fakes import FakeContainers

runner = CliRunner()
DAY = datetime.datetime(2026, 3, 14, tzinfo=datetime.UTC)

HOSTILE_NAMES = [
    "x'; DROP TABLE app_passwords;--",
    "back\\slash",
    "50%_off",
    "a" * 65,
    "-leading-dash",
    "new\nline",
    "",
    "fünf",
]


# --- app passwords ---------------------------------------------------------------------------


def test_generated_app_passwords_are_strong_typeable_and_different() -> None:
    drawn = {generate_password() for _ in range(200)}
    assert len(drawn) == 200
    for password in drawn:
        assert re.fullmatch(r"[a-z2-9]{5}(-[a-z2-9]{5}){3}", password)
        assert not set(password) & set("01ilo")  # no look-alikes
        check_password_strength(password)


def test_lookup_key_is_what_dovecot_computes() -> None:
    # Dovecot 2.3's %{sha256;truncate=32:password} for this password, seen in a running stack.
    assert access.lookup_key("abcde-fghij-23456-kmnpq") == "57767369"
    assert access.lookup_key("x") == hashlib.sha256(b"x").hexdigest()[:8]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_app_password_names_are_refused_before_the_database(name: str) -> None:
    db = FakeContainers()
    with pytest.raises(UsageError, match="NAME:"):
        access.add_app_password(db, "alice@example.org", name)
    with pytest.raises(UsageError, match="NAME:"):
        access.revoke_app_password(db, "alice@example.org", name)
    assert db.calls == []


def test_an_app_password_is_stored_only_as_a_hash_and_shown_once() -> None:
    db = FakeContainers(answers=[b"mailbox,1\ncount,0\nname_taken,0\nadded,1\n"])
    created = access.add_app_password(db, "Alice@Example.org", "phone")
    service, argv, stdin, _ = db.calls[0]
    assert service == "db"
    variables = db.variables(0)
    assert variables["address"] == "alice@example.org" and variables["name"] == "phone"
    assert variables["lookup_key"] == access.lookup_key(created.password)
    assert created.password not in " ".join(argv) and created.password not in stdin
    stored = re.search(r"\\set password_hash '([^']+)'", stdin)
    assert stored and verify_password(stored.group(1), created.password)
    assert "password_hash" not in variables  # the hash is not in the process list either
    assert created.password in str(created) and "shown only now" in str(created)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"mailbox,0\ncount,0\nname_taken,0\nadded,0\n", "does not exist"),
        (b"mailbox,1\ncount,3\nname_taken,1\nadded,0\n", "already has an app password named"),
        (b"mailbox,1\ncount,20\nname_taken,0\nadded,0\n", "the most allowed"),
    ],
)
def test_app_password_refusals_name_the_reason(answer: bytes, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        access.add_app_password(FakeContainers(answers=[answer]), "alice@example.org", "phone")


def test_a_lookup_key_collision_draws_a_new_password() -> None:
    db = FakeContainers(
        answers=[
            b"mailbox,1\ncount,1\nname_taken,0\nadded,0\n",  # lost to its own key: again
            b"mailbox,1\ncount,1\nname_taken,0\nadded,1\n",
        ]
    )
    created = access.add_app_password(db, "alice@example.org", "phone")
    assert len(db.calls) == 2
    assert db.variables(1)["lookup_key"] == access.lookup_key(created.password)


def test_revoking_ends_the_mailbox_sessions() -> None:
    db = FakeContainers(answers=[b"revoked,phone\nmailbox,alice@example.org\n", b""])
    access.revoke_app_password(db, "alice@example.org", "phone")
    service, argv, _, _ = db.calls[1]
    assert service == "dovecot" and argv == ["doveadm", "kick", "alice@example.org"]


def test_revoking_an_unknown_app_password_changes_nothing_else() -> None:
    db = FakeContainers(answers=[b"mailbox,alice@example.org\n"])
    with pytest.raises(UsageError, match="no app password named tablet"):
        access.revoke_app_password(db, "alice@example.org", "tablet")
    assert len(db.calls) == 1  # no kick


# --- sender permissions ----------------------------------------------------------------------


def test_sender_values_travel_as_variables() -> None:
    db = FakeContainers(answers=[b"mailbox,1\ndomain,1\nadded,1\n"])
    change = access.add_sender(db, "Team@Example.org", "alice@example.org")
    assert db.variables(0) == {
        "sender": "team@example.org",
        "login": "alice@example.org",
        "domain": "example.org",
        "ON_ERROR_STOP": "1",
    }
    assert "team@example.org" not in db.calls[0][2]
    assert str(change) == "allowed: alice@example.org may send as team@example.org"


def test_a_domain_wide_grant_reads_as_such() -> None:
    db = FakeContainers(answers=[b"mailbox,1\ndomain,1\nadded,1\n"])
    change = access.add_sender(db, "@example.org", "alice@example.org")
    assert "any address of example.org" in str(change)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"mailbox,0\ndomain,1\nadded,0\n", "MAILBOX: .* is not a mailbox"),
        (b"mailbox,1\ndomain,0\nadded,0\n", "not a mail domain or alias domain"),
    ],
)
def test_sender_grants_only_for_mailboxes_and_local_domains(answer: bytes, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        access.add_sender(FakeContainers(answers=[answer]), "team@example.org", "alice@example.org")


def test_a_mailbox_needs_no_grant_for_its_own_address() -> None:
    db = FakeContainers()
    with pytest.raises(UsageError, match="always send as its own address"):
        access.add_sender(db, "alice@example.org", "Alice@example.org")
    assert db.calls == []


# --- alias domains ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"target,0\nclash,0\nadded,0\n", "TARGET_DOMAIN: example.org is not a mail domain"),
        (b"target,1\nclash,1\nadded,0\n", "is a mail domain of this stack"),
        (b"target,1\nclash,0\nexisting,example.com\nadded,0\n", "already an alias domain"),
    ],
)
def test_alias_domain_refusals(answer: bytes, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        alias_domains.add_alias_domain(
            FakeContainers(answers=[answer]), "example.net", "example.org"
        )


def test_an_alias_domain_cannot_point_to_itself() -> None:
    db = FakeContainers()
    with pytest.raises(UsageError, match="alias of itself"):
        alias_domains.add_alias_domain(db, "example.org", "example.org")
    assert db.calls == []


def test_alias_domain_names_travel_as_variables() -> None:
    db = FakeContainers(answers=[b"target,1\nclash,0\nadded,1\n"])
    alias_domains.add_alias_domain(db, "example.net", "example.org")
    assert db.variables(0)["name"] == "example.net"
    assert db.variables(0)["target"] == "example.org"
    assert "example.net" not in db.calls[0][2]


# --- the CLI: one clear line for hostile input, before anything is touched -------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["mailbox", "app-password", "add", "a'b\"c@example.org", "phone"], "ADDRESS"),
        (["mailbox", "app-password", "add", "x" * 1000 + "@example.org", "phone"], "ADDRESS"),
        (["mailbox", "app-password", "add", "alice@example.org", "it's"], "NAME"),
        (["mailbox", "app-password", "revoke", "alice@example.org", "%"], "NAME"),
        (["mailbox", "app-password", "list", "alice\\@example.org"], "ADDRESS"),
        (["alias", "sender", "add", "team@exa mple.org", "alice@example.org"], "SENDER"),
        (["alias", "sender", "add", "@exam'ple.org", "alice@example.org"], "SENDER"),
        (["alias", "sender", "add", "team@example.org", "SELECT * FROM mailboxes"], "ADDRESS"),
        (["alias", "sender", "remove", "x" * 1000 + "@example.org", "a@example.org"], "SENDER"),
        (["domain", "alias", "add", "example.net; DROP", "example.org"], "ALIAS_DOMAIN"),
        (["domain", "alias", "add", "example.net", "exa_mple.org"], "TARGET_DOMAIN"),
        (["domain", "alias", "remove", "'; DELETE FROM domains;--"], "ALIAS_DOMAIN"),
        (["dkim", "rotate", "exa'mple.org"], "DOMAIN"),
        (["dkim", "retire", "example.org", "../../etc/passwd"], "SELECTOR"),
    ],
)
def test_hostile_arguments_get_one_line_naming_them(
    tmp_path: Path, args: list[str], named: str
) -> None:
    if args[0] == "dkim" and args[1] == "retire":
        _stack_with_key(tmp_path)
    result = runner.invoke(app, [*args, "--dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    first_line = result.output.strip().splitlines()[0]
    assert first_line.startswith(f"error: {named}"), result.output


def _stack_with_key(root: Path) -> None:
    """A stack directory just good enough for Stack.load (retire validates after loading)."""
    init_stack(root, initial_config("mail.example.org", "example.org"), check_ports=False)


# --- DKIM rotation (pure: keys on disk, no stack) --------------------------------------------


def test_selectors_of_one_day_count_up_and_sort_in_creation_order() -> None:
    taken = {"ms20260314", "ms20260314-2"}
    assert dkim.next_selector(set(), DAY) == "ms20260314"
    assert dkim.next_selector(taken, DAY) == "ms20260314-3"
    order = ["ms20260313", "ms20260314", "ms20260314-2", "ms20260314-10", "ms20260315"]
    shuffled = [order[3], order[0], order[4], order[2], order[1]]
    assert sorted(shuffled, key=dkim.selector_order) == order
    assert dkim.selector_order("mail") < dkim.selector_order("ms20000101")


def test_rotation_publishes_then_activates_then_retires(tmp_path: Path) -> None:
    old = dkim.ensure_key(tmp_path, "example.org", DAY).key
    new = dkim.create_rotation_key(tmp_path, "example.org", DAY)
    assert new.selector == "ms20260314-2" and not new.active
    keys = dkim.show(tmp_path, "example.org")
    assert [key.selector for key in keys if key.active] == [old.selector]  # still signing old
    assert dkim.pending_key(keys) == new
    assert (tmp_path / "dkim" / dkim.key_file_name("example.org", new.selector)).stat().st_mode & (
        0o777
    ) == 0o600

    dkim.activate(tmp_path, "example.org", new.selector)
    assert dkim.read_selectors(tmp_path)["example.org"] == new.selector
    keys = dkim.show(tmp_path, "example.org")
    assert dkim.pending_key(keys) is None  # the old key is behind, not pending
    assert {key.selector: key.active for key in keys} == {old.selector: False, new.selector: True}

    with pytest.raises(UsageError, match="cannot be retired"):
        dkim.retire(tmp_path, "example.org", new.selector)
    retired = dkim.retire(tmp_path, "example.org")
    assert [key.selector for key in retired] == [old.selector]
    assert [key.selector for key in dkim.show(tmp_path, "example.org")] == [new.selector]
    with pytest.raises(UsageError, match="no retired-but-published"):
        dkim.retire(tmp_path, "example.org")


def test_retire_without_selector_leaves_a_pending_key_alone(tmp_path: Path) -> None:
    dkim.ensure_key(tmp_path, "example.org", DAY)
    pending = dkim.create_rotation_key(tmp_path, "example.org", DAY)
    with pytest.raises(UsageError):
        dkim.retire(tmp_path, "example.org")
    assert dkim.pending_key(dkim.show(tmp_path, "example.org")) == pending
    # Named, it goes: that is how an operator abandons a rotation.
    assert dkim.retire(tmp_path, "example.org", pending.selector) == [pending]


def test_activating_an_unknown_selector_is_refused(tmp_path: Path) -> None:
    dkim.ensure_key(tmp_path, "example.org", DAY)
    with pytest.raises(UsageError, match="no DKIM key with selector"):
        dkim.activate(tmp_path, "example.org", "ms19990101")


def test_the_switch_waits_for_dns_unless_told_now(tmp_path: Path) -> None:
    key = dkim.create_rotation_key(tmp_path, "example.org", DAY)
    other = dkim.create_rotation_key(tmp_path, "example.org", DAY)
    chunks = [key.txt[:255], key.txt[255:]]
    drill = "".join(f'"{chunk}" ' for chunk in chunks).strip() + "\n"
    answers = dkim_rotation.parse_txt_answers(drill)
    assert answers == [key.txt]
    assert dkim.txt_strings_match(key, answers)
    assert not dkim.txt_strings_match(other, answers)  # an old or wrong record is not enough
    assert not dkim.txt_strings_match(key, dkim_rotation.parse_txt_answers(""))
    assert not dkim.txt_strings_match(key, ["v=spf1 -all"])
    assert dkim_rotation.should_switch(now=False, visible=True)
    assert not dkim_rotation.should_switch(now=False, visible=False)
    assert dkim_rotation.should_switch(now=True, visible=None)


def test_a_record_with_spaces_inside_p_still_matches(tmp_path: Path) -> None:
    key = dkim.create_rotation_key(tmp_path, "example.org", DAY)
    spaced = f"v=DKIM1;  k=rsa;  p={key.public_key[:100]} {key.public_key[100:]}"
    assert dkim.txt_strings_match(key, [spaced])


def _stack_answering(record: str = "") -> FakeContainers:
    """The running stack as rotate sees it: every service up, the resolver answering `record`
    (drill prints nothing for NXDOMAIN)."""
    return FakeContainers(by_marker=[("drill", record.encode())], running=("resolver", "rspamd"))


def _sandbox_stack(root: Path, compose: FakeContainers) -> Stack:
    config = initial_config("mail.example.org", "example.org", {"mode": "sandbox"})
    init_stack(root, config, check_ports=False)
    return Stack(StackDir(root), config, compose)  # type: ignore[arg-type]


def test_rotate_keeps_signing_with_the_old_key_until_dns_shows_the_new_one(
    tmp_path: Path,
) -> None:
    compose = _stack_answering()  # NXDOMAIN
    stack = _sandbox_stack(tmp_path, compose)
    old = dkim.read_selectors(tmp_path)["example.org"]
    waiting = dkim_rotation.rotate(stack, "example.org", now=False)
    assert not waiting.switched and waiting.visible is False and waiting.created
    assert dkim.read_selectors(tmp_path)["example.org"] == old
    assert ["restart", "resolver"] in compose.commands  # the zone serves the new record
    assert ["restart", "rspamd"] not in compose.commands
    assert "not visible" in str(waiting)
    # The new key is in the rendered sandbox zone already.
    zone = (tmp_path / "config" / "resolver" / "unbound.conf").read_text()
    assert waiting.key.record_name in zone

    # Asked again once the record is out there: the same key, now signing.
    record = " ".join(f'"{waiting.key.txt[i : i + 255]}"' for i in range(0, 600, 255))
    compose.by_marker = [("drill", (record + "\n").encode())]
    compose.commands.clear()
    done = dkim_rotation.rotate(stack, "example.org", now=False)
    assert done.switched and not done.created and done.key.selector == waiting.key.selector
    assert dkim.read_selectors(tmp_path)["example.org"] == waiting.key.selector
    assert compose.commands[-1][:2] != ["restart", "resolver"]
    assert ["restart", "rspamd"] in compose.commands


def test_rotate_now_publishes_and_switches_with_one_restart_of_each(tmp_path: Path) -> None:
    compose = _stack_answering()
    stack = _sandbox_stack(tmp_path, compose)
    old = dkim.read_selectors(tmp_path)["example.org"]
    result = dkim_rotation.rotate(stack, "example.org", now=True)
    assert result.switched and result.visible is None and result.previous == old
    assert dkim.read_selectors(tmp_path)["example.org"] == result.key.selector != old
    assert [command for command in compose.commands if command[0] == "restart"] == [
        ["restart", "resolver", "rspamd"]
    ]
    assert not compose.sent("drill")
    assert f"the old key {old} stays published" in str(result)


def test_key_states_tell_a_waiting_rotation_from_a_replaced_key(tmp_path: Path) -> None:
    old = dkim.ensure_key(tmp_path, "example.org", DAY).key
    new = dkim.create_rotation_key(tmp_path, "example.org", DAY)
    keys = dkim.show(tmp_path, "example.org")
    assert dkim.key_states(keys) == {old.selector: dkim.ACTIVE, new.selector: dkim.PENDING}
    dkim.activate(tmp_path, "example.org", new.selector)
    keys = dkim.show(tmp_path, "example.org")
    assert dkim.key_states(keys) == {old.selector: dkim.RETIRING, new.selector: dkim.ACTIVE}
