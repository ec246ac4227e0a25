"""`accounts export` / `accounts import`: the mail directory as one declarative YAML file.

The file holds every domain, alias domain, mailbox (password HASH, quota, active, the
addresses it may send as, its app passwords as hashes) and alias of the directory, sorted,
without timestamps: two exports of the same directory are byte-identical, so they diff.

An import validates the whole file first (strict pydantic models and mailstack.accounts.names, the
rules every writer of the directory follows; one line naming the entry and the key), prints
the difference to the running directory (+ added, - removed, ~ changed, per kind) and, unless
it is a dry run, makes the directory equal to the file in ONE transaction: the document
travels as one psql variable (base64 of its JSON, set with \\set on stdin because it holds
hashes) and constant SQL unpacks it with jsonb_to_recordset. Nothing of it is formatted into
SQL; any error rolls everything back. Removing a mailbox keeps its stored mail, like
`mailbox remove` without --purge.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from mailstack.accounts import names
from mailstack.accounts.aliases import MAX_DESTINATIONS
from mailstack.accounts.mailstore import MAIL_ROOT, kick_sessions
from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import ExternalCommandFailed, MailstackError, UsageError
from mailstack.stack.config import explain
from mailstack.units import MAX_QUOTA_BYTES, format_size, parse_size

SCHEMA_VERSION = 1
MAX_FILE_BYTES = 32 * 1024 * 1024
FILE_MODE = 0o600
_BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
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


# --- the file --------------------------------------------------------------------------------


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


# --- a directory, as the file or the database holds it -------------------------------------


@dataclass(frozen=True)
class MailboxState:
    password_hash: str
    quota_bytes: int
    active: bool


@dataclass(frozen=True)
class AppPasswordState:
    lookup_key: str
    password_hash: str


@dataclass(frozen=True)
class Snapshot:
    """The whole directory, keyed the way the diff compares it."""

    domains: Mapping[str, bool] = field(default_factory=dict)  # name -> active
    alias_domains: Mapping[str, str] = field(default_factory=dict)  # name -> target
    mailboxes: Mapping[str, MailboxState] = field(default_factory=dict)
    aliases: Mapping[str, frozenset[str]] = field(default_factory=dict)  # source -> dests
    senders: frozenset[tuple[str, str]] = frozenset()  # (login, sender)
    app_passwords: Mapping[tuple[str, str], AppPasswordState] = field(default_factory=dict)


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


# --- the diff (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    kind: str  # domain, alias domain, mailbox, sender, app password, alias
    op: str  # + added, - removed, ~ changed
    key: str
    details: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.op} {self.kind} {self.key}"
        return text + (f": {'; '.join(self.details)}" if self.details else "")


def _quota_text(value: int) -> str:
    return format_size(value) if value else "none"


def diff(current: Snapshot, wanted: Snapshot) -> list[Change]:
    """What an import changes, per kind, in a stable order (never showing a hash)."""
    return [
        *_domain_changes(current, wanted),
        *_alias_domain_changes(current, wanted),
        *_mailbox_changes(current, wanted),
        *_sender_changes(current, wanted),
        *_app_password_changes(current, wanted),
        *_alias_changes(current, wanted),
    ]


def _domain_changes(current: Snapshot, wanted: Snapshot) -> list[Change]:
    changes = []
    for name in sorted(current.domains.keys() | wanted.domains.keys()):
        if name not in current.domains:
            inactive = () if wanted.domains[name] else ("inactive",)
            changes.append(Change("domain", "+", name, inactive))
        elif name not in wanted.domains:
            kept = f"stored mail (if any) is kept in {MAIL_ROOT}/{name}"
            changes.append(Change("domain", "-", name, (kept,)))
        elif current.domains[name] != wanted.domains[name]:
            changes.append(Change("domain", "~", name, (_active(wanted.domains[name]),)))
    return changes


def _alias_domain_changes(current: Snapshot, wanted: Snapshot) -> list[Change]:
    changes = []
    for name in sorted(current.alias_domains.keys() | wanted.alias_domains.keys()):
        old, new = current.alias_domains.get(name), wanted.alias_domains.get(name)
        if old is None:
            changes.append(Change("alias domain", "+", name, (f"-> {new}",)))
        elif new is None:
            changes.append(Change("alias domain", "-", name, (f"-> {old}",)))
        elif old != new:
            changes.append(Change("alias domain", "~", name, (f"target {old} -> {new}",)))
    return changes


def _mailbox_changes(current: Snapshot, wanted: Snapshot) -> list[Change]:
    changes = []
    for address in sorted(current.mailboxes.keys() | wanted.mailboxes.keys()):
        before, after = current.mailboxes.get(address), wanted.mailboxes.get(address)
        if before is None and after is not None:
            details = [f"quota {_quota_text(after.quota_bytes)}"]
            if not after.active:
                details.append("inactive")
            changes.append(Change("mailbox", "+", address, tuple(details)))
        elif after is None:
            local, _, domain = address.rpartition("@")
            kept = f"stored mail (if any) is kept in {MAIL_ROOT}/{domain}/{local}"
            changes.append(Change("mailbox", "-", address, (kept,)))
        elif before is not None and before != after:
            changes.append(Change("mailbox", "~", address, _mailbox_details(before, after)))
    return changes


def _mailbox_details(before: MailboxState, after: MailboxState) -> tuple[str, ...]:
    details = []
    if before.password_hash != after.password_hash:
        details.append("password changed")
    if before.quota_bytes != after.quota_bytes:
        old, new = _quota_text(before.quota_bytes), _quota_text(after.quota_bytes)
        details.append(f"quota {old} -> {new}")
    if before.active != after.active:
        details.append(_active(after.active))
    return tuple(details)


def _sender_changes(current: Snapshot, wanted: Snapshot) -> list[Change]:
    return [
        Change(
            "sender",
            "+" if (login, sender) in wanted.senders else "-",
            sender,
            (f"{login} may send as it",),
        )
        for login, sender in sorted(current.senders ^ wanted.senders)
    ]


def _app_password_changes(current: Snapshot, wanted: Snapshot) -> list[Change]:
    changes = []
    for key in sorted(current.app_passwords.keys() | wanted.app_passwords.keys()):
        address, name = key
        before, after = current.app_passwords.get(key), wanted.app_passwords.get(key)
        label = f"{name} of {address}"
        if before is None:
            changes.append(Change("app password", "+", label))
        elif after is None:
            changes.append(Change("app password", "-", label))
        elif before != after:
            changes.append(Change("app password", "~", label, ("password changed",)))
    return changes


def _alias_changes(current: Snapshot, wanted: Snapshot) -> list[Change]:
    changes = []
    for source in sorted(current.aliases.keys() | wanted.aliases.keys()):
        was = current.aliases.get(source, frozenset())
        will = wanted.aliases.get(source, frozenset())
        if not was:
            changes.append(Change("alias", "+", source, (f"-> {', '.join(sorted(will))}",)))
        elif not will:
            changes.append(Change("alias", "-", source, (f"-> {', '.join(sorted(was))}",)))
        elif was != will:
            details = [f"+ {d}" for d in sorted(will - was)]
            details += [f"- {d}" for d in sorted(was - will)]
            changes.append(Change("alias", "~", source, tuple(details)))
    return changes


def _active(active: bool) -> str:
    return "activated" if active else "deactivated"


def check_own_domain(changes: Sequence[Change], own_domain: str, source: str) -> None:
    for change in changes:
        if change.kind == "domain" and change.op == "-" and change.key == own_domain:
            raise UsageError(
                f"{source}: domains: {own_domain} is missing, but it is the stack's own domain "
                "(mailstack.yaml: domain) and cannot be removed; nothing was changed",
                hint="add it back to domains (see mailstack accounts export)",
            )


# --- the database ----------------------------------------------------------------------------

_READ = """
SELECT json_build_object(
    'domains', (SELECT coalesce(json_agg(json_build_object('name', name, 'active', active)
        ORDER BY name), '[]') FROM domains),
    'alias_domains', (SELECT coalesce(json_agg(json_build_object('name', name,
        'target', target) ORDER BY name), '[]') FROM alias_domains),
    'mailboxes', (SELECT coalesce(json_agg(json_build_object('address', address,
        'password', password, 'quota_bytes', quota_bytes, 'active', active)
        ORDER BY address), '[]') FROM mailboxes),
    'aliases', (SELECT coalesce(json_agg(json_build_object('source', source,
        'destination', destination) ORDER BY source, destination), '[]') FROM aliases),
    'senders', (SELECT coalesce(json_agg(json_build_object('sender', sender, 'login', login)
        ORDER BY login, sender), '[]') FROM sender_permissions),
    'app_passwords', (SELECT coalesce(json_agg(json_build_object('address', address,
        'name', name, 'lookup_key', lookup_key, 'password', password)
        ORDER BY address, name), '[]') FROM app_passwords)
);
"""

# One transaction (psql --single-transaction, ON_ERROR_STOP): the tables are locked against
# concurrent CLI changes, the document (:'accounts_document', base64 JSON) is unpacked into
# temporary tables, then everything not in it is deleted and everything in it inserted or
# updated. Deleting a mailbox leaves its stored mail alone (that is the dovecot container's).
_APPLY = """
LOCK TABLE domains, alias_domains, mailboxes, aliases, sender_permissions, app_passwords
    IN SHARE ROW EXCLUSIVE MODE;
