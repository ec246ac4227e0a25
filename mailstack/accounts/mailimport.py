"""`mailbox import`: a mailbox's mail, folders and flags from another IMAP server, through
Dovecot's own migration path (dsync over imapc) inside the dovecot container.

The sync is one-way and merging (`doveadm sync -1 -R`): mail already here stays, nothing is
ever deleted on either side, and a second run brings only what is new at the source (dsync
matches messages it already copied), so an interrupted import resumes by running it again.

The source's password never reaches an argv or a log: the imapc settings (host, user,
password, the CAs that verify the source's certificate) go over the exec's stdin into a
root-only file in the container's tmpfs, which each doveadm reads with `-c` (including the
stack's own dovecot.conf first) and which is removed when the import ends.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from mailstack.accounts.mailstore import require_mailbox
from mailstack.adapters.psql import Executor
from mailstack.errors import ExternalCommandFailed, MailstackError, UsageError
from mailstack.stack.config_values import normalize_domain

MAIL_SERVICE = "dovecot"
SETTINGS_DIR = "/run/mailstack"  # root-only tmpfs (the dovecot entrypoint makes it 0700/0710)
STACK_CONFIG = "/etc/dovecot/dovecot.conf"
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"
CA_DIR = "/tmp"  # noqa: S108  # the container's own tmpfs
DEFAULT_PORTS = {"imaps": 993, "imap": 143}
MAX_VALUE = 512
SYNC_TIMEOUT = 6 * 3600.0  # a large mailbox over a slow link; re-running resumes
_DOVEADM_ERROR = re.compile(r"(?:Error|Fatal): (.*)")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Source:
    """The server mail comes from: imaps (implicit TLS) or imap (STARTTLS, required)."""

    host: str
    port: int
    implicit_tls: bool
    user: str

    def __str__(self) -> str:
        scheme = "imaps" if self.implicit_tls else "imap"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user} at {scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class Folder:
    name: str
    messages: int


@dataclass(frozen=True)
class ImportResult:
    source: Source
    address: str
    dry_run: bool
    at_source: tuple[Folder, ...]
    here_before: tuple[Folder, ...]
    here_after: tuple[Folder, ...]

    @property
    def copied(self) -> int:
        return _total(self.here_after) - _total(self.here_before)

    def lines(self) -> list[str]:
        before = {folder.name: folder.messages for folder in self.here_before}
        after = {folder.name: folder.messages for folder in self.here_after}
        lines = [f"{'would import' if self.dry_run else 'imported'} from {self.source}:"]
        for folder in self.at_source:
            here = after.get(folder.name, 0) if not self.dry_run else before.get(folder.name, 0)
            lines.append(f"  {folder.name}: {folder.messages} at the source, {here} here")
        total = _total(self.at_source)
        if self.dry_run:
            lines.append(
                f"{len(self.at_source)} folders, {total} messages at the source; nothing was "
                "copied (--dry-run)"
            )
        else:
            lines.append(
                f"{len(self.at_source)} folders, {total} messages at the source; {self.copied} "
                f"copied now into {self.address} (flags kept; nothing deleted on either side)"
            )
        return lines


def _total(folders: tuple[Folder, ...]) -> int:
    return sum(folder.messages for folder in folders)


# --- input -------------------------------------------------------------------------------


def parse_source(url: str, user: str) -> Source:
    """--from imaps://HOST[:PORT] or imap://HOST[:PORT]; --user the sign-in name there."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UsageError(f"--from: {url[:120]!r} is not a URL ({e})") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise UsageError(
            f"--from: {url[:120]!r}: allowed: imaps://HOST[:PORT] (implicit TLS) or "
            "imap://HOST[:PORT] (STARTTLS)"
        )
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
        raise UsageError(
            f"--from: {url[:120]!r}: give the host and port alone (the user is --user, the "
            "password is asked for)"
        )
    return Source(
        _host(parts.hostname, url),
        port or DEFAULT_PORTS[parts.scheme],
        parts.scheme == "imaps",
        _setting_value("--user", user),
    )


