"""DMARC and TLS-RPT aggregate reports: found in a message, unpacked within bounds, parsed,
summed; every hostile archive and document refused with one line, the others still read."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from mailstack.errors import UsageError
from mailstack.mailauth import aggregate
from mailstack.mailauth.reportarchive import ArchiveRefused, Limits, unpack
from mailstack.mailauth.reportformats import ReportInvalid, parse_dmarc, parse_tls, parse_xml
from mailstack.runtime import reportmailbox
from tests.aggregatesamples import (
    ENTITY_BOMB,
    EXTERNAL_ENTITY,
    Row,
    dmarc_xml,
    gzipped,
    report_mail,
    tls_json,
    zeros_gzipped,
    zeros_zipped,
    zipped,
)
from tests.unit.fakes import FakeContainers

DOMAIN = "example.test"
BOMB_SIZE = 200 * 1024 * 1024


def _mail(attachment: bytes, filename: str, media_type: str, subject: str = "Report") -> bytes:
    return report_mail(
        "noreply@reporter.example",
        f"postmaster@{DOMAIN}",
        subject,
        attachment,
        filename,
        media_type,
    ).as_bytes()


def _dmarc_sample() -> bytes:
    return dmarc_xml(
        DOMAIN,
        "google.com",
        [
            Row("192.0.2.1", 12),
            Row("203.0.113.9", 3, dkim="fail", spf="fail", disposition="quarantine"),
        ],
    )


# --- reading reports --------------------------------------------------------------------------


def test_dmarc_report_parsed_per_record() -> None:
    report = parse_dmarc(_dmarc_sample())
    assert report.domain == DOMAIN
    assert report.org_name == "google.com"
    assert report.policy == "quarantine"
    assert [(r.source_ip, r.count, r.dkim, r.spf, r.disposition) for r in report.rows] == [
        ("192.0.2.1", 12, "pass", "pass", "none"),
        ("203.0.113.9", 3, "fail", "fail", "quarantine"),
    ]


def test_dmarc_report_with_a_namespace_is_read() -> None:
    text = _dmarc_sample().replace(
        b"<feedback>", b'<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">'
    )
    assert parse_dmarc(text).rows[0].count == 12


def test_tls_report_parsed_per_policy() -> None:
    report = parse_tls(tls_json(DOMAIN, "microsoft.com", 40, {"certificate-expired": 2}))
    (policy,) = report.policies
    assert (policy.policy_domain, policy.successful, policy.failed) == (DOMAIN, 40, 2)
    assert [(f.result_type, f.count, f.receiving_mx) for f in policy.failures] == [
        ("certificate-expired", 2, f"mail.{DOMAIN}")
    ]


@pytest.mark.parametrize(
    ("filename", "media_type", "pack"),
    [
        ("google.com!example.test!1!2.xml.gz", "application/gzip", gzipped),
        (
            "google.com!example.test!1!2.zip",
            "application/zip",
            lambda data: zipped({"r.xml": data}),
        ),
        ("google.com!example.test!1!2.xml", "text/xml", lambda data: data),
    ],
)
def test_dmarc_report_found_in_mail_gzip_zip_and_plain(
    filename: str, media_type: str, pack: Callable[[bytes], bytes]
) -> None:
    read = aggregate.read_message(_mail(pack(_dmarc_sample()), filename, media_type))
    assert read.rejected == ()
    assert [r.domain for r in read.dmarc] == [DOMAIN]


def test_tls_report_found_in_mail_as_tlsrpt_gzip() -> None:
    data = gzipped(tls_json(DOMAIN, "google.com", 5, {}))
    read = aggregate.read_message(
        _mail(data, "google.com!example.test!1!2.json.gz", "application/tlsrpt+gzip")
    )
    assert [p.successful for p in read.tls[0].policies] == [5]
    assert read.dmarc == () and read.rejected == ()


def test_mail_without_a_report_gives_nothing() -> None:
    plain = b"From: a@b.example\r\nSubject: hello\r\n\r\nJust a letter.\r\n"
    assert aggregate.read_message(plain) == aggregate.MessageReports()


# --- hostile archives ------------------------------------------------------------------------


def _peak_while(function: Callable[[bytes], object], data: bytes) -> tuple[int, str]:
    """The peak memory allocated while `function(data)` refuses, and its reason."""
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveRefused) as refused:
            function(data)
        return tracemalloc.get_traced_memory()[1], str(refused.value)
    finally:
        tracemalloc.stop()


def test_zip_bomb_refused_within_bounded_memory() -> None:
    bomb = zeros_zipped(BOMB_SIZE)
    peak, reason = _peak_while(unpack, bomb)
    assert "decompression bomb" in reason
    assert peak < 8 * 1024 * 1024  # the 200 MB were never held


def test_gzip_bomb_refused_within_bounded_memory() -> None:
    bomb = zeros_gzipped(BOMB_SIZE)
    peak, reason = _peak_while(unpack, bomb)
    assert "decompression bomb" in reason
    assert peak < 8 * 1024 * 1024


def test_decompressed_size_limit_refuses_an_oversized_report() -> None:
    limits = Limits(decompressed_bytes=100_000, ratio=10**6)
    oversized = dmarc_xml(
        DOMAIN, "big.example", [Row(f"192.0.2.{n % 250 + 1}", n) for n in range(400)]
    )
    assert len(oversized) > 100_000
    for packed in (gzipped(oversized), zipped({"r.xml": oversized}), oversized):
        with pytest.raises(ArchiveRefused, match="100000-byte limit"):
            unpack(packed, limits)


def test_compression_ratio_limit_refuses_before_the_size_limit() -> None:
    with pytest.raises(ArchiveRefused, match="more than 100 times"):
        unpack(zeros_gzipped(20 * 1024 * 1024))


def test_compressed_size_limit_refuses_a_huge_attachment() -> None:
    with pytest.raises(ArchiveRefused, match="over the 1000-byte limit"):
        unpack(b"<" + bytes(2000), Limits(compressed_bytes=1000))


def test_zip_member_with_parent_directory_refused() -> None:
    with pytest.raises(ArchiveRefused, match=r"directory part or '\.\.'"):
        unpack(zipped({"../x.xml": _dmarc_sample()}))


@pytest.mark.parametrize("name", ["/etc/x.xml", "reports/x.xml", "..\\x.xml", "C:x.xml"])
def test_zip_member_with_any_path_refused(name: str) -> None:
    with pytest.raises(ArchiveRefused, match="directory part"):
        unpack(zipped({name: _dmarc_sample()}))


def test_zip_with_two_members_refused() -> None:
    with pytest.raises(ArchiveRefused, match="holds 2 members"):
        unpack(zipped({"a.xml": _dmarc_sample(), "b.xml": _dmarc_sample()}))


def test_zip_member_lying_about_its_size_is_still_refused() -> None:
    """The size a zip declares is a stranger's word: a bomb declaring 1000 bytes is read no
    further than that and refused (its checksum fails), never unpacked whole."""
    bomb = bytearray(zipped({"report.xml": bytes(8 * 1024 * 1024)}))
    central = bomb.index(b"PK\x01\x02")
    bomb[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    bomb[22:26] = (1000).to_bytes(4, "little")  # the local header's copy
    assert zipfile.ZipFile(io.BytesIO(bytes(bomb))).infolist()[0].file_size == 1000
    peak, reason = _peak_while(unpack, bytes(bomb))
    assert "damaged" in reason
    assert peak < 4 * 1024 * 1024


def test_truncated_gzip_refused() -> None:
    with pytest.raises(ArchiveRefused, match=r"truncated|damaged"):
        unpack(gzipped(_dmarc_sample())[:-12])


def test_nothing_written_to_disk_while_unpacking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    unpack(zipped({"x.xml": _dmarc_sample()}))
    with pytest.raises(ArchiveRefused):
        unpack(zipped({"../x.xml": _dmarc_sample()}))
    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "x.xml").exists()


# --- hostile XML and JSON --------------------------------------------------------------------


def test_xml_entity_bomb_refused_before_expansion() -> None:
    with pytest.raises(ReportInvalid, match="DOCTYPE"):
        parse_xml(ENTITY_BOMB)


def test_xml_external_entity_refused() -> None:
    with pytest.raises(ReportInvalid, match="DOCTYPE"):
        parse_xml(EXTERNAL_ENTITY)


def test_xml_doctype_refused_in_utf16_too() -> None:
    with pytest.raises(ReportInvalid, match="DOCTYPE"):
        parse_xml(
            EXTERNAL_ENTITY.replace(b'version="1.0"', b'version="1.0" encoding="UTF-16"')
            .decode()
            .encode("utf-16")
        )


def test_xml_not_well_formed_refused_with_its_line() -> None:
    with pytest.raises(ReportInvalid, match=r"not well formed.*line 2"):
        parse_xml(b"<feedback>\n<record></feedback>")


def test_xml_of_countless_tiny_elements_refused() -> None:
    """32 MiB of '<a/>' would be millions of objects: the element count is bounded."""
    with pytest.raises(ReportInvalid, match="more than 500000 elements"):
        parse_xml(b"<feedback>" + b"<a/>" * 500_001 + b"</feedback>")


def test_deeply_nested_xml_refused() -> None:
    with pytest.raises(ReportInvalid, match="nested deeper than 32"):
        parse_xml(b"<a>" * 40 + b"</a>" * 40)


def test_oversized_tls_json_refused() -> None:
    with pytest.raises(ReportInvalid, match="over 4194304"):
        parse_tls(b"[" + b"[]," * 1_500_000 + b"[]]")


def test_deeply_nested_json_refused_without_a_traceback() -> None:
    with pytest.raises(ReportInvalid, match="not JSON"):
        parse_tls(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize(
    "count", ["-1", '"many"', "1e400", "true", '"\u00b2"', '"00000000000000001"']
)
def test_tls_count_that_is_not_a_count_refused(count: str) -> None:
    text = tls_json(DOMAIN, "o.example", 1, {}).replace(
        b'"total-successful-session-count": 1',
        f'"total-successful-session-count": {count}'.encode(),
    )
    with pytest.raises(ReportInvalid, match="is not a count"):
        parse_tls(text)


def test_dmarc_source_that_is_not_an_address_refused() -> None:
    with pytest.raises(ReportInvalid, match="record 1: source_ip"):
        parse_dmarc(dmarc_xml(DOMAIN, "o.example", [Row("not-an-ip\u009b31m", 1)]))


def test_report_text_stripped_of_control_characters() -> None:
    """A terminal's control sequence (C1 CSI, allowed in XML 1.0) never reaches a screen."""
    report = parse_dmarc(dmarc_xml(DOMAIN, "evil\u009b2J.example", [Row("192.0.2.1", 1)]))
    assert report.org_name == "evil 2J.example"