CREATE TEMP TABLE import_document ON COMMIT DROP AS
    SELECT convert_from(decode(:'accounts_document', 'base64'), 'UTF8')::jsonb AS doc;
CREATE TEMP TABLE want_domains ON COMMIT DROP AS SELECT * FROM jsonb_to_recordset(
    (SELECT doc -> 'domains' FROM import_document)) AS x (name text, active boolean);
CREATE TEMP TABLE want_alias_domains ON COMMIT DROP AS SELECT * FROM jsonb_to_recordset(
    (SELECT doc -> 'alias_domains' FROM import_document)) AS x (name text, target text);
CREATE TEMP TABLE want_mailboxes ON COMMIT DROP AS SELECT * FROM jsonb_to_recordset(
    (SELECT doc -> 'mailboxes' FROM import_document))
    AS x (address text, local_part text, domain text, password text, quota_bytes bigint,
          active boolean);
CREATE TEMP TABLE want_aliases ON COMMIT DROP AS SELECT * FROM jsonb_to_recordset(
    (SELECT doc -> 'aliases' FROM import_document))
    AS x (source text, domain text, destination text);
CREATE TEMP TABLE want_senders ON COMMIT DROP AS SELECT * FROM jsonb_to_recordset(
    (SELECT doc -> 'senders' FROM import_document)) AS x (sender text, login text);
