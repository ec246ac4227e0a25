"""DMARC and TLS-RPT aggregate reports on the running stack: reports mailed from outside to
a domain's postmaster@ (an alias to the report mailbox) through port 25, read back by
`mailstack report dmarc|tls --json` through doveadm; a zip bomb and an XML entity bomb are
each rejected with one line while the others are counted, and the mailbox is left as it
was (nothing marked read)."""

from __future__ import annotations

import json
import smtplib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest

from tests.aggregatesamples import (
    ENTITY_BOMB,
    Row,
    dmarc_xml,
    gzipped,
    report_mail,
    tls_json,
    zeros_zipped,
    zipped,
)
from tests.e2e.conftest import PORTS, RunningStack
from tests.e2e.mail import imaps

pytestmark = pytest.mark.e2e

PASSWORD = "Correct-horse-42-battery"


@dataclass(frozen=True)
class ReportDomain:
    domain: str
    mailbox: str  # where postmaster@domain (the default rua) delivers
    subjects: dict[str, str]  # what -> subject of the mail that brought it


def _deliver(mail: EmailMessage) -> None:
    """As an outside reporter's server: port 25, no authentication."""
    sender = str(mail["From"])
    with smtplib.SMTP("127.0.0.1", PORTS["smtp"], timeout=60) as smtp:
        smtp.ehlo(f"mx.{sender.rpartition('@')[2]}")
        assert smtp.sendmail(sender, [str(mail["To"])], mail.as_bytes()) == {}


def _folders(stack: RunningStack, mailbox: str) -> dict[str, tuple[int, int]]:
    """(messages, unseen) in INBOX and Junk."""
    found: dict[str, tuple[int, int]] = {}
    with imaps(stack) as imap:
        imap.login(mailbox, PASSWORD)
        for folder in ("INBOX", "Junk"):
            status, data = imap.status(folder, "(MESSAGES UNSEEN)")
            if status != "OK":
                found[folder] = (0, 0)
                continue
            words = data[0].decode().split("(")[1].rstrip(")").split()
            values = dict(zip(words[::2], words[1::2], strict=True))
            found[folder] = (int(values["MESSAGES"]), int(values["UNSEEN"]))
    return found


@pytest.fixture(scope="module")
def reports(stack: RunningStack) -> Iterator[ReportDomain]:
    tag = uuid.uuid4().hex[:8]
    domain = f"reports-{tag}.test"
    mailbox = f"dmarc-{tag}@{domain}"
    stack.cli("domain", "add", domain)
    stack.cli("mailbox", "add", mailbox, "--password-stdin", stdin=PASSWORD + "\n")
    stack.cli("alias", "add", f"postmaster@{domain}", mailbox)
    rua = f"postmaster@{domain}"
    google = dmarc_xml(
        domain,
        "google.example",
        [Row("192.0.2.1", 12), Row("203.0.113.9", 3, "fail", "fail", "quarantine")],
    )
    yahoo = dmarc_xml(domain, "yahoo.example", [Row("198.51.100.7", 5, spf="fail")])
    tls = tls_json(
        domain, "microsoft.example", 40, {"certificate-expired": 2, "starttls-not-supported": 1}
    )
    sent = {
        "dmarc gzip": (gzipped(google), f"google.example!{domain}!1!2.xml.gz", "application/gzip"),
        "dmarc zip": (
            zipped({"report.xml": yahoo}),
            f"yahoo.example!{domain}!1!2.zip",
            "application/zip",
        ),
        "tls gzip": (
            gzipped(tls),
            f"microsoft.example!{domain}!1!2.json.gz",
            "application/tlsrpt+gzip",
        ),
        "zip bomb": (zeros_zipped(200 * 1024 * 1024), "bomb.zip", "application/zip"),
        "entity bomb": (ENTITY_BOMB, "laughs.xml", "text/xml"),
    }
    subjects: dict[str, str] = {}
    for what, (attachment, filename, media_type) in sent.items():
        reporter = what.split()[0] + "-reports.example"
        subjects[what] = f"Report Domain: {domain} Submitter: {reporter} ({what} {tag})"
        _deliver(
            report_mail(
                f"noreply@{reporter}", rua, subjects[what], attachment, filename, media_type
            )
        )
    deadline = time.monotonic() + 60
    while sum(count for count, _ in _folders(stack, mailbox).values()) < len(sent):
        assert time.monotonic() < deadline, f"reports not delivered: {_folders(stack, mailbox)}"
        time.sleep(1)
    yield ReportDomain(domain, mailbox, subjects)