# --- a malformed report is one line; the others still count ----------------------------------


def test_hostile_attachments_each_rejected_with_one_line_naming_the_message() -> None:
    hostile = [
        (_mail(zeros_zipped(BOMB_SIZE), "bomb.zip", "application/zip", "Zip bomb"), "bomb"),
        (_mail(ENTITY_BOMB, "bomb.xml", "text/xml", "Entity bomb"), "DOCTYPE"),
        (
            _mail(zipped({"../x.xml": _dmarc_sample()}), "t.zip", "application/zip", "Traversal"),
            "..",
        ),
        (_mail(b"<feedback><oops>", "broken.xml", "text/xml", "Broken"), "not well formed"),
    ]
    for raw, reason in hostile:
        read = aggregate.read_message(raw)
        (rejected,) = read.rejected
        assert read.dmarc == ()
        assert rejected.kind == aggregate.DMARC
        assert reason in rejected.reason
        assert "\n" not in str(rejected)
        assert "@reporter.example>" in rejected.message  # its Message-ID
        assert str(rejected).count(":") >= 2


def test_long_subject_named_unfolded() -> None:
    subject = "Report Domain: example.test Submitter: reporter.example Report-ID: " + "7" * 40
    raw = _mail(b"<feedback><oops>", "broken.xml", "text/xml", subject)
    assert b"\n " in raw.split(b"\n\n")[0]  # folded on the wire
    (rejected,) = aggregate.read_message(raw).rejected
    assert f"({subject})" in rejected.message


