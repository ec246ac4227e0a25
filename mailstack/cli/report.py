"""`report dmarc|tls`: the DMARC and TLS-RPT aggregate reports the stack's rua addresses
received (mailstack.runtime.reportmailbox). Exit 0 when the mailboxes were read, even if
some reports were rejected (each is listed); 2 for a bad --days; 1 when reading failed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.mailauth.aggregate import Rejected
from mailstack.runtime import reportmailbox
from mailstack.runtime.reportmailbox import DmarcSummary, TlsSummary
from mailstack.stack.stackdir import Stack

report_app = typer.Typer(
    help="Aggregate reports received: who sends as each domain (DMARC), TLS failures (TLS-RPT).",
    no_args_is_help=True,
)

DaysOption = Annotated[
    str,
    typer.Option(
        "--days",
        metavar="N",
        help=f"Reports received in the last N days (1 to {reportmailbox.MAX_DAYS}).",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")


@report_app.command("dmarc")
@output.guarded
def report_dmarc(
    days: DaysOption = str(reportmailbox.DEFAULT_DAYS),
    as_json: JsonOption = False,
    directory_: StackDirOption = Path(),
) -> None:
    """DMARC aggregate reports: per domain and source address, messages, aligned DKIM and
    SPF pass/fail, the receivers' dispositions and who reported them."""
    wanted = reportmailbox.report_days(days)
    summary = reportmailbox.dmarc_summary(Stack.load(directory_), wanted)
    output.as_json(summary) if as_json else _show_dmarc(summary)


@report_app.command("tls")
@output.guarded
def report_tls(
    days: DaysOption = str(reportmailbox.DEFAULT_DAYS),
    as_json: JsonOption = False,
    directory_: StackDirOption = Path(),
) -> None:
    """TLS-RPT reports: per policy (receiving) domain, successful and failed sessions, the
    failure types and who reported them."""
    wanted = reportmailbox.report_days(days)
    summary = reportmailbox.tls_summary(Stack.load(directory_), wanted)
    output.as_json(summary) if as_json else _show_tls(summary)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "-"


def _show_dmarc(summary: DmarcSummary) -> None:
    """One table per domain: a row per source address (narrow enough for 80 columns)."""
    totals = summary.totals
    for domain in totals.domains:
        table = Table(
            title=f"{domain.domain}: DMARC, last {summary.days} day(s)",
            caption="DKIM, SPF: aligned pass/fail as the receivers evaluated them",
        )
        table.add_column("source", no_wrap=True)
        for column in ("messages", "DKIM", "SPF"):
            table.add_column(column, justify="right", no_wrap=True)
        table.add_column("disposition", overflow="fold")
        table.add_column("reported by", overflow="fold")
        for source in domain.sources:
            table.add_row(
                Text(source.source_ip),
                str(source.messages),
                f"{source.dkim_pass}/{source.dkim_fail}",
                f"{source.spf_pass}/{source.spf_fail}",
                Text(_counts(source.dispositions)),
                Text(", ".join(source.reporters)),
            )
        output.console.print(table)
    output.info(
        f"{totals.reports} report(s), {totals.messages} message(s): DKIM {totals.dkim_pass} "
        f"pass / {totals.dkim_fail} fail, SPF {totals.spf_pass} pass / {totals.spf_fail} "
        f"fail; disposition {_counts(totals.dispositions)}"
    )
    _show_common(summary.mailboxes, summary.messages_read, summary.rejected, summary.notes)


def _show_tls(summary: TlsSummary) -> None:
    """A row per policy domain; its failures by type on a line of their own below."""
    totals = summary.totals
    table = Table(title=f"TLS-RPT, last {summary.days} day(s)")
    table.add_column("policy domain", no_wrap=True)
    table.add_column("policy", overflow="fold")
    for column in ("successful", "failed"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("reported by", overflow="fold")
    for domain in totals.domains:
        table.add_row(
            Text(domain.policy_domain),
            Text(", ".join(domain.policy_types)),
            str(domain.successful),
            str(domain.failed),
            Text(", ".join(domain.reporters)),
        )
    if totals.domains:
        output.console.print(table)
    for domain in totals.domains:
        if domain.failure_types:
            output.info(
                f"{domain.policy_domain}: failed sessions by type: "
                f"{_counts(domain.failure_types)}; receiving MX "
                f"{', '.join(domain.receiving_mx) or 'not named'}"
            )
    output.info(
        f"{totals.reports} report(s): {totals.successful} successful and {totals.failed} "
        f"failed session(s); failures {_counts(totals.failure_types)}"
    )
    _show_common(summary.mailboxes, summary.messages_read, summary.rejected, summary.notes)


def _show_common(
    mailboxes: tuple[str, ...],
    messages: int,
    rejected: tuple[Rejected, ...],
    notes: tuple[str, ...],
) -> None:
    shown = ", ".join(mailboxes) or "none"
    output.info(f"read {messages} message(s) in {shown}")
    for refused in rejected:
        output.warn(f"rejected: {refused}")
    for note in notes:
        output.info(f"note: {note}")
