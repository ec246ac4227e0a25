"""The two aggregate report formats, read from unpacked bytes into frozen records: DMARC
(RFC 7489 appendix C, XML) and TLS-RPT (RFC 8460 section 4.4, JSON).

XML is read with the standard library's expat and its own handlers, not a DOM: a document
with a DOCTYPE, an entity declaration or an external entity reference is refused at the
first such declaration, before anything in it is expanded (billion laughs, external
entities), without a dependency (defusedxml does the same through the same expat hooks).
Every string a reporter wrote is cut to a bound and stripped of control characters before
it can reach a terminal; every count must be a non-negative integer.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

from mailstack.errors import MailstackError

MAX_TEXT = 200
MAX_COUNT = 10**12  # more sessions or messages than any reporter ever saw in one report
MAX_RECORDS = 100_000
# What a document may hold beyond its byte size (reportarchive bounds that): a tree of tiny
# elements or JSON values costs far more memory than its bytes.
MAX_ELEMENTS = 500_000
MAX_DEPTH = 32
MAX_JSON_BYTES = 4 * 1024 * 1024  # TLS reports are a few KiB; a big one tens of KiB
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


class ReportInvalid(MailstackError):
    """A report's content that is not a well-formed report of its format."""


# --- a small XML tree, built by expat with declarations refused ------------------------------


@dataclass(slots=True)
class Element:
    tag: str  # without a namespace prefix
    text: str = ""
    children: list[Element] = field(default_factory=list)

    def find(self, path: str) -> Element | None:
        """The first element down the '/'-separated path of tags."""
        found: Element | None = self
        for tag in path.split("/"):
            found = next((c for c in found.children if c.tag == tag), None) if found else None
        return found

    def findall(self, tag: str) -> list[Element]:
        return [child for child in self.children if child.tag == tag]

    def value(self, path: str) -> str:
        found = self.find(path)
        return clean(found.text) if found is not None else ""


def parse_xml(content: bytes) -> Element:
    """The document's root; ReportInvalid for a DOCTYPE, any entity declaration or
    reference to an external one, or XML that is not well formed."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    root: list[Element] = []
    open_elements: list[Element] = []

    def refuse_doctype(name: str, *_: object) -> None:
        raise ReportInvalid(
            f"XML declares a DOCTYPE ({clean(name)[:40]}): refused (entity expansion)"
        )

    def refuse_entity(name: str, *_: object) -> None:
        raise ReportInvalid(f"XML declares entity {clean(name)[:40]!r}: refused")

    def refuse_external(*_: object) -> int:
        raise ReportInvalid("XML refers to an external entity: refused")

    counted = [0]

    def start(tag: str, _attributes: dict[str, str]) -> None:
        counted[0] += 1
        if counted[0] > MAX_ELEMENTS or len(open_elements) >= MAX_DEPTH:
            raise ReportInvalid(
                f"XML has more than {MAX_ELEMENTS} elements or is nested deeper than {MAX_DEPTH}"
            )
        element = Element(tag.rpartition(":")[2])
        if open_elements:
            open_elements[-1].children.append(element)
        else:
            root.append(element)
        open_elements.append(element)

    def end(_tag: str) -> None:
        open_elements.pop()

    def text(data: str) -> None:
        if open_elements and len(open_elements[-1].text) < MAX_TEXT * 4:
            open_elements[-1].text += data

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = refuse_external
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(content, True)
    except expat.ExpatError as e:
        raise ReportInvalid(
            f"XML is not well formed: {expat.ErrorString(e.code)} at line {e.lineno}"
        ) from None
    if not root:
        raise ReportInvalid("XML has no root element")
    return root[0]


def clean(value: object, limit: int = MAX_TEXT) -> str:
    """A stranger's text as one printable line of at most `limit` characters."""
    text = _CONTROL.sub(" ", value).strip() if isinstance(value, str) else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _count(value: object, what: str) -> int:
    digits = value.strip() if isinstance(value, str) else ""
    if digits.isascii() and digits.isdigit() and len(digits) <= 13:
        value = int(digits)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    raise ReportInvalid(f"{what}: {clean(str(value), 40)!r} is not a count")


# --- DMARC ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DmarcRow:
    """One <record>: a source address, how many messages, and what the receiver decided."""

    source_ip: str
    count: int
    disposition: str  # none | quarantine | reject (policy_evaluated)
    dkim: str  # aligned DKIM as the receiver evaluated it: pass | fail
    spf: str  # aligned SPF: pass | fail
    header_from: str


@dataclass(frozen=True)
class DmarcReport:
    org_name: str
    report_id: str
    begin: int  # seconds since the epoch
    end: int
    domain: str  # policy_published: the domain the report is about
    policy: str  # p=
    rows: tuple[DmarcRow, ...]


_RESULTS = {"pass", "fail"}
_DISPOSITIONS = {"none", "quarantine", "reject", "pass"}  # pass: DMARCbis


