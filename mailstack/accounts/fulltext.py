"""`mailbox reindex`: rebuild the full-text index (features.search, Dovecot's fts-xapian) of one
mailbox or of all, synchronously: the index is emptied (`doveadm fts rescan`), then every
folder's messages are indexed again (`doveadm index`). Searches meanwhile still answer: Dovecot
indexes what a search needs first, or searches the messages themselves."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mailstack.accounts.mailstore import MAIL_SERVICE, require_mailbox
from mailstack.adapters.psql import Executor
from mailstack.errors import ExternalCommandFailed, MailstackError

REINDEX_TIMEOUT = 12 * 3600.0  # every mailbox of a large server; running it again is harmless


@dataclass(frozen=True)
class Reindexed:
    mailbox: str  # an address, or "every mailbox"
    seconds: float

    def lines(self) -> list[str]:
        return [f"rebuilt the full-text index of {self.mailbox} in {self.seconds:.1f} s"]


def reindex(compose: Executor, address: str | None) -> Reindexed:
    """Rebuild one mailbox's index (address) or every mailbox's (None)."""
    who = ["-u", address] if address else ["-A"]
    if address:
        require_mailbox(compose, address, hint="mailstack mailbox list shows the mailboxes")
    started = time.monotonic()
    for argv in (["fts", "rescan", *who], ["index", *who, "*"]):
        try:
            compose.exec(MAIL_SERVICE, ["doveadm", *argv], input=b"", timeout=REINDEX_TIMEOUT)
        except ExternalCommandFailed as failed:
            last = failed.output.strip().splitlines()[-1:] or ["doveadm failed"]
            raise MailstackError(
                f"reindexing stopped: {last[0][:300]}",
                hint="searches still work (Dovecot indexes what they need); run it again",
            ) from None
    return Reindexed(address or "every mailbox", time.monotonic() - started)
