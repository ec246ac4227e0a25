"""Host reports (table host_reports, migration 0011): what the host knows that the admin
service cannot ask for itself, because it has no Docker socket (by design): the services'
health, the bans, the mail queue, the backups, the DNS records and their check (one report
per mail domain, topic "dns:<domain>", migration 0016; the dns topic is their index).

`mailstack jobs run` (the host's per-minute timer; mailstack.runtime.reports makes each
report) writes a topic's latest report as JSON when it is due; the admin service's pages and
API read it and say how old it is. This module is the table's SQL only, so the admin service
can load it on Debian's own Python: it imports nothing of pydantic, typer or rich.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import MailstackError

HEALTH, BANS, QUEUE, BACKUPS, DNS = "health", "bans", "queue", "backups", "dns"
TOPICS = (HEALTH, BANS, QUEUE, BACKUPS, DNS)  # the table's CHECK names the same
# Each mail domain's DNS report is a topic of its own, "dns:<domain>" (migration 0016): the
# dns topic is their index. A domain as names.domain returns it (lower-case punycode, labels
# of letters, digits and inner hyphens, at most 253 characters); 0016's CHECK says the same.
DOMAIN_DNS_PREFIX = DNS + ":"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_DNS_TOPIC = re.compile(rf"{DOMAIN_DNS_PREFIX}(?=.{{1,253}}\Z)({_LABEL}(?:\.{_LABEL})+)")
# A report travels as one psql argument (at most 128 KiB on Linux): a topic whose report
# could grow without bound (the queue) cuts its list and says how many it left out.
MAX_REPORT_BYTES = 100_000


@dataclass(frozen=True)
class HostReport:
    topic: str
    body: Any  # the JSON the host wrote: each topic's producer defines its shape
    taken: str  # ISO 8601, UTC
    age_seconds: int


_PUBLISH = """
INSERT INTO host_reports (topic, body, taken)
VALUES (:'topic', CAST(:'body' AS jsonb), now())
ON CONFLICT (topic) DO UPDATE SET body = EXCLUDED.body, taken = EXCLUDED.taken;
"""

_READ = """
SELECT topic, body::text, to_char(taken AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    CAST(extract(epoch FROM now() - taken) AS bigint)
FROM host_reports WHERE topic = :'topic';
"""

# A report's parts ("dns:<domain>") no longer made: `keep` is a JSON array of topics.
_PRUNE_PARTS = """
DELETE FROM host_reports
WHERE starts_with(topic, :'prefix')
    AND topic NOT IN (SELECT jsonb_array_elements_text(CAST(:'keep' AS jsonb)));
"""

_AGES = """
SELECT topic, CAST(extract(epoch FROM now() - taken) AS bigint) FROM host_reports;
"""


def publish(executor: Executor, topic: str, body: Any) -> None:
    """Replace a topic's report with `body` (JSON-serialisable, at most MAX_REPORT_BYTES)."""
    _require_topic(topic)
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    if len(text.encode("utf-8")) > MAX_REPORT_BYTES:
        raise MailstackError(
            f"the {topic} report is {len(text)} bytes, over {MAX_REPORT_BYTES}; not published"
        )
    psql.query(executor, _PUBLISH, {"topic": topic, "body": text})


def read(executor: Executor, topic: str) -> HostReport | None:
    """A topic's latest report, or None when the host has not written one yet."""
    _require_topic(topic)
    rows = psql.query(executor, _READ, {"topic": topic})
    if not rows:
        return None
    try:
        (name, body, taken, age), *_ = rows
        return HostReport(name, json.loads(body), taken, max(0, int(age)))
    except (ValueError, json.JSONDecodeError):
        raise MailstackError("unexpected answer from the database") from None


def ages(executor: Executor) -> dict[str, int]:
    """{topic: seconds since its report was written} for every topic that has one."""
    rows = psql.query(executor, _AGES)
    try:
        return {row[0]: int(row[1]) for row in rows}
    except (IndexError, ValueError):
        raise MailstackError("unexpected answer from the database") from None


def domain_dns_topic(domain: str) -> str:
    """The topic of one domain's DNS report; a MailstackError (one line) for a name that is
    not a domain as mailstack stores them: no other text becomes a topic."""
    topic = DOMAIN_DNS_PREFIX + domain
    if not _DOMAIN_DNS_TOPIC.fullmatch(topic):
        raise MailstackError(f"DOMAIN: {domain[:80]!r} is not a domain name a report may name")
    return topic


def topic_domain(topic: str) -> str | None:
    """The domain a per-domain DNS topic names; None for any other text."""
    found = _DOMAIN_DNS_TOPIC.fullmatch(topic)
    return found.group(1) if found else None


def is_topic(topic: str) -> bool:
    """The one rule for a topic: one of TOPICS or "dns:<domain>" (read, publish, refresh)."""
    return topic in TOPICS or topic_domain(topic) is not None


def prune_parts(executor: Executor, topic: str, keep: Iterable[str]) -> None:
    """Delete the parts of `topic` ("dns:<domain>" of dns) but the topics in `keep`: the
    reports of domains no longer hosted. (The host's writer may; the admin role reads.)"""
    kept = list(keep)
    for part in kept:
        _require_topic(part)
    psql.query(executor, _PRUNE_PARTS, {"prefix": topic + ":", "keep": json.dumps(kept)})


def _require_topic(topic: str) -> None:
    if not is_topic(topic):
        raise ValueError(f"not a host report topic: {topic[:80]!r}")  # a caller's bug
