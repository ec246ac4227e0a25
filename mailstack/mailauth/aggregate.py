"""DMARC and TLS-RPT aggregate reports from the mail that brings them: the report
attachments of one message found and read (reportarchive unpacks, reportformats parses),
and many reports summed up per domain for `mailstack report dmarc|tls`.

Pure functions over bytes: reading the mailbox is mailstack.runtime.reportmailbox's job.
A message whose report cannot be read becomes one Rejected line naming the message and
what is wrong; the other messages are still counted.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.message
import email.policy
from collections.abc import Iterable
from dataclasses import dataclass

from mailstack.errors import MailstackError
from mailstack.mailauth.reportarchive import DEFAULT_LIMITS, Limits, unpack
from mailstack.mailauth.reportformats import (
    DmarcReport,
    TlsReport,
    clean,
    parse_dmarc,
    parse_tls,
)

DMARC = "dmarc"
TLS = "tls"
# Media types and file names of report attachments (RFC 7489 7.2.1.1, RFC 8460 5.3), and the
# generic ones reporters use in practice; what is inside is decided by the bytes.
_TLS_TYPES = {"application/tlsrpt+gzip", "application/tlsrpt+json"}
_REPORT_TYPES = {
    *_TLS_TYPES,
    "application/gzip",
    "application/x-gzip",
    "application/zip",
    "application/x-zip",
    "application/x-zip-compressed",
    "application/xml",
    "text/xml",
    "application/json",
}
_REPORT_SUFFIXES = (".xml", ".xml.gz", ".zip", ".gz", ".json", ".json.gz")
_BASE64_SLACK = 4 / 3 * 1.05  # base64 text per decoded byte, with line breaks


@dataclass(frozen=True)
class Rejected:
    """A report that was not read: which message, what kind it claimed, and why."""

    message: str  # its Message-ID and subject
    kind: str  # dmarc | tls: what the attachment looked like
    reason: str

    def __str__(self) -> str:
        return f"{self.message}: {self.reason}"


@dataclass(frozen=True)
class MessageReports:
    dmarc: tuple[DmarcReport, ...] = ()
    tls: tuple[TlsReport, ...] = ()
    rejected: tuple[Rejected, ...] = ()


def read_message(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> MessageReports:
    """Every report attached to one message; a message without one gives nothing."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    label = message_label(message)
    dmarc: list[DmarcReport] = []
    tls: list[TlsReport] = []
    rejected: list[Rejected] = []
    for part in message.walk():
        if part.is_multipart() or not _is_report_attachment(part):
            continue
        kind = _declared_kind(part)
        try:
            report = _read_attachment(part, limits)
        except MailstackError as e:
            rejected.append(Rejected(label, kind, f"{_name(part)}: {e.message}"))
            continue
        if isinstance(report, DmarcReport):
            dmarc.append(report)
        else:
            tls.append(report)
    return MessageReports(tuple(dmarc), tuple(tls), tuple(rejected))


def message_label(message: email.message.Message) -> str:
    """How a message is named in a rejection: its Message-ID and its subject."""
    message_id = clean(str(message.get("Message-ID", "")), 120) or "(no Message-ID)"
    return f"{message_id} ({_subject(message)})"


