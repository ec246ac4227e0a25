"""The dns host report (mailstack.runtime.reports, topic dns): for every mail domain, the
records `dns records` prints, its DKIM keys and their rotation state (`dkim show`), and
what `check dns` finds for each record, for the admin service's DNS page (which has no
Docker socket and may not ask the stack's resolver itself).

Bounded, because it runs unattended every hour and after each key rotation:
- time: the checks ask the stack's resolver (its cache flushed per domain, as `check dns`
  does), each question at most dnscheck.QUERY_TIMEOUT; once CHECK_SECONDS have gone, the
  remaining domains are listed with their records but not checked, and say so;
- size: a report is at most hostreports.MAX_REPORT_BYTES; domains are added in `dns records`
  order (the stack's own domain first) while they fit, and the rest are only named in
  `left_out` (about 6 KB a domain, its DKIM key's line and the checks' fixes the most of
  it: some fifteen domains fit; `mailstack dns records D` and `check dns D` show the rest).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from mailstack.mailauth import dkim, dnscheck
from mailstack.mailauth.dkim import DkimKey
from mailstack.mailauth.dnsrecords import Record, domain_records, host_records
from mailstack.runtime.hostreports import MAX_REPORT_BYTES
from mailstack.stack.config import Config
from mailstack.stack.stackdir import Stack
from mailstack.verdict import worst

EVERY_SECONDS = 60 * 60
CHECK_SECONDS = 120.0
# Room for the envelope and the names of the left-out domains.
_DOMAINS_BUDGET = MAX_REPORT_BYTES - 10_000


def dns_report(stack: Stack, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """{hostname, resolver, server: {records, checks}, domains: [...], count, left_out}."""
    config = stack.config
    root = stack.dir.root
    domains, _ = dnscheck.mail_domains(stack, None)
    keys = dkim.published_keys(root, ed25519_on=config.policy.dkim.ed25519)
    resolver = dnscheck.stack_resolver_address(config)
    lookup = dnscheck.Lookup(resolver)
    own_ca = config.tls.mode == "selfsigned"
    fetch = dnscheck.https_fetcher(root / "tls" / "ca.pem" if own_ca else None)
    deadline = clock() + CHECK_SECONDS
    dnscheck.flush_cache(stack, [config.hostname])
    try:
        server: list[dnscheck.CheckRow] | None = list(
            dnscheck.check_dns(config, [], keys, lookup, fetch, own_ca=own_ca).rows
        )
        server_unchecked = ""
    except dnscheck.DnsLookupFailed as failed:
        server, server_unchecked = None, f"not checked: {failed.message}"
    entries: list[dict[str, Any]] = []
    left_out: list[str] = []
    size = 0
    for domain in domains:
        if left_out:  # once one does not fit, the later ones are only named
            left_out.append(domain)
            continue
        checks, unchecked = _checked(stack, domain, keys, lookup, fetch, own_ca, deadline, clock)
        entry = domain_entry(config, domain, keys, checks, unchecked)
        size += len(json.dumps(entry, separators=(",", ":")))
        if size > _DOMAINS_BUDGET:
            left_out.append(domain)
            continue
        entries.append(entry)
    return {
        "hostname": config.hostname,
        "resolver": resolver,
        "server": {
            "records": [record_entry(record) for record in host_records(config)],
            "checks": None if server is None else [check_entry(row) for row in server],
            "unchecked": server_unchecked,
        },
        "domains": entries,
        "count": len(domains),
        "left_out": left_out,
    }


def _checked(
    stack: Stack,
    domain: str,
    keys: Sequence[DkimKey],
    lookup: dnscheck.Lookup,
    fetch: dnscheck.PolicyFetch,
    own_ca: bool,
    deadline: float,
    clock: Callable[[], float],
) -> tuple[list[dnscheck.CheckRow] | None, str]:
    """`check dns` of one domain, or None and why it was not checked."""
    if clock() >= deadline:
        return None, (
            f"not checked in this run: its {CHECK_SECONDS:.0f} s for DNS questions ran out "
            f"(mailstack check dns {domain} checks it now)"
        )
    dnscheck.flush_cache(stack, [domain])
    try:
        return dnscheck.domain_rows(stack.config, domain, keys, lookup, fetch, own_ca=own_ca), ""
    except dnscheck.DnsLookupFailed as failed:
        return None, f"not checked: {failed.message}"


def domain_entry(
    config: Config,
    domain: str,
    keys: Sequence[DkimKey],
    checks: Sequence[dnscheck.CheckRow] | None,
    unchecked: str = "",
) -> dict[str, Any]:
    """One domain: its records, its DKIM keys' states, its checks (None: not checked, and
    `unchecked` says why)."""
    own = [key for key in keys if key.domain == domain and key.key_type == "rsa"]
    states = dkim.key_states(own) if own else {}
    return {
        "domain": domain,
        "records": [record_entry(record) for record in domain_records(config, domain, keys)],
        "keys": [
            {
                "selector": key.selector,
                "state": states.get(key.selector, dkim.ACTIVE),
                "key_type": key.key_type,
                "bits": key.bits,
                "record_name": key.record_name,
            }
            for key in sorted(
                (key for key in keys if key.domain == domain),
                key=lambda key: (not key.active, key.selector),
            )
        ],
        "checks": None if checks is None else [check_entry(row) for row in checks],
        "unchecked": unchecked,
        "verdict": None if checks is None else str(worst(row.verdict for row in checks)),
    }


def record_entry(record: Record) -> dict[str, Any]:
    """A record as `dns records --json` has it, but for its data and TTL, which its zone
    line holds (a DKIM key's 400 characters once, not twice)."""
    return {
        "kind": record.kind,
        "name": record.name,
        "type": record.type,
        "note": record.note,
        "placeholder": record.placeholder,
        "at_provider": record.at_provider,
        "zone_line": record.zone_line,
    }


def check_entry(row: dnscheck.CheckRow) -> dict[str, str]:
    return {
        "kind": row.kind,
        "name": row.name,
        "expected": row.expected,
        "found": row.found,
        "verdict": str(row.verdict),
        "fix": row.fix,
    }
