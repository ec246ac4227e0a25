"""`mailbox import`'s pure parts and its conversation with the dovecot container: the
source URL's rules, the imapc settings (quoted, the password only on stdin), doveadm's
folder listing and errors, and the settings file removed whatever happens. The real import
from a second Dovecot is tests/e2e/test_mailbox_import.py."""

from __future__ import annotations

import pytest

from mailstack.accounts import mailimport
from mailstack.accounts.mailimport import Folder, ImportResult, Source
from mailstack.errors import ExternalCommandFailed, MailstackError, UsageError
from tests.unit.fakes import Call, FakeContainers

SOURCE = Source("imap.old.example", 993, True, "alice@old.example")
PASSWORD = 'pa"ss\\word with spaces'  # quote and backslash: both must be escaped


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("imaps://imap.old.example", ("imap.old.example", 993, True)),
        ("imaps://IMAP.Old.Example:1993", ("imap.old.example", 1993, True)),
        ("imap://imap.old.example", ("imap.old.example", 143, False)),
        ("imaps://192.0.2.8", ("192.0.2.8", 993, True)),
        ("imaps://[2001:db8::8]:993", ("2001:db8::8", 993, True)),
    ],
)
def test_source_urls(url: str, expected: tuple[str, int, bool]) -> None:
    source = mailimport.parse_source(url, "alice")
    assert (source.host, source.port, source.implicit_tls) == expected


@pytest.mark.parametrize(
    ("url", "user", "said"),
    [
        ("pop3://imap.old.example", "alice", "allowed: imaps://HOST[:PORT]"),
        ("imaps://alice:secret@imap.old.example", "alice", "the password is asked for"),
        ("imaps://imap.old.example/INBOX", "alice", "give the host and port alone"),
        ("imaps://imap.old.example:99999", "alice", "is not a URL"),
        ("imaps://bad_host!", "alice", "--from"),
        ("imaps://imap.old.example", "", "--user"),
        ("imaps://imap.old.example", "alice\nimapc_host = evil", "--user"),
    ],
)
def test_bad_sources_are_one_line_naming_the_option(url: str, user: str, said: str) -> None:
    with pytest.raises(UsageError) as refused:
        mailimport.parse_source(url, user)
    assert said in refused.value.message and "\n" not in refused.value.message


def test_settings_quote_user_and_password_and_verify_tls() -> None:
    text = mailimport.settings_text(SOURCE, PASSWORD, "/run/mailstack/x.ca.pem")
    lines = text.splitlines()
    assert lines[0] == "!include /etc/dovecot/dovecot.conf"  # the stack's own, then these
    assert 'imapc_password = "pa\\"ss\\\\word with spaces"' in lines
    assert 'imapc_user = "alice@old.example"' in lines
    assert "imapc_ssl = imaps" in lines and "imapc_ssl_verify = yes" in lines
    assert "ssl_client_ca_file = /run/mailstack/x.ca.pem" in lines
    starttls = Source("imap.old.example", 143, False, "alice")
    assert "imapc_ssl = starttls" in mailimport.settings_text(starttls, "pw", "/ca").splitlines()
    with pytest.raises(UsageError, match="the password"):
        mailimport.settings_text(SOURCE, "two\nlines", "/ca")


def test_folder_listing_puts_inbox_first() -> None:
    output = "mailbox\tmessages\nArchive/2019\t1\nArchive\t2\nINBOX\t3\n"
    assert mailimport.parse_folders(output) == (
        Folder("INBOX", 3),
        Folder("Archive", 2),
        Folder("Archive/2019", 1),
    )


def test_doveadm_error_is_its_first_error_line_cleaned_and_bounded() -> None:
    output = (
        "doveadm(alice): Info: connecting\n"
        "doveadm(alice): Error: imapc(imap.old.example:993): Authentication failed: "
        "[AUTHENTICATIONFAILED] Authentication failed.\x1b[0m\n"
        "doveadm(alice): Error: second\n"
    )
    said = mailimport.doveadm_error(output)
    assert said.startswith("imapc(imap.old.example:993): Authentication failed")
    assert "\x1b" not in said and "second" not in said
    assert len(mailimport.doveadm_error("Error: " + "x" * 1000)) == 300


def _fake(fail_sync: bool = False) -> FakeContainers:
    def sync(call: Call) -> bytes | Exception:
        if fail_sync:
            return ExternalCommandFailed("docker compose exec", "Error: imapc(x): Disconnected")
        return b""

    listings = iter(
        [
            b"mailbox\tmessages\nINBOX\t3\nArchive\t2\n",  # at the source
            b"mailbox\tmessages\nINBOX\t1\n",  # here, before
            b"mailbox\tmessages\nINBOX\t4\nArchive\t2\n",  # here, after
        ]
    )
    return FakeContainers(
        by_marker=[
            ("mailbox status", lambda call: next(listings)),
            ("sync -1 -R", sync),
        ]
    )


def test_the_import_lists_syncs_one_way_and_removes_its_settings() -> None:
    fake = _fake()
    said: list[str] = []
    result = mailimport.import_mail(
        fake, "alice@example.org", SOURCE, PASSWORD, b"CA PEM", progress=said.append
    )
    assert result.copied == 5
    assert result.lines()[-1].startswith("2 folders, 5 messages at the source; 5 copied now")
    argvs = [call.argv for call in fake.calls]
    assert argvs[0] == ["doveadm", "user", "-f", "home", "alice@example.org"]
    sync = [argv for argv in argvs if "sync" in argv]
    assert sync and sync[0][-5:] == ["-1", "-R", "-u", "alice@example.org", "imapc:"]
    assert all(PASSWORD not in " ".join(argv) for argv in argvs)  # never on an argv
    written = [call for call in fake.calls if "imapc_password = " in call.stdin]
    assert len(written) == 1 and "umask 077" in written[0].argv[-1]
    assert argvs[-1][:2] == ["rm", "-f"]
    assert said[-1] == "copying 5 messages in 2 folders (dsync, one-way)"


def test_a_failed_sync_is_one_line_with_the_resume_hint_and_the_settings_are_removed() -> None:
    fake = _fake(fail_sync=True)
    with pytest.raises(MailstackError) as stopped:
        mailimport.import_mail(fake, "alice@example.org", SOURCE, PASSWORD)
    assert stopped.value.message == "the import stopped: imapc(x): Disconnected"
    assert "again to resume" in (stopped.value.hint or "")
    assert fake.calls[-1].argv[:2] == ["rm", "-f"]


def test_a_dry_run_copies_nothing() -> None:
    fake = _fake()
    result = mailimport.import_mail(fake, "alice@example.org", SOURCE, "pw", dry_run=True)
    assert not [call for call in fake.calls if "sync" in call.argv]
    assert result.lines()[1] == "  INBOX: 3 at the source, 1 here"
    assert "nothing was copied (--dry-run)" in result.lines()[-1]


def test_an_unknown_mailbox_is_named_before_anything_is_written() -> None:
    fake = FakeContainers(
        by_marker=[("doveadm user", ExternalCommandFailed("doveadm user", "unknown user"))]
    )
    with pytest.raises(MailstackError, match="is not a mailbox here"):
        mailimport.import_mail(fake, "bob@example.org", SOURCE, "pw")
    assert len(fake.calls) == 1


def test_result_counts() -> None:
    result = ImportResult(
        SOURCE, "a@example.org", False, (Folder("INBOX", 2),), (), (Folder("INBOX", 2),)
    )
    assert result.copied == 2
    assert str(SOURCE) == "alice@old.example at imaps://imap.old.example:993"
