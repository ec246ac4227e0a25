"""`mailbox reindex`: rebuild the full-text index (features.search, Dovecot's fts-xapian) of one
mailbox or of all, synchronously: the index is emptied (`doveadm fts rescan`), then every
folder's messages are indexed again (`doveadm index`). Searches meanwhile still answer: Dovecot
indexes what a search needs first, or searches the messages themselves."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from mailstack.accounts.mailimport import doveadm_error
from mailstack.accounts.mailstore import MAIL_SERVICE, require_mailbox
from mailstack.adapters.psql import Executor
from mailstack.errors import ExternalCommandFailed, MailstackError

REINDEX_TIMEOUT = 12 * 3600.0  # every mailbox of a large server; running it again is harmless
# doveadm indexes in its own process, which has no vsz_limit: this address-space limit (KiB)
# puts it under fts_xapian's lowmemory (dovecot.conf), so it writes as it goes instead of
# growing past the container's memory limit.
ADDRESS_SPACE_KIB = 384 * 1024
# With -A doveadm goes on past a mailbox it cannot do and names it: "doveadm(user): Error: …",
# or "doveadm(user)<pid><session>: Error: …" from inside the user's mail storage.
_USER_ERROR = re.compile(
    r"^doveadm\(([^)]+)\)(?:<[^>]*>)*: (?:Error|Fatal|Panic): (.*)$", re.MULTILINE
)


@dataclass(frozen=True)
class Reindexed:
    mailbox: str  # an address, or "every mailbox"
    seconds: float
    failed: tuple[tuple[str, str], ...] = ()  # (mailbox, doveadm's error): not rebuilt

    def lines(self) -> list[str]:
        if not self.failed:
            return [f"rebuilt the full-text index of {self.mailbox} in {self.seconds:.1f} s"]
        return [
            f"rebuilt the full-text index of every mailbox but {len(self.failed)} in "
            f"{self.seconds:.1f} s; not rebuilt (searches there read the mail itself):",
            *(f"  {mailbox}: {error}" for mailbox, error in self.failed),
        ]


def reindex(compose: Executor, address: str | None) -> Reindexed:
    """Rebuild one mailbox's index (address) or every mailbox's (None); with every mailbox, one
    that doveadm cannot do is named in the result and the others are still rebuilt."""
    who = ["-u", address] if address else ["-A"]
    if address:
        require_mailbox(compose, address, hint="mailstack mailbox list shows the mailboxes")
    started = time.monotonic()
    failed: dict[str, str] = {}
    for argv in (["fts", "rescan", *who], ["index", *who, "*"]):
        try:
            compose.exec(MAIL_SERVICE, bounded_doveadm(argv), input=b"", timeout=REINDEX_TIMEOUT)
        except ExternalCommandFailed as error:
            named = mailbox_errors(error.output)
            if address is not None or not named:
                raise MailstackError(
                    f"reindexing stopped: {doveadm_error(error.output)}",
                    hint="searches still work (Dovecot indexes what they need); run it again",
                ) from None
            for mailbox, text in named:
                failed.setdefault(mailbox, text)
    return Reindexed(
        address or "every mailbox", time.monotonic() - started, tuple(sorted(failed.items()))
    )


def bounded_doveadm(argv: list[str]) -> list[str]:
    """doveadm with its arguments under the address-space limit (argv stays argv: "$@")."""
    limited = f'ulimit -v {ADDRESS_SPACE_KIB} && exec doveadm "$@"'
    return ["sh", "-c", limited, "doveadm", *argv]


def mailbox_errors(output: str) -> list[tuple[str, str]]:
    """doveadm's errors that name a mailbox, each (mailbox, its first error), bounded."""
    found: dict[str, str] = {}
    for mailbox, text in _USER_ERROR.findall(output):
        cleaned = "".join(ch for ch in text if ch.isprintable())[:300]
        found.setdefault(mailbox, cleaned)
    return list(found.items())
