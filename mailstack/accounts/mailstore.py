"""The stored mail in the `dovecot` container, under /var/mail/<domain>/<local part>/.

Usage comes from `doveadm quota get`, and stored mail is deleted only on an explicit purge,
by `rm` run as the mail user with the path as one argv element (never through a shell).
Sessions of removed users are ended with `doveadm kick`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from mailstack import services
from mailstack.accounts.addresses import split_address
from mailstack.adapters.psql import Executor
from mailstack.errors import ExternalCommandFailed, MailstackError, UsageError
from mailstack.units import human_size

MAIL_SERVICE = services.DOVECOT.name
# Calendars and address books (features.dav): Radicale keeps each user's under this root,
# in a directory named after the user (the address, lower case).
DAV_SERVICE = services.DAV.name
DAV_COLLECTIONS = "/var/lib/radicale/collections/collection-root"
MAIL_USER = "vmail"  # owns /var/mail (uid 5000); root in the container has no DAC override
MAIL_ROOT = "/var/mail"

# What may appear as one path component under /var/mail: not empty, not . or .., no slash.
_PATH_COMPONENT = re.compile(r"^(?!\.\.?$)[^/\x00-\x1f\x7f]{1,253}\Z")


@dataclass(frozen=True)
class StoredMail:
    """A directory of stored mail in the dovecot container."""

    path: str
    exists: bool
    size_bytes: int

    def __str__(self) -> str:
        if not self.exists:
            return f"{self.path} (no stored mail)"
        return f"{self.path} ({human_size(self.size_bytes)})"


# Asked before stored mail is deleted; the CLI prompts (or --yes answers) for it.
ConfirmPurge = Callable[[StoredMail], bool]


@dataclass(frozen=True)
class Usage:
    storage_bytes: int
    messages: int


def domain_mail_path(domain: str) -> str:
    """/var/mail/<domain>: where Dovecot keeps every mailbox of the domain."""
    return _mail_path(domain.lower())


def mailbox_mail_path(address: str) -> str:
    """/var/mail/<domain>/<local part>: a mailbox's home, as the dovecot_users view says."""
    local_part, domain = split_address(address)
    if "/" in local_part:
        raise UsageError(
            f"{address}: a local part with '/' has no mail directory of its own",
            hint="its stored mail, if any, is inside another mailbox's directory; not purged",
        )
    return _mail_path(domain, local_part)


def stored_mail(compose: Executor, path: str) -> StoredMail:
    """How much mail is stored under path (as the mail user; nothing is changed)."""
    try:
        output = _mail_exec(compose, ["du", "-sk", "--one-file-system", "--", path], MAIL_USER)
    except ExternalCommandFailed as e:
        if "No such file or directory" in e.output:
            return StoredMail(path, False, 0)
        raise ExternalCommandFailed(
            f"measuring the stored mail in {path}",
            e.output,
            hint="the dovecot service must be running (mailstack up); nothing was changed",
        ) from None
    fields = output.decode("utf-8", errors="replace").split()
    if not fields or not fields[0].isdigit():
        raise MailstackError(f"unexpected answer from du for {path}")
    return StoredMail(path, True, int(fields[0]) * 1024)


def mailbox_usage(compose: Executor) -> dict[str, Usage]:
    """{address: usage} for every active mailbox, from Dovecot's quota bookkeeping."""
    output = _mail_exec(compose, ["doveadm", "-f", "tab", "quota", "get", "-A"], timeout=300)
    return parse_quota_table(output.decode("utf-8", errors="replace"))


def parse_quota_table(text: str) -> dict[str, Usage]:
    """`doveadm -f tab quota get -A` as usage per user (STORAGE is in KiB)."""
    storage: dict[str, int] = {}
    messages: dict[str, int] = {}
    for line in text.splitlines()[1:]:  # the first line is the header
        fields = line.split("\t")
        if len(fields) < 4 or not fields[3].isdigit():
            continue
        user, kind, value = fields[0], fields[2], int(fields[3])
        if kind == "STORAGE":
            storage[user] = storage.get(user, 0) + value * 1024
        elif kind == "MESSAGE":
            messages[user] = messages.get(user, 0) + value
    return {
        user: Usage(storage.get(user, 0), messages.get(user, 0))
        for user in storage.keys() | messages.keys()
    }


