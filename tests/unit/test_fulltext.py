"""Full-text search (features.search): off by default; on, Dovecot loads fts-xapian, keeps its
indexes on a volume of its own that backups leave out, and `mailbox reindex` rebuilds one
mailbox's index or every one's with doveadm, refusing bad input in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mailstack.backup import layout
from mailstack.errors import ExternalCommandFailed
from mailstack.stack import stackfiles
from mailstack.stack.config import validate_config
from mailstack.stack.render import RenderInputs, render_stack
from mailstack.stack.stackdir import Stack, StackDir
from tests.unit.clirun import invoke, one_error_line
from tests.unit.compose_check import assert_compose_accepts
from tests.unit.fakes import FakeContainers

BASE: dict[str, Any] = {"hostname": "mail.example.org", "domain": "example.org"}
# doveadm under an address-space limit below fts_xapian's lowmemory: it writes as it goes.
LIMITED = 'ulimit -v 393216 && exec doveadm "$@"'


def _rendered(search: bool | None) -> dict[str, bytes]:
    data = dict(BASE)
    if search is not None:
        data["features"] = {"search": search}
    return render_stack(RenderInputs(validate_config(data), "1"))


def _dovecot_conf(rendered: dict[str, bytes]) -> str:
    return rendered["config/dovecot/dovecot.conf"].decode()


def test_search_is_off_by_default_and_dovecot_stays_as_it_was() -> None:
    assert validate_config(BASE).features.search is False
    rendered = _rendered(None)
    conf = _dovecot_conf(rendered)
    assert "fts_xapian" not in conf and "fts =" not in conf
    assert "mail_location = maildir:~/Maildir\n" in conf
    compose = yaml.safe_load(rendered["compose.yaml"])
    assert "mail-index" not in compose["volumes"]
    assert compose["services"]["dovecot"]["mem_limit"] == "256m"


def test_with_search_on_the_indexes_live_on_a_volume_of_their_own(tmp_path: Path) -> None:
    rendered = _rendered(True)
    conf = _dovecot_conf(rendered)
    assert "mail_location = maildir:~/Maildir:INDEX=/var/mail-index/%d/%n\n" in conf
    assert "mail_plugins = $mail_plugins quota mail_crypt quota_clone fts fts_xapian\n" in conf
    assert "  fts = xapian\n" in conf and "  fts_autoindex = yes\n" in conf
    # Bounded memory: processes under 400 MB of address space write as they index.
    assert "  fts_xapian = partial=3 full=20 verbose=0 lowmemory=400\n" in conf
    assert "  vsz_limit = 384M\n" in conf
    assert "  fts_enforced = no\n" in conf  # a failed index searches the mail, never errs
    compose = yaml.safe_load(rendered["compose.yaml"])
    dovecot = compose["services"]["dovecot"]
    assert "mail-index:/var/mail-index" in dovecot["volumes"]
    assert dovecot["mem_limit"] == "512m"
    users = [
        n
        for n, s in compose["services"].items()
        if "mail-index:/var/mail-index" in s.get("volumes", [])
    ]
    assert users == ["dovecot"]  # no other container reads the plaintext index
    assert_compose_accepts(rendered, tmp_path)


def test_backups_leave_the_index_volume_out() -> None:
    assert "mail-index" not in layout.VOLUMES
    assert "mail" in layout.VOLUMES


def test_a_bad_search_value_is_one_line_naming_the_key() -> None:
    with pytest.raises(Exception, match=r"features\.search") as refused:
        validate_config({**BASE, "features": {"search": "maybe"}})
    assert "\n" not in str(refused.value).strip()


def _loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, search: bool = True, **answers: Any
) -> FakeContainers:
    """A sandbox stack the CLI loads, its containers fake (answering as `answers` say)."""
    initial = stackfiles.initial_config(
        "mail.example.test", "example.test", {"mode": "sandbox", "features": {"search": search}}
    )
    stackfiles.init_stack(tmp_path / "stack", initial, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    fake = FakeContainers(running=("dovecot",), **answers)
    stack = Stack(stack_dir, stack_dir.load_config(), fake)  # type: ignore[arg-type]
    monkeypatch.setattr(Stack, "load", lambda _: stack)
    return fake


def test_reindex_empties_then_rebuilds_one_mailboxs_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _loaded(tmp_path, monkeypatch)
    code, text = invoke("mailbox", "reindex", "Alice@Example.test")
    assert code == 0, text
    assert "rebuilt the full-text index of alice@example.test" in text
    assert [call.argv for call in fake.calls] == [
        ["doveadm", "user", "-f", "home", "alice@example.test"],
        ["sh", "-c", LIMITED, "doveadm", "fts", "rescan", "-u", "alice@example.test"],
        ["sh", "-c", LIMITED, "doveadm", "index", "-u", "alice@example.test", "*"],
    ]


def test_reindex_all_takes_every_mailbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _loaded(tmp_path, monkeypatch)
    code, text = invoke("mailbox", "reindex", "--all", "--json")
    assert code == 0, text
    assert '"mailbox": "every mailbox"' in text
    assert [call.argv for call in fake.calls] == [
        ["sh", "-c", LIMITED, "doveadm", "fts", "rescan", "-A"],
        ["sh", "-c", LIMITED, "doveadm", "index", "-A", "*"],
    ]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "give ADDRESS or --all (not both)"),
        (("a@example.test", "--all"), "give ADDRESS or --all (not both)"),
        (("not an address",), "ADDRESS: 'not an address'"),
    ],
)
def test_reindex_refuses_bad_arguments_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], expected: str
) -> None:
    fake = _loaded(tmp_path, monkeypatch)
    code, text = invoke("mailbox", "reindex", *args)
    assert code == 2
    assert one_error_line(text).startswith(expected)
    assert fake.calls == []


def test_reindex_with_search_off_says_how_to_turn_it_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _loaded(tmp_path, monkeypatch, search=False)
    code, text = invoke("mailbox", "reindex", "--all")
    assert code == 1
    assert one_error_line(text).startswith("features.search is off in mailstack.yaml")
    assert fake.calls == []


def test_reindex_of_an_unknown_mailbox_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = ExternalCommandFailed("doveadm user (exit 67)", "userdb lookup: user doesn't exist")
    fake = _loaded(tmp_path, monkeypatch, by_marker=[("user -f home", unknown)])
    code, text = invoke("mailbox", "reindex", "nobody@example.test")
    assert code == 1
    assert one_error_line(text) == "ADDRESS: nobody@example.test is not a mailbox here"
    assert len(fake.calls) == 1  # nothing was emptied


DOVEADM_ALL = (
    "doveadm(alice@example.test): Info: FTS Xapian: 'INBOX' (/x/db_1) indexes do not exist.\n"
    "doveadm(broken@example.test): Error: open(/var/mail/example.test/broken/Maildir) failed: "
    "Permission denied\n"
    "doveadm(zed@example.test): Info: FTS Xapian: 'Projects' (/x/db_2) indexes do not exist.\n"
    "doveadm(yves@example.test)<4711><kX9zQ1a>: Error: Mailbox INBOX: Corrupted index file\n"
)


def test_reindex_all_rebuilds_the_others_and_names_a_mailbox_it_could_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = ExternalCommandFailed("docker compose exec (exit 75)", DOVEADM_ALL)
    fake = _loaded(tmp_path, monkeypatch, by_marker=[("doveadm index", failed)])
    code, text = invoke("mailbox", "reindex", "--all")
    assert code == 1
    assert "every mailbox but 2" in text
    assert "  broken@example.test: open(/var/mail/example.test/broken/Maildir) failed" in text
    assert "  yves@example.test: Mailbox INBOX: Corrupted index file" in text
    assert "2 mailbox(es) could not be reindexed (listed above)" in text
    assert [call.argv[4] for call in fake.calls] == ["fts", "index"]  # both steps ran


def test_a_single_mailboxs_failure_quotes_doveadms_error_not_its_last_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = ExternalCommandFailed("docker compose exec (exit 75)", DOVEADM_ALL)
    _loaded(tmp_path, monkeypatch, by_marker=[("doveadm index", failed)])
    code, text = invoke("mailbox", "reindex", "alice@example.test")
    assert code == 1
    line = one_error_line(text)
    assert line.startswith("reindexing stopped: open(/var/mail/example.test/broken/Maildir)")