def test_rejected_tls_report_is_listed_as_tls() -> None:
    raw = _mail(b"{not json", "x.json", "application/tlsrpt+json", "TLS broken")
    (rejected,) = aggregate.read_message(raw).rejected
    assert rejected.kind == aggregate.TLS
    assert "(TLS broken)" in rejected.message


def test_dmarc_totals_per_domain_and_source_and_duplicates_counted_once() -> None:
    first = parse_dmarc(_dmarc_sample())
    second = parse_dmarc(dmarc_xml(DOMAIN, "yahoo.com", [Row("192.0.2.1", 5, spf="fail")]))
    other = parse_dmarc(dmarc_xml("other.test", "google.com", [Row("198.51.100.7", 1)]))
    totals = aggregate.dmarc_totals([first, second, other, first])
    assert (totals.reports, totals.messages) == (3, 21)
    assert (totals.dkim_pass, totals.dkim_fail, totals.spf_pass, totals.spf_fail) == (18, 3, 13, 8)
    assert totals.dispositions == {"none": 18, "quarantine": 3}
    domain = totals.domains[0]
    assert domain.domain == "example.test" and domain.messages == 20
    source = domain.sources[0]
    assert (source.source_ip, source.messages, source.spf_fail) == ("192.0.2.1", 17, 5)
    assert source.reporters == ("google.com", "yahoo.com")
    assert [d.domain for d in totals.domains] == ["example.test", "other.test"]