def parse_dmarc(content: bytes) -> DmarcReport:
    root = parse_xml(content)
    if root.tag != "feedback":
        raise ReportInvalid(f"XML root is <{clean(root.tag, 40)}>, not a DMARC <feedback>")
    domain = root.value("policy_published/domain").lower()
    if not domain:
        raise ReportInvalid("DMARC report has no policy_published/domain")
    records = root.findall("record")
    if len(records) > MAX_RECORDS:
        raise ReportInvalid(f"DMARC report has {len(records)} records, over {MAX_RECORDS}")
    return DmarcReport(
        org_name=root.value("report_metadata/org_name") or "(unnamed)",
        report_id=root.value("report_metadata/report_id"),
        begin=_count(root.value("report_metadata/date_range/begin") or "0", "date_range/begin"),
        end=_count(root.value("report_metadata/date_range/end") or "0", "date_range/end"),
        domain=domain,
        policy=root.value("policy_published/p"),
        rows=tuple(_dmarc_row(record, number) for number, record in enumerate(records, 1)),
    )


def _dmarc_row(record: Element, number: int) -> DmarcRow:
    where = f"record {number}"
    source = record.value("row/source_ip")
    try:
        source = str(ipaddress.ip_address(source))
    except ValueError:
        raise ReportInvalid(f"{where}: source_ip {source[:60]!r} is not an IP address") from None
    disposition = record.value("row/policy_evaluated/disposition").lower()
    dkim = record.value("row/policy_evaluated/dkim").lower()
    spf = record.value("row/policy_evaluated/spf").lower()
    if disposition not in _DISPOSITIONS:
        raise ReportInvalid(
            f"{where}: disposition {disposition[:40]!r} is not none, pass, quarantine or reject"
        )
    for name, result in (("dkim", dkim), ("spf", spf)):
        if result not in _RESULTS:
            raise ReportInvalid(f"{where}: {name} {result[:40]!r} is not pass or fail")
    return DmarcRow(
        source_ip=source,
        count=_count(record.value("row/count"), f"{where}: count"),
        disposition=disposition,
        dkim=dkim,
        spf=spf,
        header_from=record.value("identifiers/header_from").lower(),
    )


# --- TLS-RPT ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFailure:
    result_type: str  # e.g. certificate-expired, starttls-not-supported, sts-policy-invalid
    count: int  # failed-session-count
    receiving_mx: str  # receiving-mx-hostname, if given


@dataclass(frozen=True)
class TlsPolicyResult:
    policy_type: str  # sts | tlsa | no-policy-found
    policy_domain: str
    successful: int
    failed: int
    failures: tuple[TlsFailure, ...]


@dataclass(frozen=True)
class TlsReport:
    org_name: str
    report_id: str
    start: str  # date-range start-datetime, as written (RFC 3339)
    end: str
    policies: tuple[TlsPolicyResult, ...]


def parse_tls(content: bytes) -> TlsReport:
    if len(content) > MAX_JSON_BYTES:
        raise ReportInvalid(f"TLS report of {len(content)} bytes is over {MAX_JSON_BYTES}")
    try:
        document = json.loads(content.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ReportInvalid("TLS report is not UTF-8") from None
    except (ValueError, RecursionError) as e:
        raise ReportInvalid(f"TLS report is not JSON: {clean(str(e), 80)}") from None
    top = _object(document, "TLS report")
    policies = top.get("policies")
    if not isinstance(policies, list) or not policies:
        raise ReportInvalid("TLS report has no policies list")
    if len(policies) > MAX_RECORDS:
        raise ReportInvalid(f"TLS report has {len(policies)} policies, over {MAX_RECORDS}")
    dates = top.get("date-range")
    dates = dates if isinstance(dates, dict) else {}
    return TlsReport(
        org_name=clean(top.get("organization-name")) or "(unnamed)",
        report_id=clean(top.get("report-id")),
        start=clean(dates.get("start-datetime"), 40),
        end=clean(dates.get("end-datetime"), 40),
        policies=tuple(_tls_policy(item, number) for number, item in enumerate(policies, 1)),
    )


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReportInvalid(f"{what} is not a JSON object")
    return value


def _tls_policy(item: object, number: int) -> TlsPolicyResult:
    where = f"policies[{number}]"
    entry = _object(item, where)
    policy = _object(entry.get("policy"), f"{where}.policy")
    summary = _object(entry.get("summary"), f"{where}.summary")
    domain = clean(policy.get("policy-domain")).lower().rstrip(".")
    if not domain:
        raise ReportInvalid(f"{where}.policy has no policy-domain")
    details = entry.get("failure-details", [])
    if not isinstance(details, list) or len(details) > MAX_RECORDS:
        raise ReportInvalid(f"{where}.failure-details is not a list of at most {MAX_RECORDS}")
    return TlsPolicyResult(
        policy_type=clean(policy.get("policy-type"), 40) or "(none)",
        policy_domain=domain,
        successful=_count(
            summary.get("total-successful-session-count", 0),
            f"{where}.summary.total-successful-session-count",
        ),
        failed=_count(
            summary.get("total-failure-session-count", 0),
            f"{where}.summary.total-failure-session-count",
        ),
        failures=tuple(
            _tls_failure(d, f"{where}.failure-details[{n}]") for n, d in enumerate(details, 1)
        ),
    )


def _tls_failure(item: object, where: str) -> TlsFailure:
    detail = _object(item, where)
    result_type = clean(detail.get("result-type"), 60)
    if not result_type:
        raise ReportInvalid(f"{where} has no result-type")
    return TlsFailure(
        result_type=result_type,
        count=_count(detail.get("failed-session-count", 0), f"{where}.failed-session-count"),
        receiving_mx=clean(detail.get("receiving-mx-hostname"), 100).lower().rstrip("."),
    )