def _subject(message: email.message.Message) -> str:
    # Unfolded as RFC 5322 says (the line break goes, the space after it stays).
    raw = str(message.get("Subject", "")).replace("\r\n", "").replace("\n", "")
    try:
        decoded = str(email.header.make_header(email.header.decode_header(raw)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        decoded = raw
    return clean(decoded, 120) or "no subject"


def _is_report_attachment(part: email.message.Message) -> bool:
    name = _filename(part).lower()
    return part.get_content_type() in _REPORT_TYPES or name.endswith(_REPORT_SUFFIXES)


def _declared_kind(part: email.message.Message) -> str:
    name = _filename(part).lower()
    return TLS if part.get_content_type() in _TLS_TYPES or ".json" in name else DMARC


def _filename(part: email.message.Message) -> str:
    try:
        return str(part.get_filename() or "")
    except (ValueError, LookupError, UnicodeError):
        return ""


def _name(part: email.message.Message) -> str:
    return clean(_filename(part), 80) or part.get_content_type()


def _read_attachment(part: email.message.Message, limits: Limits) -> DmarcReport | TlsReport:
    encoded = part.get_payload(decode=False)
    if isinstance(encoded, str) and len(encoded) > limits.compressed_bytes * _BASE64_SLACK:
        raise MailstackError(
            f"attachment of about {int(len(encoded) / _BASE64_SLACK)} bytes is over the "
            f"{limits.compressed_bytes}-byte limit"
        )
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes) or not data:
        raise MailstackError("attachment is empty")
    _, content = unpack(data, limits)
    start = content.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if start == b"<":
        return parse_dmarc(content)
    if start == b"{":
        return parse_tls(content)
    raise MailstackError("attachment is neither an XML (DMARC) nor a JSON (TLS-RPT) report")


# --- sums over many reports -------------------------------------------------------------------


@dataclass(frozen=True)
class DmarcSource:
    """What the reporters saw of one source address sending as one domain."""

    source_ip: str
    messages: int
    dkim_pass: int
    dkim_fail: int
    spf_pass: int
    spf_fail: int
    dispositions: dict[str, int]  # none | pass | quarantine | reject -> messages
    reporters: tuple[str, ...]


@dataclass(frozen=True)
class DmarcDomain:
    domain: str
    messages: int
    dkim_pass: int
    spf_pass: int
    sources: tuple[DmarcSource, ...]  # most messages first


@dataclass(frozen=True)
class DmarcTotals:
    reports: int
    messages: int
    dkim_pass: int
    dkim_fail: int
    spf_pass: int
    spf_fail: int
    dispositions: dict[str, int]
    domains: tuple[DmarcDomain, ...]


def unique(reports: Iterable[DmarcReport | TlsReport]) -> list[DmarcReport | TlsReport]:
    """A report delivered twice (resent, or to two rua addresses) is counted once: the same
    reporter and report id."""
    seen: set[tuple[str, str]] = set()
    kept: list[DmarcReport | TlsReport] = []
    for report in reports:
        key = (report.org_name, report.report_id)
        if report.report_id and key in seen:
            continue
        seen.add(key)
        kept.append(report)
    return kept


def dmarc_totals(reports: Iterable[DmarcReport]) -> DmarcTotals:
    kept = [r for r in unique(reports) if isinstance(r, DmarcReport)]
    per_source: dict[tuple[str, str], list[tuple[str, int, str, str, str]]] = {}
    for report in kept:
        for row in report.rows:
            per_source.setdefault((report.domain, row.source_ip), []).append(
                (report.org_name, row.count, row.dkim, row.spf, row.disposition)
            )
    sources: dict[str, list[DmarcSource]] = {}
    for (domain, source_ip), seen in sorted(per_source.items()):
        sources.setdefault(domain, []).append(_source(source_ip, seen))
    domains = tuple(
        DmarcDomain(
            domain=domain,
            messages=sum(s.messages for s in found),
            dkim_pass=sum(s.dkim_pass for s in found),
            spf_pass=sum(s.spf_pass for s in found),
            sources=tuple(sorted(found, key=lambda s: (-s.messages, s.source_ip))),
        )
        for domain, found in sorted(sources.items())
    )
    every = [s for found in sources.values() for s in found]
    dispositions: dict[str, int] = {}
    for source in every:
        for name, count in source.dispositions.items():
            dispositions[name] = dispositions.get(name, 0) + count
    return DmarcTotals(
        reports=len(kept),
        messages=sum(s.messages for s in every),
        dkim_pass=sum(s.dkim_pass for s in every),
        dkim_fail=sum(s.dkim_fail for s in every),
        spf_pass=sum(s.spf_pass for s in every),
        spf_fail=sum(s.spf_fail for s in every),
        dispositions=dict(sorted(dispositions.items())),
        domains=domains,
    )


def _source(source_ip: str, seen: list[tuple[str, int, str, str, str]]) -> DmarcSource:
    dispositions: dict[str, int] = {}
    for _, count, _, _, disposition in seen:
        dispositions[disposition] = dispositions.get(disposition, 0) + count
    return DmarcSource(
        source_ip=source_ip,
        messages=sum(count for _, count, *_ in seen),
        dkim_pass=sum(count for _, count, dkim, _, _ in seen if dkim == "pass"),
        dkim_fail=sum(count for _, count, dkim, _, _ in seen if dkim != "pass"),
        spf_pass=sum(count for _, count, _, spf, _ in seen if spf == "pass"),
        spf_fail=sum(count for _, count, _, spf, _ in seen if spf != "pass"),
        dispositions=dict(sorted(dispositions.items())),
        reporters=tuple(sorted({org for org, *_ in seen})),
    )


@dataclass(frozen=True)
class TlsDomain:
    """What the reporters saw of sessions to one policy (receiving) domain."""

    policy_domain: str
    successful: int
    failed: int
    failure_types: dict[str, int]  # result-type -> failed sessions
    policy_types: tuple[str, ...]  # sts, tlsa, no-policy-found
    receiving_mx: tuple[str, ...]  # the MX hosts named in failures
    reporters: tuple[str, ...]


@dataclass(frozen=True)
class TlsTotals:
    reports: int
    successful: int
    failed: int
    failure_types: dict[str, int]
    domains: tuple[TlsDomain, ...]


def tls_totals(reports: Iterable[TlsReport]) -> TlsTotals:
    kept = [r for r in unique(reports) if isinstance(r, TlsReport)]
    grouped: dict[str, list[tuple[str, TlsReport, int]]] = {}
    for report in kept:
        for index, policy in enumerate(report.policies):
            grouped.setdefault(policy.policy_domain, []).append((report.org_name, report, index))
    domains = tuple(_tls_domain(domain, seen) for domain, seen in sorted(grouped.items()))
    failure_types: dict[str, int] = {}
    for domain in domains:
        for name, count in domain.failure_types.items():
            failure_types[name] = failure_types.get(name, 0) + count
    return TlsTotals(
        reports=len(kept),
        successful=sum(d.successful for d in domains),
        failed=sum(d.failed for d in domains),
        failure_types=dict(sorted(failure_types.items())),
        domains=domains,
    )


def _tls_domain(domain: str, seen: list[tuple[str, TlsReport, int]]) -> TlsDomain:
    policies = [report.policies[index] for _, report, index in seen]
    failure_types: dict[str, int] = {}
    for policy in policies:
        for failure in policy.failures:
            failure_types[failure.result_type] = (
                failure_types.get(failure.result_type, 0) + failure.count
            )
    return TlsDomain(
        policy_domain=domain,
        successful=sum(p.successful for p in policies),
        failed=sum(p.failed for p in policies),
        failure_types=dict(sorted(failure_types.items())),
        policy_types=tuple(sorted({p.policy_type for p in policies})),
        receiving_mx=tuple(sorted({f.receiving_mx for p in policies for f in p.failures} - {""})),
        reporters=tuple(sorted({org for org, _, _ in seen})),
    )