def _host(host: str, url: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return normalize_domain(host)
    except ValueError as e:
        raise UsageError(f"--from: {url[:120]!r}: the host {e}") from None


def _setting_value(name: str, value: str) -> str:
    if not value or len(value) > MAX_VALUE or not value.isprintable():
        raise UsageError(
            f"{name}: {value[:80]!r}: allowed: 1 to {MAX_VALUE} printable characters, one line"
        )
    return value


def _quoted(value: str) -> str:
    """A Dovecot config string: double quotes, backslash and quote escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def settings_text(source: Source, password: str, ca_file: str) -> str:
    """The imapc settings the import's doveadm runs read after the stack's own config."""
    _setting_value("the password", password)
    lines = [
        f"!include {STACK_CONFIG}",
        f"imapc_host = {source.host}",
        f"imapc_port = {source.port}",
        f"imapc_ssl = {'imaps' if source.implicit_tls else 'starttls'}",
        "imapc_ssl_verify = yes",
        f"ssl_client_ca_file = {ca_file}",
        f"imapc_user = {_quoted(source.user)}",
        f"imapc_password = {_quoted(password)}",
        # dsync compares sizes and a few headers of messages it already copied.
        "imapc_features = rfc822.size fetch-headers",
        "mail_prefetch_count = 20",
    ]
    return "\n".join(lines) + "\n"


# --- the import ----------------------------------------------------------------------------


def import_mail(
    compose: Executor,
    address: str,
    source: Source,
    password: str,
    ca_pem: bytes | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Copy (or with dry_run, only count) the source's folders and mail into address."""
    require_mailbox(compose, address, hint=f"make it first: mailstack mailbox add {address}")
    with _settings_file(compose, source, password, ca_pem) as settings:
        _say(progress, f"listing the folders of {source}")
        at_source = _folders(compose, settings, address, remote=True)
        here_before = _folders(compose, settings, address, remote=False)
        if dry_run:
            return ImportResult(source, address, True, at_source, here_before, here_before)
        total = _total(at_source)
        _say(progress, f"copying {total} messages in {len(at_source)} folders (dsync, one-way)")
        _doveadm(
            compose,
            settings,
            ["sync", "-1", "-R", "-u", address, "imapc:"],
            timeout=SYNC_TIMEOUT,
        )
        here_after = _folders(compose, settings, address, remote=False)
    return ImportResult(source, address, False, at_source, here_before, here_after)


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


@contextmanager
def _settings_file(
    compose: Executor, source: Source, password: str, ca_pem: bytes | None
) -> Iterator[str]:
    """The settings (and the CA bundle, when given) as root-only files for the import's
    runs; removed when it ends, whatever happened."""
    token = uuid.uuid4().hex
    name = f"{SETTINGS_DIR}/import-{token}"
    # The CAs are public and read after doveadm drops to the mail user: world-readable in /tmp.
    ca_file = f"{CA_DIR}/import-{token}.ca.pem" if ca_pem else SYSTEM_CAS
    text = settings_text(source, password, ca_file).encode()
    write = f"umask 077; cat > {shlex.quote(name)}.conf"
    compose.exec(MAIL_SERVICE, ["sh", "-c", write], input=text)
    try:
        if ca_pem:
            compose.exec(
                MAIL_SERVICE, ["sh", "-c", f"umask 022; cat > {shlex.quote(ca_file)}"], input=ca_pem
            )
        yield f"{name}.conf"
    finally:
        leftovers = [f"{name}.conf", *([ca_file] if ca_pem else [])]
        compose.exec(MAIL_SERVICE, ["rm", "-f", *leftovers], input=b"")


def _doveadm(compose: Executor, settings: str, argv: list[str], timeout: float = 300) -> bytes:
    try:
        return compose.exec(
            MAIL_SERVICE, ["doveadm", "-c", settings, *argv], input=b"", timeout=timeout
        )
    except ExternalCommandFailed as failed:
        raise MailstackError(
            f"the import stopped: {doveadm_error(failed.output)}",
            hint="run the same command again to resume: what was copied stays",
        ) from None


def doveadm_error(output: str) -> str:
    """doveadm's first error line, one line and bounded (it quotes the source's answer)."""
    for line in output.splitlines():
        found = _DOVEADM_ERROR.search(line)
        if found:
            text = found.group(1)
            break
    else:
        text = output.strip().splitlines()[-1] if output.strip() else "doveadm failed"
    cleaned = "".join(ch for ch in text if ch.isprintable())
    return cleaned[:300]


def _folders(compose: Executor, settings: str, address: str, remote: bool) -> tuple[Folder, ...]:
    """Each folder and its message count, at the source (imapc) or here."""
    location = ["-o", "mail_location=imapc:"] if remote else []
    output = _doveadm(
        compose,
        settings,
        [*location, "-f", "tab", "mailbox", "status", "-u", address, "messages", "*"],
    )
    return parse_folders(output.decode(errors="replace"))


def parse_folders(output: str) -> tuple[Folder, ...]:
    """`doveadm -f tab mailbox status … messages '*'`: a header, then NAME<TAB>COUNT rows."""
    rows = [line.split("\t") for line in output.splitlines() if line.strip()]
    folders = [
        Folder(row[0], int(row[1])) for row in rows[1:] if len(row) == 2 and row[1].isdigit()
    ]
    return tuple(sorted(folders, key=lambda folder: (folder.name != "INBOX", folder.name)))