CREATE TEMP TABLE want_app_passwords ON COMMIT DROP AS SELECT * FROM jsonb_to_recordset(
    (SELECT doc -> 'app_passwords' FROM import_document))
    AS x (address text, name text, lookup_key text, password text);

DELETE FROM app_passwords p WHERE NOT EXISTS (SELECT 1 FROM want_app_passwords w
    WHERE w.address = p.address AND w.name = p.name AND w.lookup_key = p.lookup_key
    AND w.password = p.password);
DELETE FROM sender_permissions s WHERE NOT EXISTS (SELECT 1 FROM want_senders w
    WHERE w.sender = s.sender AND w.login = s.login);
DELETE FROM aliases a WHERE NOT EXISTS (SELECT 1 FROM want_aliases w
    WHERE w.source = a.source AND w.destination = a.destination);
DELETE FROM mailboxes m WHERE NOT EXISTS (SELECT 1 FROM want_mailboxes w
    WHERE w.address = m.address);
DELETE FROM alias_domains a WHERE NOT EXISTS (SELECT 1 FROM want_alias_domains w
    WHERE w.name = a.name AND w.target = a.target);
DELETE FROM domains d WHERE NOT EXISTS (SELECT 1 FROM want_domains w WHERE w.name = d.name);

INSERT INTO domains (name, active) SELECT name, active FROM want_domains
    ON CONFLICT (name) DO UPDATE SET active = EXCLUDED.active
    WHERE domains.active IS DISTINCT FROM EXCLUDED.active;