def test_tls_totals_per_policy_domain_with_failure_types() -> None:
    reports = [
        parse_tls(tls_json(DOMAIN, "google.com", 10, {"certificate-expired": 2})),
        parse_tls(
            tls_json(
                DOMAIN, "microsoft.com", 5, {"certificate-expired": 1, "starttls-not-supported": 4}
            )
        ),
    ]
    totals = aggregate.tls_totals(reports)
    assert (totals.reports, totals.successful, totals.failed) == (2, 15, 7)
    (domain,) = totals.domains
    assert domain.failure_types == {"certificate-expired": 3, "starttls-not-supported": 4}
    assert domain.reporters == ("google.com", "microsoft.com")
    assert domain.receiving_mx == (f"mail.{DOMAIN}",)


# --- the mailbox: where rua delivers, and reading it through doveadm ---------------------------


def test_rua_alias_followed_to_its_mailboxes() -> None:
    mailboxes = {"reports@example.test", "boss@example.test"}
    aliases = {
        "postmaster@example.test": ["dmarc@example.test", "outside@elsewhere.example"],
        "dmarc@example.test": ["reports@example.test"],
        "@other.test": ["boss@example.test"],
        "loop@example.test": ["loop@example.test"],
    }
    assert reportmailbox.delivered_to("Postmaster@example.test", mailboxes, aliases) == [
        "reports@example.test"
    ]
    assert reportmailbox.delivered_to("postmaster@other.test", mailboxes, aliases) == [
        "boss@example.test"
    ]
    assert reportmailbox.delivered_to("loop@example.test", mailboxes, aliases) == []
    assert reportmailbox.delivered_to("x@elsewhere.example", mailboxes, aliases) == []


@pytest.mark.parametrize(
    "text", ["0", "-3", "x", "1.5", "367", "", "99999999999999999999", "\u00b2", "\u0663"]
)
def test_days_refused_with_one_line(text: str) -> None:
    with pytest.raises(
        UsageError, match=r"^--days: .* is not a whole number of days from 1 to 366$"
    ):
        reportmailbox.report_days(text)


def test_days_accepted() -> None:
    assert reportmailbox.report_days(" 30 ") == 30


def test_mailbox_read_through_doveadm_in_inbox_and_junk() -> None:
    report = _mail(gzipped(_dmarc_sample()), "r.xml.gz", "application/gzip")
    # Dovecot writes the message into a JSON string; a byte that is not UTF-8 survives.
    inbox = json.dumps([{"text": report.decode() + "\udcff"}], ensure_ascii=False)
    big_header = json.dumps([{"hdr": "Message-ID: <big@x.example>\nSubject: Huge\n\n"}])
    fake = FakeContainers(
        by_marker=[
            ("text mailbox INBOX SINCE 7d SMALLER", inbox.encode("utf-8", "surrogateescape")),
            ("hdr mailbox Junk SINCE 7d LARGER", big_header.encode()),
        ]
    )
    read = reportmailbox.read_mailbox(fake, "reports@example.test", 7)
    assert fake.calls[0].argv[:6] == [
        "doveadm",
        "-f",
        "json",
        "fetch",
        "-u",
        "reports@example.test",
    ]
    assert {call.service for call in fake.calls} == {"dovecot"}
    (message,) = read.messages
    assert message.endswith(b"\xff")
    assert aggregate.read_message(message).dmarc[0].domain == DOMAIN
    assert [r.message for r in read.too_large] == ["<big@x.example> (Huge)"] * 2
    assert "not read" in read.too_large[0].reason


def test_gzip_report_in_two_members_is_read() -> None:
    xml = _dmarc_sample()
    two = gzip.compress(xml[:100]) + gzip.compress(xml[100:])
    assert unpack(two) == ("gzip", xml)
