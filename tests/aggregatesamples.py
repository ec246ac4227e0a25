"""Aggregate reports as reporters send them, for the unit and end-to-end tests: DMARC XML
(RFC 7489 appendix C), TLS-RPT JSON (RFC 8460 section 4.4), compressed the ways reporters
compress them, in a mail as reporters mail them; and the hostile ones."""

from __future__ import annotations

import email.utils
import gzip
import io
import json
import uuid
import zipfile
from dataclasses import dataclass
from email.message import EmailMessage


@dataclass(frozen=True)
class Row:
    source_ip: str
    count: int
    dkim: str = "pass"
    spf: str = "pass"
    disposition: str = "none"


def dmarc_xml(domain: str, org: str, rows: list[Row], report_id: str | None = None) -> bytes:
    records = "".join(
        f"""
  <record>
    <row>
      <source_ip>{row.source_ip}</source_ip>
      <count>{row.count}</count>
      <policy_evaluated>
        <disposition>{row.disposition}</disposition>
        <dkim>{row.dkim}</dkim>
        <spf>{row.spf}</spf>
      </policy_evaluated>
    </row>
    <identifiers><header_from>{domain}</header_from></identifiers>
    <auth_results>
      <dkim><domain>{domain}</domain><result>{row.dkim}</result><selector>s1</selector></dkim>
      <spf><domain>{domain}</domain><result>{row.spf}</result></spf>
    </auth_results>
  </record>"""
        for row in rows
    )
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>{org}</org_name>
    <email>noreply-dmarc@{org}</email>
    <report_id>{report_id or uuid.uuid4().hex}</report_id>
    <date_range><begin>1764892800</begin><end>1764979199</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>{domain}</domain><adkim>r</adkim><aspf>r</aspf><p>quarantine</p><pct>100</pct>
  </policy_published>{records}
</feedback>
""".encode()


def tls_json(domain: str, org: str, successful: int, failures: dict[str, int]) -> bytes:
    report = {
        "organization-name": org,
        "date-range": {
            "start-datetime": "2026-12-05T00:00:00Z",
            "end-datetime": "2026-12-05T23:59:59Z",
        },
        "contact-info": f"smtp-tls-reporting@{org}",
        "report-id": f"{uuid.uuid4().hex}@{org}",
        "policies": [
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-string": ["version: STSv1", "mode: testing", f"mx: mail.{domain}"],
                    "policy-domain": domain,
                    "mx-host": [f"mail.{domain}"],
                },
                "summary": {
                    "total-successful-session-count": successful,
                    "total-failure-session-count": sum(failures.values()),
                },
                "failure-details": [
                    {
                        "result-type": result_type,
                        "sending-mta-ip": "192.0.2.10",
                        "receiving-mx-hostname": f"mail.{domain}",
                        "receiving-ip": "198.51.100.25",
                        "failed-session-count": count,
                    }
                    for result_type, count in failures.items()
                ],
            }
        ],
    }
    return json.dumps(report).encode()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zeros_gzipped(size: int) -> bytes:
    """A gzip bomb: `size` bytes of zeros, compressed a megabyte at a time."""
    buffer = io.BytesIO()
    block = bytes(1024 * 1024)
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as packed:
        for _ in range(size // len(block)):
            packed.write(block)
    return buffer.getvalue()


def zeros_zipped(size: int, name: str = "report.xml") -> bytes:
    """A zip bomb: one member of `size` bytes of zeros."""
    buffer = io.BytesIO()
    block = bytes(1024 * 1024)
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open(name, "w", force_zip64=True) as member,
    ):
        for _ in range(size // len(block)):
            member.write(block)
    return buffer.getvalue()


ENTITY_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE feedback [
  <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
  <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
  <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
  <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
  <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
  <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
]>
<feedback><report_metadata><org_name>&f;</org_name></report_metadata></feedback>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE feedback [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<feedback><report_metadata><org_name>&secret;</org_name></report_metadata></feedback>
"""


def report_mail(
    sender: str,
    recipient: str,
    subject: str,
    attachment: bytes,
    filename: str,
    media_type: str,
) -> EmailMessage:
    """A report as a reporter mails it: a short text part and the report attached."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = subject
    mail["Date"] = email.utils.formatdate()
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@{sender.rpartition('@')[2]}>"
    mail.set_content(f"This is an aggregate report: {subject}\n")
    maintype, subtype = media_type.split("/")
    mail.add_attachment(attachment, maintype=maintype, subtype=subtype, filename=filename)
    return mail