INSERT INTO alias_domains (name, target) SELECT name, target FROM want_alias_domains
    ON CONFLICT (name) DO NOTHING;
INSERT INTO mailboxes (address, local_part, domain, password, quota_bytes, active)
    SELECT address, local_part, domain, password, quota_bytes, active FROM want_mailboxes
    ON CONFLICT (address) DO UPDATE SET password = EXCLUDED.password,
        quota_bytes = EXCLUDED.quota_bytes, active = EXCLUDED.active
    WHERE (mailboxes.password, mailboxes.quota_bytes, mailboxes.active)
        IS DISTINCT FROM (EXCLUDED.password, EXCLUDED.quota_bytes, EXCLUDED.active);
INSERT INTO aliases (source, domain, destination) SELECT source, domain, destination
    FROM want_aliases ON CONFLICT (source, destination) DO NOTHING;
INSERT INTO sender_permissions (sender, login) SELECT sender, login FROM want_senders
    ON CONFLICT (sender, login) DO NOTHING;
INSERT INTO app_passwords (address, name, lookup_key, password)
    SELECT address, name, lookup_key, password FROM want_app_passwords
    ON CONFLICT (address, name) DO NOTHING;
SELECT 'applied', count(*) FROM want_mailboxes;
"""


def read_directory(compose: Executor) -> Snapshot:
    """The running directory as a snapshot (one statement: one consistent view)."""
    rows = psql.query(compose, _READ)
    if len(rows) != 1 or len(rows[0]) != 1:
        raise MailstackError("unexpected answer from the database")
    data = json.loads(rows[0][0])
    aliases: dict[str, set[str]] = {}
    for row in data["aliases"]:
        aliases.setdefault(row["source"], set()).add(row["destination"])
    return Snapshot(
        domains={row["name"]: bool(row["active"]) for row in data["domains"]},
        alias_domains={row["name"]: row["target"] for row in data["alias_domains"]},
        mailboxes={
            row["address"]: MailboxState(row["password"], int(row["quota_bytes"]), row["active"])
            for row in data["mailboxes"]
        },
        aliases={source: frozenset(found) for source, found in aliases.items()},
        senders=frozenset((row["login"], row["sender"]) for row in data["senders"]),
        app_passwords={
            (row["address"], row["name"]): AppPasswordState(row["lookup_key"], row["password"])
            for row in data["app_passwords"]
        },
    )


def apply_payload(snapshot: Snapshot) -> str:
    """The document for _APPLY: JSON of rows, base64 (no quote, no backslash, no newline)."""
    rows = {
        "domains": [{"name": n, "active": a} for n, a in sorted(snapshot.domains.items())],
        "alias_domains": [
            {"name": n, "target": t} for n, t in sorted(snapshot.alias_domains.items())
        ],
        "mailboxes": [
            {
                "address": address,
                "local_part": address.rpartition("@")[0],
                "domain": address.rpartition("@")[2],
                "password": box.password_hash,
                "quota_bytes": box.quota_bytes,
                "active": box.active,
            }
            for address, box in sorted(snapshot.mailboxes.items())
        ],
        "aliases": [
            {"source": source, "domain": source.rpartition("@")[2], "destination": destination}
            for source, destinations in sorted(snapshot.aliases.items())
            for destination in sorted(destinations)
        ],
        "senders": [{"sender": s, "login": login} for login, s in sorted(snapshot.senders)],
        "app_passwords": [
            {"address": a, "name": n, "lookup_key": p.lookup_key, "password": p.password_hash}
            for (a, n), p in sorted(snapshot.app_passwords.items())
        ],
    }
    text = json.dumps(rows, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def set_document_variable(name: str, payload: str) -> str:
    r"""The `\set` line for stdin: the document holds hashes, so it never goes to argv."""
    if not _BASE64.match(payload):
        raise MailstackError("the import document is not base64; nothing was changed")
    return f"\\set {name} '{payload}'\n"


def apply(compose: Executor, wanted: Snapshot) -> None:
    """Make the directory equal to `wanted`, all or nothing."""
    try:
        rows = psql.query(
            compose,
            _APPLY,
            prelude=set_document_variable("accounts_document", apply_payload(wanted)),
            single_transaction=True,
            timeout=600,
        )
    except ExternalCommandFailed as e:
        raise ExternalCommandFailed(
            "the import (rolled back: nothing of it was applied)",
            e.output,
            hint="the directory is as before; fix the file and run the import again",
        ) from None
    if not any(row and row[0] == "applied" for row in rows):
        raise MailstackError("unexpected answer from the database; check mailstack mailbox list")


# --- the two commands ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    path: str
    domains: int
    mailboxes: int
    aliases: int

    def __str__(self) -> str:
        return (
            f"exported {self.domains} domain(s), {self.mailboxes} mailbox(es) and "
            f"{self.aliases} alias(es) to {self.path} (mode 0600: it holds password hashes)"
        )


@dataclass(frozen=True)
class ImportResult:
    path: str
    dry_run: bool
    applied: bool
    changes: tuple[Change, ...]
    added_domains: tuple[str, ...]
    kept_mail: tuple[str, ...]  # stored mail of removed mailboxes/domains, left in place

    def __str__(self) -> str:
        lines = [str(change) for change in self.changes]
        counts = {op: sum(1 for c in self.changes if c.op == op) for op in "+-~"}
        summary = f"{counts['+']} added, {counts['-']} removed, {counts['~']} changed"
        if not self.changes:
            lines.append(f"{self.path}: the directory already matches; nothing to change")
        elif self.dry_run:
            lines.append(f"dry run: {summary}; nothing was changed")
        else:
            lines.append(f"imported {self.path}: {summary} (one transaction)")
            if self.kept_mail:
                lines.append(
                    "the stored mail of removed mailboxes and domains is kept; to delete it: "
                    "mailstack mailbox remove ADDRESS --purge (or domain remove DOMAIN --purge)"
                )
        return "\n".join(lines)


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


def export_accounts(compose: Executor, path: Path) -> ExportResult:
    snapshot = read_directory(compose)
    write_private(path, dump_document(snapshot))
    return ExportResult(
        str(path), len(snapshot.domains), len(snapshot.mailboxes), len(snapshot.aliases)
    )


def load_document(path: Path) -> Snapshot:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UsageError(f"FILE: {str(path)!r} cannot be read ({e.strerror})") from None
    return snapshot_of(parse_document(raw, path.name))


def import_accounts(
    compose: Executor, wanted: Snapshot, source: str, own_domain: str, *, dry_run: bool
) -> ImportResult:
    """Diff a validated file (load_document) against the directory; unless dry_run, apply it."""
    current = read_directory(compose)
    changes = diff(current, wanted)
    check_own_domain(changes, own_domain, source)
    kept = tuple(
        change.details[0].removeprefix("stored mail (if any) is kept in ")
        for change in changes
        if change.op == "-" and change.kind in ("mailbox", "domain")
    )
    added = tuple(c.key for c in changes if c.kind == "domain" and c.op == "+")
    if dry_run or not changes:
        return ImportResult(source, dry_run, False, tuple(changes), added, kept)
    apply(compose, wanted)
    # Sessions of removed or deactivated mailboxes end now, not at their next login.
    for change in changes:
        if change.kind == "mailbox" and (change.op == "-" or "deactivated" in change.details):
            kick_sessions(compose, change.key)
    return ImportResult(source, False, True, tuple(changes), added, kept)
