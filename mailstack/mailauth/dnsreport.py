"""The dns host reports (mailstack.runtime.reports, topic dns and its parts): for every mail
domain, a report of its own (topic "dns:<domain>") with the records `dns records` prints,
its DKIM keys and their rotation state (`dkim show`), and what `check dns` finds for each
record; and the dns report, their index: each domain's verdict and how many checks passed,
warned and failed, and the server's own records and checks. For the admin service's DNS
page, which has no Docker socket and may not ask the stack's resolver itself.

Bounded, because it runs unattended every hour and after each key rotation:
- time: the checks ask the stack's resolver (its cache flushed per domain, as `check dns`
  does), each question at most dnscheck.QUERY_TIMEOUT; once CHECK_SECONDS have gone, the
  remaining domains get their records but are not checked, and say so;
- size: each report is at most hostreports.MAX_REPORT_BYTES: a domain's is some 6 KB (its
  DKIM key's line and the checks' fixes the most of it), an index line some 100 bytes, so
  the index names some 800 domains before it names the rest only in `left_out`.
A done key rotation remakes only that domain's report and its line of the index
(domain_reports).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mailstack.errors import MailstackError, UsageError
from mailstack.mailauth import dkim, dnscheck
from mailstack.mailauth.dkim import DkimKey
from mailstack.mailauth.dnsrecords import Record, domain_records, host_records
from mailstack.runtime import hostreports
from mailstack.runtime.hostreports import DNS, MAX_REPORT_BYTES
from mailstack.stack.config import Config
from mailstack.stack.stackdir import Stack
from mailstack.tls import dane
from mailstack.verdict import Verdict, worst

EVERY_SECONDS = 60 * 60
CHECK_SECONDS = 120.0
# Room in the index for its envelope, the server's records and the left-out names.
_INDEX_BUDGET = MAX_REPORT_BYTES - 30_000
_SERVER_BUDGET = 20_000


@dataclass(frozen=True)
class _Asker:
    """What the checks ask with: the stack's keys, resolver and MTA-STS fetcher."""

    keys: Sequence[DkimKey]
    resolver: str
    lookup: dnscheck.Lookup
    fetch: dnscheck.PolicyFetch
    own_ca: bool


def _asker(stack: Stack) -> _Asker:
    config = stack.config
    root = stack.dir.root
    own_ca = config.tls.mode == "selfsigned"
    resolver = dnscheck.stack_resolver_address(config)
    return _Asker(
        keys=dkim.published_keys(root, ed25519_on=config.policy.dkim.ed25519),
        resolver=resolver,
        lookup=dnscheck.Lookup(resolver),
        fetch=dnscheck.https_fetcher(root / "tls" / "ca.pem" if own_ca else None),
        own_ca=own_ca,
    )


