"""Full-text search (features.search), turned on for this module on the session stack and off
again after it: among 1,000 messages, SEARCH BODY over IMAPS finds exactly the ones whose body
holds a word, from Xapian's index, which lives on the index volume and not beside the mail;
`mailbox reindex` rebuilds it and the answers stay the same."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import PROJECT, RunningStack
from tests.e2e.mail import imaps

pytestmark = pytest.mark.e2e

MESSAGES = 1000
MARKED = (17, 500, 999)  # the messages whose body holds the word (1-based: their UIDs)


def volume_data(name: str) -> Path:
    return Path(f"/var/lib/docker/volumes/{PROJECT}_{name}/_data")


@dataclass(frozen=True)
class Searchable:
    stack: RunningStack
    address: str
    password: str
    word: str
    veteran: tuple[str, str, bytes]  # a mailbox from before search was on, its UIDVALIDITY


def _set_search(stack: RunningStack, on: bool) -> None:
    path = stack.root / "mailstack.yaml"
    config = yaml.safe_load(path.read_text())
    config.setdefault("features", {})["search"] = on
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    stack.cli("render")
    stack.cli("up", timeout=900)


def _message(number: int, word: str) -> bytes:
    extra = f" The code word is {word}." if number in MARKED else ""
    return (
        f"From: Filler <filler@sender.example>\r\nTo: reader@example.test\r\n"
        f"Subject: quarterly note {number}\r\nMessage-ID: <note-{number}@sender.example>\r\n"
        f"\r\nNote {number} about the quarterly figures and the budget.{extra}\r\n"
    ).encode()


def _uid_state(stack: RunningStack, address: str, password: str) -> tuple[bytes, bytes, bytes]:
    """(UIDVALIDITY, UIDs, flagged UIDs) of a mailbox's INBOX."""
    with imaps(stack) as imap:
        imap.login(address, password)
        imap.select("INBOX", readonly=True)
        validity = imap.response("UIDVALIDITY")[1][0]
        uids = imap.uid("SEARCH", "ALL")[1][0]
        flagged = imap.uid("SEARCH", "FLAGGED")[1][0]
        imap.logout()
    assert isinstance(validity, bytes) and isinstance(uids, bytes) and isinstance(flagged, bytes)
    return validity, uids, flagged


def _veteran(stack: RunningStack) -> tuple[str, str, bytes]:
    """A mailbox with three messages, the second flagged, made before search is on."""
    address, password = stack.new_mailbox()
    with imaps(stack) as imap:
        imap.login(address, password)
        for number in (1, 2, 3):
            assert imap.append("INBOX", "", None, _message(number, "none"))[0] == "OK"
        imap.select("INBOX")
        assert imap.uid("STORE", "2", "+FLAGS", "(\\Flagged)")[0] == "OK"
        imap.logout()
    validity, uids, flagged = _uid_state(stack, address, password)
    assert (uids, flagged) == (b"1 2 3", b"2")
    return address, password, validity


@pytest.fixture(scope="module")
def searchable(stack: RunningStack) -> Iterator[Searchable]:
    before = (stack.root / "mailstack.yaml").read_text()
    veteran = _veteran(stack)
    _set_search(stack, True)
    try:
        address, password = stack.new_mailbox()
        word = f"zanquokka{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        with imaps(stack) as imap:
            imap.login(address, password)
            for number in range(1, MESSAGES + 1):
                status, _ = imap.append("INBOX", "", None, _message(number, word))
                assert status == "OK", number
            imap.logout()
        print(f"appended {MESSAGES} messages in {time.monotonic() - started:.1f} s")
        yield Searchable(stack, address, password, word, veteran)
    finally:
        (stack.root / "mailstack.yaml").write_text(before)
        stack.cli("render")
        stack.cli("up", timeout=900)


def search_body(found: Searchable, word: str) -> tuple[list[int], float]:
    with imaps(found.stack) as imap:
        imap.login(found.address, found.password)
        imap.select("INBOX", readonly=True)
        started = time.monotonic()
        status, data = imap.uid("SEARCH", "BODY", word)
        took = time.monotonic() - started
        imap.logout()
    assert status == "OK", data
    return sorted(int(uid) for uid in data[0].split()), took


def test_search_body_finds_exactly_the_messages_holding_the_word(searchable: Searchable) -> None:
    uids, took = search_body(searchable, searchable.word)
    print(f"first SEARCH BODY over {MESSAGES} messages: {took * 1000:.0f} ms")
    assert uids == list(MARKED)
    assert search_body(searchable, "quarterly")[0] == list(range(1, MESSAGES + 1))
    assert search_body(searchable, f"absent{uuid.uuid4().hex[:8]}")[0] == []
    times = [search_body(searchable, searchable.word)[1] for _ in range(10)]
    print(f"SEARCH BODY, median of 10: {statistics.median(times) * 1000:.0f} ms")


def test_the_index_is_on_its_own_volume_not_beside_the_mail(searchable: Searchable) -> None:
    search_body(searchable, searchable.word)  # indexed by now, whatever the queue did
    local, domain = searchable.address.split("@")
    index_home = volume_data("mail-index") / domain / local
    xapian = index_home / "xapian-indexes"
    assert xapian.is_dir(), sorted(p.name for p in index_home.iterdir())
    assert any(p.name.startswith("db_") for p in xapian.iterdir())
    assert list(index_home.rglob("dovecot.index*"))  # Dovecot's own indexes moved too
    mail_home = volume_data("mail") / domain / local
    assert not list(mail_home.rglob("xapian-indexes"))
    assert not list(mail_home.rglob("dovecot.index*"))  # a backup carries no index
    assert (
        len(list((mail_home / "Maildir" / "cur").iterdir()))
        + len(list((mail_home / "Maildir" / "new").iterdir()))
        == MESSAGES
    )


def test_reindex_rebuilds_and_the_answers_stay_the_same(searchable: Searchable) -> None:
    result = searchable.stack.cli("mailbox", "reindex", searchable.address)
    assert f"rebuilt the full-text index of {searchable.address}" in result.stdout
    assert search_body(searchable, searchable.word)[0] == list(MARKED)
    # `--all` is doveadm's -A over the same steps (unit-tested): on the shared stack it would
    # reindex every other module's mailboxes too (minutes, one of them 58 MB).


def test_reindex_of_an_unknown_mailbox_is_one_line(searchable: Searchable) -> None:
    unknown = f"nobody-{uuid.uuid4().hex[:6]}@{searchable.address.split('@')[1]}"
    result = searchable.stack.cli("mailbox", "reindex", unknown, check=False)
    assert result.returncode == 1
    assert f"ADDRESS: {unknown} is not a mailbox here" in result.stderr
    assert "Traceback" not in result.stderr


def test_uids_and_flags_survive_the_index_move(searchable: Searchable) -> None:
    # Turning search on moved Dovecot's indexes to their volume: UIDs, UIDVALIDITY and
    # flags live in the Maildir, so a client keeps its cache.
    address, password, validity = searchable.veteran
    assert _uid_state(searchable.stack, address, password) == (validity, b"1 2 3", b"2")