def _mail_path(*components: str) -> str:
    for component in components:
        if not _PATH_COMPONENT.match(component):
            raise UsageError(f"{component!r} cannot name a mail directory")
    return "/".join((MAIL_ROOT, *components))


def confirmed_purge(
    compose: Executor, path: str, purge: bool, confirm: ConfirmPurge | None
) -> StoredMail | None:
    """Measure what a purge would delete and ask; refuse (changing nothing) unless confirmed."""
    if not purge:
        return None
    mail = stored_mail(compose, path)
    if mail.exists and (confirm is None or not confirm(mail)):
        raise MailstackError(f"not confirmed: nothing was removed and {mail} is kept")
    return mail


def delete_stored_mail(compose: Executor, mail: StoredMail) -> StoredMail:
    """Delete a directory of stored mail; the path is one argv element, never shell text."""
    # Re-derived from its components: only a path under /var/mail is ever handed to rm.
    components = mail.path.removeprefix(MAIL_ROOT + "/").split("/")
    path = _mail_path(*components)
    if path != mail.path or not 1 <= len(components) <= 2:
        raise MailstackError(f"refusing to delete {mail.path!r}: not a mail directory")
    _mail_exec(compose, ["rm", "-rf", "--one-file-system", "--", path], MAIL_USER, timeout=600)
    if stored_mail(compose, path).exists:
        raise MailstackError(f"{path} is still there after deleting it")
    return mail


def delete_collections(compose: Executor, owners: str) -> str:
    """Delete the calendars and address books (features.dav) of a mailbox (owners: its
    address) or of every mailbox of a domain (owners: *@domain); a line saying what went.
    find names each directory it deletes; the pattern is one argv element, never shell text."""
    local_part, _, domain = owners.rpartition("@")
    everyone = local_part == "*"
    if not _PATH_COMPONENT.match(owners) or not local_part or not domain:
        raise MailstackError(f"refusing to delete the collections of {owners!r}")
    pattern = owners if everyone else _glob_literal(owners)
    argv = ["find", DAV_COLLECTIONS, "-mindepth", "1", "-maxdepth", "1", "-name", pattern,
            "-print", "-exec", "rm", "-rf", "--one-file-system", "--", "{}", "+"]  # fmt: skip
    try:
        output = compose.exec(DAV_SERVICE, argv, input=b"", timeout=600)
    except ExternalCommandFailed as failed:
        if f"'{DAV_COLLECTIONS}': No such file or directory" in failed.output:
            return f"no calendars or contacts of {owners}"  # nobody has used them yet
        return (
            f"calendars and contacts of {owners} (if any) are kept: the dav service did not "
            f"answer (start it and delete them from {DAV_COLLECTIONS} in it)"
        )
    gone = [line for line in output.decode(errors="replace").splitlines() if line.strip()]
    if not gone:
        return f"no calendars or contacts of {owners}"
    return f"deleted the calendars and contacts of {owners} ({len(gone)} user(s))"


def _glob_literal(text: str) -> str:
    """A name as find's -name pattern that matches it alone."""
    return "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in text)


def kick_sessions(compose: Executor, mask: str) -> None:
    """End IMAP sessions of removed users (best effort: there may be none, or no dovecot)."""
    # "no users kicked" is exit 68; with dovecot stopped there is no session to end either.
    with contextlib.suppress(ExternalCommandFailed):
        _mail_exec(compose, ["doveadm", "kick", mask])


def require_mailbox(compose: Executor, address: str, hint: str) -> None:
    """Refuse, in one line naming ADDRESS, an address Dovecot has no mailbox for."""
    try:
        _mail_exec(compose, ["doveadm", "user", "-f", "home", address])
    except ExternalCommandFailed:
        raise MailstackError(f"ADDRESS: {address} is not a mailbox here", hint=hint) from None


def _mail_exec(
    compose: Executor, argv: list[str], user: str | None = None, timeout: float = 60
) -> bytes:
    # Empty stdin: `docker compose exec` would otherwise read the operator's terminal and
    # swallow the answer to a confirmation asked right after.
    return compose.exec(MAIL_SERVICE, argv, input=b"", user=user, timeout=timeout)
