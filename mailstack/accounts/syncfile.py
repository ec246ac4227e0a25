"""The accounts file (`accounts export` / `accounts import`): its model, reading, writing.

The file holds every domain, alias domain, mailbox (password HASH, quota, active, the
addresses it may send as, its app passwords as hashes) and alias of the directory, sorted,
without timestamps: two exports of the same directory are byte-identical, so they diff.

Reading validates the whole file (strict pydantic models and mailstack.accounts.names, the
rules every writer of the directory follows); every problem is one line naming the entry and
the key. The file is written 0600 from its first byte: it holds password hashes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from mailstack.accounts import names
from mailstack.accounts.aliases import MAX_DESTINATIONS
from mailstack.accounts.syncplan import AppPasswordState, MailboxState, Snapshot
from mailstack.errors import UsageError
from mailstack.stack.config import explain
from mailstack.units import MAX_QUOTA_BYTES, format_size, parse_size

SCHEMA_VERSION = 1
MAX_FILE_BYTES = 32 * 1024 * 1024
FILE_MODE = 0o600
HEADER = (
    "# mailstack accounts export: the mail directory (domains, mailboxes, aliases).\n"
    "# It holds password HASHES: keep it private (mode 0600). Apply with\n"
    "# `mailstack accounts import FILE --dry-run` first, then without --dry-run.\n"
)

# --- names and addresses: mailstack.accounts.names, as for every other writer ---------


def _quota(value: int | str) -> int:
    quota = parse_size(value) if isinstance(value, str) else value
    if not 0 <= quota <= MAX_QUOTA_BYTES:
        raise ValueError("is not a quota (0 for none, or a size such as 2G)")
    return quota


DomainName = Annotated[str, AfterValidator(names.domain)]
Address = Annotated[str, AfterValidator(names.address)]
MailboxAddress = Annotated[str, AfterValidator(names.mailbox)]
Source = Annotated[str, AfterValidator(names.source)]
PasswordHash = Annotated[str, AfterValidator(names.password_hash)]


# --- the model -------------------------------------------------------------------------------


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DomainEntry(_Entry):
    name: DomainName
    active: bool = True


class AliasDomainEntry(_Entry):
    name: DomainName
    target: DomainName


class AppPasswordEntry(_Entry):
    name: Annotated[str, AfterValidator(names.app_password_name)]
    lookup_key: Annotated[str, AfterValidator(names.lookup_key)]
    password_hash: PasswordHash


class MailboxEntry(_Entry):
    address: MailboxAddress
    password_hash: PasswordHash
    quota: Annotated[int | str, AfterValidator(_quota)]
    active: bool = True
    may_send_as: list[Source] = Field(default_factory=list, max_length=1000)
    app_passwords: list[AppPasswordEntry] = Field(default_factory=list, max_length=20)


class AliasEntry(_Entry):
    source: Source
    destinations: list[Address] = Field(min_length=1, max_length=MAX_DESTINATIONS)


class Document(_Entry):
    version: Literal[1]
    domains: list[DomainEntry] = Field(default_factory=list)
    alias_domains: list[AliasDomainEntry] = Field(default_factory=list)
    mailboxes: list[MailboxEntry] = Field(default_factory=list)
    aliases: list[AliasEntry] = Field(default_factory=list)


# --- validation: one line per problem, naming the entry and the key --------------------------


def _loc(location: Sequence[str | int], data: Any) -> str:
    """('mailboxes', 2, 'quota') -> 'mailboxes[2] (bob@example.org): quota'."""
    parts: list[str] = []
    node = data
    for part in location:
        if isinstance(part, int):
            parts[-1] = f"{parts[-1]}[{part}]" if parts else f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            label = _label(node)
            if label:
                parts[-1] += f" ({label})"
        else:
            parts.append(part)
            node = node.get(part) if isinstance(node, dict) else None
    return ": ".join(parts)


def _label(entry: Any) -> str:
    if not isinstance(entry, dict):
        return ""
    for key in ("address", "name", "source"):
        value = entry.get(key)
        if isinstance(value, str):
            return repr(value[:80])[1:-1] if len(value) <= 80 else repr(value[:80])[1:-1] + "…"
    return ""


def _validation_error(source: str, error: ValidationError, data: Any) -> UsageError:
    errors = error.errors(include_url=False)
    first = errors[0]
    location = [part for part in first["loc"] if isinstance(part, str | int)]
    is_quota = "quota" in location
    if is_quota:  # drop pydantic's union member tag ('int', 'str') after the key
        location = location[: location.index("quota") + 1]
    key = _loc(location, data)
    if first["type"] == "extra_forbidden":
        value, allowed = None, "is not a known key"
    elif first["type"] == "too_short":
        value, allowed = None, "needs at least one entry"
    elif first["type"] == "too_long":
        value, allowed = None, f"has too many entries (at most {first['ctx']['max_length']})"
    elif is_quota:
        value, allowed = first.get("input"), "is not a quota (0 for none, or a size such as 2G)"
    else:
        _, value, allowed = explain(first)
    if location and location[-1] == "password_hash":
        value = None  # never echo what may be a plain password
    shown = ""
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = repr(value)
        shown = (text[:80] + "…" if len(text) > 80 else text) + " "
    message = f"{source}: {key}: {shown}{allowed}"
    hint = f"{len(errors) - 1} more problem(s) after this one" if len(errors) > 1 else None
    return UsageError(message, hint=hint)


def parse_document(raw: bytes, source: str) -> Document:
    """Read and validate an accounts file; every problem is one line naming entry and key."""
    if len(raw) > MAX_FILE_BYTES:
        raise UsageError(f"{source}: is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    try:
        text = raw.decode("utf-8")
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise UsageError(f"{source}: YAML aliases (*name) are not allowed")
        data = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise UsageError(f"{source}: is not UTF-8 text") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise UsageError(f"{source}: {where}YAML syntax error: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{source}: YAML syntax error: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{source}: must be a mapping with version: {SCHEMA_VERSION}")
    try:
        document = Document.model_validate(data)
    except ValidationError as e:
        raise _validation_error(source, e, data) from None
    check_references(document, source)
    return document


def check_references(document: Document, source: str) -> None:
    """Duplicates and dangling names: what the file says must be one consistent directory."""
    domains: set[str] = set()
    for index, entry in enumerate(document.domains):
        if entry.name in domains:
            raise UsageError(f"{source}: domains[{index}] ({entry.name}): listed twice")
        domains.add(entry.name)
    alias_domains: set[str] = set()
    for index, alias_domain in enumerate(document.alias_domains):
        where = f"{source}: alias_domains[{index}] ({alias_domain.name})"
        if alias_domain.name in alias_domains:
            raise UsageError(f"{where}: listed twice")
        if alias_domain.name in domains:
            raise UsageError(f"{where}: name: is also in domains (a name is one or the other)")
        if alias_domain.target not in domains:
            raise UsageError(f"{where}: target: {alias_domain.target} is not in domains")
        alias_domains.add(alias_domain.name)
    addresses: set[str] = set()
    for index, mailbox in enumerate(document.mailboxes):
        where = f"{source}: mailboxes[{index}] ({mailbox.address})"
        if mailbox.address in addresses:
            raise UsageError(f"{where}: listed twice")
        addresses.add(mailbox.address)
        _check_mailbox(mailbox, where, domains, alias_domains)
    sources: set[str] = set()
    for index, alias in enumerate(document.aliases):
        where = f"{source}: aliases[{index}] ({alias.source})"
        if alias.source in sources:
            raise UsageError(f"{where}: listed twice (put every destination in one entry)")
        sources.add(alias.source)
        _check_alias(alias, where, domains)


def _check_mailbox(
    mailbox: MailboxEntry, where: str, domains: set[str], alias_domains: set[str]
) -> None:
    domain = mailbox.address.rpartition("@")[2]
    if domain not in domains:
        raise UsageError(f"{where}: address: {domain} is not in domains")
    for sender in mailbox.may_send_as:
        sender_domain = sender.rpartition("@")[2]
        if sender_domain not in domains | alias_domains:
            raise UsageError(
                f"{where}: may_send_as: {sender}: {sender_domain} is not in domains "
                "or alias_domains"
            )
        if sender == mailbox.address:
            raise UsageError(f"{where}: may_send_as: {sender} is its own address")
    if len(set(mailbox.may_send_as)) != len(mailbox.may_send_as):
        raise UsageError(f"{where}: may_send_as: an address is listed twice")
    names = [app.name for app in mailbox.app_passwords]
    keys = [app.lookup_key for app in mailbox.app_passwords]
    if len(set(names)) != len(names) or len(set(keys)) != len(keys):
        raise UsageError(f"{where}: app_passwords: a name or lookup_key is listed twice")


def _check_alias(alias: AliasEntry, where: str, domains: set[str]) -> None:
    domain = alias.source.rpartition("@")[2]
    if domain not in domains:
        raise UsageError(f"{where}: source: {domain} is not in domains")
    lowered = [destination.lower() for destination in alias.destinations]
    if len(set(lowered)) != len(lowered):
        raise UsageError(f"{where}: destinations: an address is listed twice")
    if alias.source in lowered:
        raise UsageError(f"{where}: destinations: the alias cannot point to itself")


# --- the file as a snapshot, and back --------------------------------------------------------


def snapshot_of(document: Document) -> Snapshot:
    return Snapshot(
        domains={d.name: d.active for d in document.domains},
        alias_domains={a.name: a.target for a in document.alias_domains},
        mailboxes={
            m.address: MailboxState(m.password_hash, _quota(m.quota), m.active)
            for m in document.mailboxes
        },
        aliases={a.source: frozenset(a.destinations) for a in document.aliases},
        senders=frozenset((m.address, s) for m in document.mailboxes for s in m.may_send_as),
        app_passwords={
            (m.address, p.name): AppPasswordState(p.lookup_key, p.password_hash)
            for m in document.mailboxes
            for p in m.app_passwords
        },
    )


def document_data(snapshot: Snapshot) -> dict[str, Any]:
    """The file's content for a snapshot: sorted, no timestamps (stable, diffable)."""
    senders: dict[str, list[str]] = {}
    for login, sender in sorted(snapshot.senders):
        senders.setdefault(login, []).append(sender)
    apps: dict[str, list[dict[str, str]]] = {}
    for (address, name), app in sorted(snapshot.app_passwords.items()):
        apps.setdefault(address, []).append(
            {"name": name, "lookup_key": app.lookup_key, "password_hash": app.password_hash}
        )
    mailboxes = []
    for address, box in sorted(snapshot.mailboxes.items()):
        entry: dict[str, Any] = {
            "address": address,
            "password_hash": box.password_hash,
            "quota": format_size(box.quota_bytes) if box.quota_bytes else 0,
            "active": box.active,
        }
        if senders.get(address):
            entry["may_send_as"] = senders[address]
        if apps.get(address):
            entry["app_passwords"] = apps[address]
        mailboxes.append(entry)
    return {
        "version": SCHEMA_VERSION,
        "domains": [
            {"name": name, "active": active} for name, active in sorted(snapshot.domains.items())
        ],
        "alias_domains": [
            {"name": name, "target": target}
            for name, target in sorted(snapshot.alias_domains.items())
        ],
        "mailboxes": mailboxes,
        "aliases": [
            {"source": source, "destinations": sorted(destinations)}
            for source, destinations in sorted(snapshot.aliases.items())
        ],
    }


def dump_document(snapshot: Snapshot) -> str:
    body = yaml.safe_dump(
        document_data(snapshot), sort_keys=False, default_flow_style=False, width=4096
    )
    return HEADER + body


# --- reading and writing it ------------------------------------------------------------------


def read_file(path: Path) -> bytes:
    """An import's FILE, or one line naming it."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"FILE: {str(path)!r} cannot be read ({e.strerror})") from None


def parse_snapshot(raw: bytes, source: str) -> Snapshot:
    return snapshot_of(parse_document(raw, source))


def write_private(path: Path, text: str) -> None:
    """Write text to path atomically, 0600 from the first byte (never world-readable)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.chmod(FILE_MODE)
        temporary.replace(path)
    except OSError as e:
        temporary.unlink(missing_ok=True)
        raise UsageError(f"FILE: {str(path)!r} cannot be written ({e.strerror})") from None