def _report(stack: RunningStack, kind: str) -> dict[str, Any]:
    result = stack.cli("report", kind, "--json", "--days", "2")
    return dict(json.loads(result.stdout))


def _mine(rejected: list[dict[str, str]], reports: ReportDomain) -> dict[str, str]:
    """The rejections of this module's messages, by what was sent."""
    found: dict[str, str] = {}
    for entry in rejected:
        for what, subject in reports.subjects.items():
            if subject in entry["message"]:
                assert what not in found, f"{what} rejected twice: {rejected}"
                found[what] = entry["reason"]
    return found


def test_dmarc_reports_counted_and_bombs_rejected_one_line_each(
    stack: RunningStack, reports: ReportDomain
) -> None:
    before = _folders(stack, reports.mailbox)
    summary = _report(stack, "dmarc")
    assert reports.mailbox in summary["mailboxes"]
    (domain,) = [d for d in summary["totals"]["domains"] if d["domain"] == reports.domain]
    assert domain["messages"] == 20
    sources = {s["source_ip"]: s for s in domain["sources"]}
    assert set(sources) == {"192.0.2.1", "203.0.113.9", "198.51.100.7"}
    assert sources["192.0.2.1"] | {"reporters": None} == {
        "source_ip": "192.0.2.1",
        "messages": 12,
        "dkim_pass": 12,
        "dkim_fail": 0,
        "spf_pass": 12,
        "spf_fail": 0,
        "dispositions": {"none": 12},
        "reporters": None,
    }
    assert sources["192.0.2.1"]["reporters"] == ["google.example"]
    failing = sources["203.0.113.9"]
    assert (failing["dkim_fail"], failing["spf_fail"]) == (3, 3)
    assert failing["dispositions"] == {"quarantine": 3}
    zipped_source = sources["198.51.100.7"]
    assert (zipped_source["dkim_pass"], zipped_source["spf_fail"]) == (5, 5)
    assert zipped_source["reporters"] == ["yahoo.example"]
    rejected = _mine(summary["rejected"], reports)
    assert set(rejected) == {"zip bomb", "entity bomb"}, summary["rejected"]
    assert "decompression bomb" in rejected["zip bomb"]
    assert "DOCTYPE" in rejected["entity bomb"]
    # Reading changed nothing: every message is where it was, still unread.
    assert _folders(stack, reports.mailbox) == before
    assert all(unseen == count for count, unseen in before.values()), before


def test_tls_reports_counted_per_policy_domain(stack: RunningStack, reports: ReportDomain) -> None:
    summary = _report(stack, "tls")
    (domain,) = [d for d in summary["totals"]["domains"] if d["policy_domain"] == reports.domain]
    assert (domain["successful"], domain["failed"]) == (40, 3)
    assert domain["failure_types"] == {"certificate-expired": 2, "starttls-not-supported": 1}
    assert domain["receiving_mx"] == [f"mail.{reports.domain}"]
    assert domain["reporters"] == ["microsoft.example"]
    assert _mine(summary["rejected"], reports) == {}  # the bombs are DMARC-shaped


def test_human_tables_and_bad_days(stack: RunningStack, reports: ReportDomain) -> None:
    table = stack.cli("report", "dmarc", "--days", "2")
    assert f"{reports.domain}: DMARC" in table.stdout and "203.0.113.9" in table.stdout
    assert table.stderr.count("rejected: ") >= 2
    assert reports.subjects["zip bomb"] in table.stderr
    tls = stack.cli("report", "tls", "--days", "2")
    assert (
        f"{reports.domain}: failed sessions by type: certificate-expired 2, "
        "starttls-not-supported 1" in tls.stdout
    )
    refused = stack.cli("report", "tls", "--days", "0", check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: --days: '0' is not a whole number of days from 1 to 366"
    ]
