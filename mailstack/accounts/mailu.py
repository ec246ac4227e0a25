"""`accounts import FILE --from mailu`: a Mailu export read as mailstack's directory (pure).

Mailu's `flask mailu config-export --secrets` (YAML, or JSON with `--json`; format in
Mailu's docs/cli.rst) lists `domain`, `user`, `alias` and `relay` objects. What maps:
domains (and their `alternatives` as alias domains), users as mailboxes (`email`,
`password`, `quota_bytes`, `enabled`), aliases (`email`, `destination`). Password hashes
Dovecot verifies and mailstack accepts as strong are kept: bcrypt (`$2b$`, as Mailu stores
them) becomes {BLF-CRYPT}, SHA512-crypt {SHA512-CRYPT}. Anything else (a weak or unknown
scheme, no password in the export) gets an unusable random hash: the mailbox exists and
receives mail, and its owner needs a new password (`mailbox passwd`); each such mailbox is
named. What has no place here (relays, forwards, auto-replies, fetches, tokens, wildcard
aliases, domain managers) is named too, never silently dropped.

The import merges into the directory: entries of the export are added or updated, the
directory's other entries stay (a migration into a stack that already hosts mail), and a
mailbox whose hash was not kept keeps the password it already has here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from mailstack.accounts import names, passwords
from mailstack.accounts.syncplan import MailboxState, Snapshot, merged
from mailstack.errors import UsageError
from mailstack.units import MAX_QUOTA_BYTES

# Mailu stores passlib hashes without a scheme prefix: the prefix Dovecot wants for each.
_CRYPT_PREFIXES = {
    "$2a$": "BLF-CRYPT",
    "$2b$": "BLF-CRYPT",
    "$2y$": "BLF-CRYPT",
    "$6$": "SHA512-CRYPT",
}
# User attributes with no counterpart in mailstack's directory: named when they matter.
_USER_EXTRAS = {
    "forward_enabled": "forwarding (add an alias, or a Sieve redirect)",
    "reply_enabled": "an auto-reply (a Sieve vacation rule)",
    "fetches": "fetched accounts (fetchmail)",
    "tokens": "authentication tokens (create app passwords here)",
    "manager_of": "domain management (mailstack admin add --domain)",
    "global_admin": "global administration (mailstack admin add)",
}


@dataclass(frozen=True)
class MailuExport:
    """The export as a directory, and what of it was not taken."""

    snapshot: Snapshot
    needs_password: tuple[str, ...]  # mailboxes whose hash could not be kept
    not_imported: tuple[str, ...]  # one line each

    def onto(self, current: Snapshot) -> Snapshot:
        """The directory with the export merged in; a mailbox whose hash could not be kept
        keeps the password it has here (a second import must not undo a `mailbox passwd`)."""
        return merged(current, self.snapshot, frozenset(self.needs_password))

    @property
    def notes(self) -> tuple[str, ...]:
        """What the operator must know after the import, a line each."""
        return (
            *(
                f"{address}: its password hash was not usable here (a scheme Dovecot cannot "
                f"check, a weak one, or none): set one with mailstack mailbox passwd {address}"
                for address in self.needs_password
            ),
            *(f"not imported: {line}" for line in self.not_imported),
        )


def read_export(raw: bytes, source: str, default_quota: int) -> MailuExport:
    """Parse and convert a Mailu export; one line naming the object and key on bad input.
    `default_quota`: for users the export gives no quota_bytes (Mailu omits defaults
    unless exported with --full)."""
    data = _load(raw, source)
    domains: dict[str, bool] = {}
    alias_domains: dict[str, str] = {}
    not_imported: list[str] = []
    for index, entry in enumerate(_objects(data, "domain", source)):
        where = f"{source}: domain[{index}]"
        name = _name(where, "name", names.domain, entry.get("name"))
        domains[name] = True
        for alternative in _list(where, "alternatives", entry.get("alternatives")):
            alias_domains[_name(where, "alternatives", names.domain, alternative)] = name
    mailboxes: dict[str, MailboxState] = {}
    needs_password: list[str] = []
    for index, entry in enumerate(_objects(data, "user", source)):
        where = f"{source}: user[{index}]"
        address = _name(where, "email", names.mailbox, entry.get("email"))
        stored = _dovecot_hash(entry.get("password"))
        if stored is None:
            needs_password.append(address)
            stored = passwords.unusable_hash()
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise UsageError(f"{where} ({address}): enabled: {enabled!r} is not true or false")
        mailboxes[address] = MailboxState(
            stored, _quota(where, address, entry, default_quota), enabled
        )
        not_imported += [
            f"{address}: {what}" for key, what in _USER_EXTRAS.items() if entry.get(key)
        ]
    aliases: dict[str, frozenset[str]] = {}
    for index, entry in enumerate(_objects(data, "alias", source)):
        where = f"{source}: alias[{index}]"
        alias = _name(where, "email", names.source, entry.get("email"))
        if entry.get("wildcard"):
            not_imported.append(f"{alias}: a wildcard alias (SQL LIKE pattern)")
            continue
        destination = entry.get("destination")
        if isinstance(destination, str):  # config-update's comma-separated form
            destination = [part.strip() for part in destination.split(",") if part.strip()]
        targets = [
            _name(where, "destination", names.address, target)
            for target in _list(where, "destination", destination)
        ]
        if not targets:
            raise UsageError(f"{where} ({alias}): destination: needs at least one address")
        aliases[alias] = frozenset(targets)
    for index, entry in enumerate(_objects(data, "relay", source)):
        not_imported.append(f"relay[{index}] {str(entry.get('name'))[:80]}: a relayed domain")
    _check_domains(source, domains, alias_domains, mailboxes, aliases)
    snapshot = Snapshot(
        domains=domains, alias_domains=alias_domains, mailboxes=mailboxes, aliases=aliases
    )
    return MailuExport(snapshot, tuple(needs_password), tuple(not_imported))


def _dovecot_hash(stored: object) -> str | None:
    """Mailu's stored password as a hash mailstack accepts, or None."""
    if not isinstance(stored, str):
        return None
    candidate = stored
    for prefix, scheme in _CRYPT_PREFIXES.items():
        if stored.startswith(prefix):
            candidate = "{" + scheme + "}" + stored
    return candidate if passwords.is_password_hash(candidate) else None