def dns_reports(stack: Stack, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """{topic: body}: the index (topic dns: {hostname, resolver, server, domains: [index
    lines], count, left_out}) and one report per mail domain (topic dns:<domain>)."""
    config = stack.config
    domains, _ = dnscheck.mail_domains(stack, None)
    asker = _asker(stack)
    deadline = clock() + CHECK_SECONDS
    server = server_entry(stack, asker)
    reports: dict[str, Any] = {}
    lines: list[dict[str, Any]] = []
    for domain in domains:
        try:
            topic = hostreports.domain_dns_topic(domain)
        except MailstackError as refused:  # the directory's CHECK makes this unreachable
            lines.append(_refused_line(domain, refused.message))
            continue
        checks, unchecked = _checked(stack, domain, asker, deadline, clock)
        entry = domain_entry(config, domain, asker.keys, checks, unchecked)
        reports[topic] = {"hostname": config.hostname, "resolver": asker.resolver, **entry}
        lines.append(index_line(entry))
    return {DNS: index(config, asker.resolver, server, lines), **reports}


def domain_reports(stack: Stack, topic: str) -> dict[str, Any]:
    """{topic: body} remade after a change to one domain (a key rotation, a refresh of its
    page): that domain's report and, when there is one, the index with its line replaced."""
    domain = hostreports.topic_domain(topic)
    domains, _ = dnscheck.mail_domains(stack, None)
    if domain is None or domain not in domains:
        raise UsageError(f"TOPIC: {topic[:80]!r} is not the DNS report of a mail domain here")
    asker = _asker(stack)
    checks, unchecked = _checked(
        stack, domain, asker, time.monotonic() + CHECK_SECONDS, time.monotonic
    )
    entry = domain_entry(stack.config, domain, asker.keys, checks, unchecked)
    made: dict[str, Any] = {
        topic: {"hostname": stack.config.hostname, "resolver": asker.resolver, **entry}
    }
    found = hostreports.read(stack.compose, DNS)
    if found is not None and isinstance(found.body, dict) and "domains" in found.body:
        line = index_line(entry)
        old = [item for item in found.body["domains"] if isinstance(item, dict)]
        kept = [line if item.get("domain") == domain else item for item in old]
        if line not in kept and domain not in found.body.get("left_out", []):
            kept.append(line)  # hosted since the index was made
        made[DNS] = {**found.body, "domains": kept}
    return made


def server_entry(stack: Stack, asker: _Asker) -> dict[str, Any]:
    """The mail server's own records and their checks (the index has them: they are small,
    and when they are not, the index says so instead)."""
    config = stack.config
    dnscheck.flush_cache(stack, [config.hostname])  # and _25._tcp.<hostname> below it
    served_keys = dane.load_keys(stack.dir.root)
    try:
        rows = dnscheck.check_dns(
            config,
            [],
            asker.keys,
            asker.lookup,
            asker.fetch,
            own_ca=asker.own_ca,
            dane=served_keys,
        ).rows
        checks: list[dict[str, str]] | None = [check_entry(row) for row in rows]
        unchecked = ""
    except dnscheck.DnsLookupFailed as failed:
        checks, unchecked = None, f"not checked: {failed.message}"
    server = {
        "records": [record_entry(record) for record in host_records(config, served_keys)],
        "checks": checks,
        "unchecked": unchecked,
    }
    if len(json.dumps(server, separators=(",", ":"))) > _SERVER_BUDGET:
        return {"records": [], "checks": None, "unchecked": "too large for this report "
                "(mailstack dns records and mailstack check dns show it)"}  # fmt: skip
    return server


def index(
    config: Config, resolver: str, server: dict[str, Any], lines: list[dict[str, Any]]
) -> dict[str, Any]:
    """The dns topic: the server's records and checks, and a line per domain while the
    lines fit (the rest only named in left_out: their own reports are whole)."""
    shown: list[dict[str, Any]] = []
    size = 0
    for line in lines:
        size += len(json.dumps(line, separators=(",", ":")))
        if size > _INDEX_BUDGET:
            break
        shown.append(line)
    return {
        "hostname": config.hostname,
        "resolver": resolver,
        "server": server,
        "domains": shown,
        "count": len(lines),
        "left_out": [line["domain"] for line in lines[len(shown) :]],
    }


def index_line(entry: dict[str, Any]) -> dict[str, Any]:
    """A domain's line in the index: its verdict and how many checks gave each verdict."""
    checks = entry["checks"] or []
    return {
        "domain": entry["domain"],
        "verdict": entry["verdict"],
        "counts": {str(v): sum(1 for c in checks if c["verdict"] == str(v)) for v in Verdict},
        "unchecked": entry["unchecked"],
    }


def _refused_line(domain: str, why: str) -> dict[str, Any]:
    return {"domain": domain[:80], "verdict": None, "counts": {}, "unchecked": why}


def _checked(
    stack: Stack,
    domain: str,
    asker: _Asker,
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
        rows = dnscheck.domain_rows(
            stack.config, domain, asker.keys, asker.lookup, asker.fetch, own_ca=asker.own_ca
        )
        return rows, ""
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
