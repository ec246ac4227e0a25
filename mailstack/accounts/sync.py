"""`accounts export` / `accounts import`: the mail directory made equal to the accounts file.

An import reads the whole file first (mailstack.accounts.syncfile), prints the plan: the
difference to the running directory (mailstack.accounts.syncplan: + added, - removed,
~ changed, per kind) and, unless it is a dry run, makes the directory equal to the file in ONE
transaction: the document travels as one psql variable (base64 of its JSON, set with \\set on
stdin because it holds hashes) and constant SQL unpacks it with jsonb_to_recordset. Nothing of
it is formatted into SQL; any error rolls everything back. Removing a mailbox keeps its stored
mail, like `mailbox remove` without --purge.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailstack.accounts import domain_quota
from mailstack.accounts.mailstore import kick_sessions
from mailstack.accounts.syncfile import dump_document, write_private
from mailstack.accounts.syncplan import (
    AppPasswordState,
    Change,
    MailboxState,
    Snapshot,
    check_own_domain,
    diff,
)
from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import ExternalCommandFailed, MailstackError

# --- the database ----------------------------------------------------------------------------

_BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}\Z")
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
        ORDER BY address, name), '[]') FROM app_passwords),
    'domain_quotas', (SELECT coalesce(json_agg(json_build_object('name', name,
        'quota_bytes', quota_bytes) ORDER BY name), '[]') FROM domains WHERE quota_bytes > 0)
);
"""

# One transaction (psql --single-transaction, ON_ERROR_STOP): the tables are locked against
# concurrent CLI changes, the document (:'accounts_document', base64 JSON) is unpacked into
# temporary tables, then everything not in it is deleted and everything in it inserted or
# updated. Deleting a mailbox leaves its stored mail alone (that is the dovecot container's).
_APPLY_STEPS = """
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
"""
# ... then no domain over its quota (the guard fails the transaction), and the answer.
_APPLIED = "SELECT 'applied', count(*) FROM want_mailboxes;\n"
_APPLY = _APPLY_STEPS + domain_quota.IMPORT_GUARD + _APPLIED


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
        domain_quotas={
            row["name"]: int(row["quota_bytes"]) for row in data.get("domain_quotas", [])
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
    notes: tuple[str, ...] = ()  # what of another server's export was not taken as it was

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
        return "\n".join(lines + [f"note: {note}" for note in self.notes])


def export_accounts(compose: Executor, path: Path) -> ExportResult:
    snapshot = read_directory(compose)
    write_private(path, dump_document(snapshot))
    return ExportResult(
        str(path), len(snapshot.domains), len(snapshot.mailboxes), len(snapshot.aliases)
    )


def import_accounts(
    compose: Executor,
    wanted: Snapshot | Callable[[Snapshot], Snapshot],
    source: str,
    own_domain: str,
    *,
    dry_run: bool,
    notes: tuple[str, ...] = (),
) -> ImportResult:
    """Diff the directory wanted against the one there is; unless dry_run, apply it. wanted:
    a validated file (syncfile.parse_snapshot), or a function of the current directory
    (another server's export merged into it: mailstack.accounts.mailu)."""
    current = read_directory(compose)
    if callable(wanted):
        wanted = wanted(current)
    changes = diff(current, wanted)
    check_own_domain(changes, own_domain, source)
    quotas = {address: box.quota_bytes for address, box in wanted.mailboxes.items()}
    refusal = domain_quota.import_refusal(source, current.domain_quotas, quotas)
    if refusal is not None:
        raise refusal
    kept = tuple(
        change.details[0].removeprefix("stored mail (if any) is kept in ")
        for change in changes
        if change.op == "-" and change.kind in ("mailbox", "domain")
    )
    added = tuple(c.key for c in changes if c.kind == "domain" and c.op == "+")
    if dry_run or not changes:
        return ImportResult(source, dry_run, False, tuple(changes), added, kept, notes)
    apply(compose, wanted)
    # Sessions of removed or deactivated mailboxes end now, not at their next login.
    for change in changes:
        if change.kind == "mailbox" and (change.op == "-" or "deactivated" in change.details):
            kick_sessions(compose, change.key)
    return ImportResult(source, False, True, tuple(changes), added, kept, notes)