def _quota(where: str, address: str, entry: Mapping[str, Any], default: int) -> int:
    quota = entry.get("quota_bytes", default)
    if isinstance(quota, bool) or not isinstance(quota, int) or not 0 <= quota <= MAX_QUOTA_BYTES:
        raise UsageError(
            f"{where} ({address}): quota_bytes: {str(quota)[:40]!r} is not a size in bytes "
            f"(0 to {MAX_QUOTA_BYTES})"
        )
    return quota


def _check_domains(
    source: str,
    domains: Mapping[str, bool],
    alias_domains: Mapping[str, str],
    mailboxes: Mapping[str, MailboxState],
    aliases: Mapping[str, frozenset[str]],
) -> None:
    for name in alias_domains:
        if name in domains:
            raise UsageError(f"{source}: domain {name} is also an alternative of another domain")
    for kind, addresses in (("user", mailboxes), ("alias", aliases)):
        for address in addresses:
            domain = address.rpartition("@")[2]
            if domain not in domains:
                raise UsageError(
                    f"{source}: {kind} {address}: its domain {domain} is not in the export's "
                    "domain list (export every object: config-export without a filter)"
                )


def _load(raw: bytes, source: str) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(raw.decode("utf-8"))  # YAML, or JSON (a subset of it)
    except UnicodeDecodeError:
        raise UsageError(f"{source}: is not UTF-8 text") from None
    except yaml.YAMLError as error:
        raise UsageError(f"{source}: is not a Mailu export (YAML/JSON: {error})") from None
    if not isinstance(data, dict) or not {"domain", "user"} & set(data):
        raise UsageError(
            f"{source}: is not a Mailu export (no 'domain' or 'user' list)",
            hint="make it with: flask mailu config-export --secrets --output-file FILE",
        )
    return data


def _objects(data: Mapping[str, Any], kind: str, source: str) -> list[Mapping[str, Any]]:
    found = data.get(kind) or []
    if not isinstance(found, list) or not all(isinstance(item, dict) for item in found):
        raise UsageError(f"{source}: {kind}: must be a list of objects")
    return found


def _list(where: str, key: str, value: object) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise UsageError(f"{where}: {key}: must be a list")
    return value


def _name(where: str, key: str, rule: names.Rule, value: object) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{where}: {key}: {str(value)[:80]!r} is not text")
    try:
        return rule(value)
    except ValueError as reason:
        raise UsageError(f"{where}: {key}: {value[:80]!r} {reason}") from None
