"""`check`: validate with the daemons' own checkers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from mailstack.cli import output
from mailstack.cli.dns import DomainArgument, domain_argument
from mailstack.cli.options import JsonOption, ResolverOption, StackDirOption, resolver_address
from mailstack.errors import EXIT_FAILED, UsageError
from mailstack.mailauth import dnscheck
from mailstack.runtime import checks, healthprobes, securityupdate
from mailstack.runtime.health import HealthReport
from mailstack.stack.stackdir import Stack
from mailstack.tls import chains, tlscheck
from mailstack.verdict import Verdict

check_app = typer.Typer(help="Validate the stack.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(check_app, name="check")


@check_app.command("config")
@output.guarded
def check_config(
    service: Annotated[str | None, typer.Argument(help="One service (default: all).")] = None,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Run each daemon's own checker on the rendered config, inside its image."""
    stack = Stack.load(directory)
    if service is not None and service not in checks.CHECKED_SERVICES:
        raise UsageError(
            f"service: {service!r} has no config checker",
            hint=f"services: {', '.join(checks.CHECKED_SERVICES)}",
        )
    results = checks.check_config(stack.compose, (service,) if service else checks.CHECKED_SERVICES)
    if as_json:
        output.as_json(results)
    else:
        for result in results:
            if result.ok:
                output.info(f"ok    {result.service}")
            else:
                where = f" at {result.location}" if result.location else ""
                last = result.output.strip().splitlines()[-3:] if result.output else []
                output.error(f"{result.service}: configuration rejected{where}", "\n".join(last))
    if not all(result.ok for result in results):
        raise typer.Exit(EXIT_FAILED)


@check_app.command("updates")
@output.guarded
def check_updates(directory: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """Debian updates pending for each image: installed -> candidate, the suite, and the CVEs
    each new version fixes (from its own changelog). Exit 0: no security fix pending;
    4: security fixes pending (`mailstack update --security` applies them); 1: the check
    failed."""
    stack = Stack.load(directory)
    report, _ = securityupdate.check(stack)
    if as_json:
        output.as_json({**output.plain(report), "security_fixes": report.security_fixes,
                        "cves": list(report.cves), "exit_code": report.exit_code})  # fmt: skip
    else:
        output.info(str(report))
    raise typer.Exit(report.exit_code)


@check_app.command("dns")
@output.guarded
def check_dns(
    domain: DomainArgument = None,
    resolver: ResolverOption = None,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Query every record `dns records` lists and say what is missing or wrong."""
    address = resolver_address(resolver)
    stack = Stack.load(directory)
    report = dnscheck.check_stack(stack, domain_argument(domain), address)
    if as_json:
        output.as_json({"resolver": report.resolver, "ok": report.ok, "rows": report.rows})
    else:
        output.dns_check_table(report)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


@check_app.command("tls")
@output.guarded
def check_tls(
    domain: DomainArgument = None,
    directory: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Connect to every TLS endpoint as a client would and judge what it serves.

    For 25, 465, 587, 143, 993, 4190, 443 and POP3's 995 and 110 when on (and with SNI every
    HTTPS name of the mail domains: mta-sts., autoconfig., autodiscover.): the chain and its
    root, the names the certificate covers, days to expiry (a warning under 21), key and
    signature, OCSP/CRL URLs, and the TLS versions accepted (only 1.2 and 1.3 may be). A failed
    ACME renewal (.mailstack/acme.json) is a failure too.

    Exit codes: 0 every endpoint good, with a publicly trusted chain; 1 a failure; 3 all
    good, but the chain ends at the stack's own CA (tls.mode selfsigned: fine offline,
    trusted by no other server).
    """
    stack = Stack.load(directory)
    report = tlscheck.check_stack(stack, domain_argument(domain))
    if as_json:
        output.as_json(
            {
                "ok": report.ok,
                "exit_code": report.exit_code,
                "acme": output.plain(report.acme),
                "findings": output.plain(report.findings),
                "endpoints": [
                    {**output.plain(endpoint), "verdict": endpoint.verdict}
                    for endpoint in report.endpoints
                ],
            }
        )
    else:
        _show_tls_report(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@check_app.command("health")
@output.guarded
def check_health(directory: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """One verdict per item, each failing or warning one with its fix: every service running
    and healthy, and functional (a mail and a webmail database query, a recipient lookup
    through Postfix's maps, a Dovecot userdb lookup, an rspamd scan, a Redis PING, a DNS
    query); a mail round trip (587 -> 993); the mail queue; the last backup and verify; the
    certificate; free space for the volumes and the backups; ClamAV's signatures; the DNS
    check's summary (its hourly report); the images' pending security fixes (the stored
    check); in production, the public addresses on the major DNS blocklists. Each probe is
    bounded: a hung daemon fails in seconds. Thresholds: docs/health.md.

    Exit codes: 0 every item passes (or is exempt, and says why); 1 an item fails; 6 no
    item fails, but one warns.
    """
    stack = Stack.load(directory)
    report = healthprobes.check_health(stack)
    if as_json:
        output.as_json(
            {
                "verdict": report.verdict,
                "exit_code": report.exit_code,
                "seconds": round(report.seconds, 2),
                "items": output.plain(report.items),
            }
        )
    else:
        _show_health_report(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _show_health_report(report: HealthReport) -> None:
    """`check health`: a row per item, then one line per failing or warning item with its fix."""
    table = Table(box=box.SIMPLE, show_header=True)
    for column in ("item", "verdict", "found"):
        table.add_column(column, overflow="fold")
    for item in report.items:
        table.add_row(
            Text(item.name),
            Text(item.verdict, style=output.VERDICT_STYLES[item.verdict]),
            Text(item.detail, style="dim" if item.exempt else ""),
        )
    output.console.print(table)
    for item in report.failing():
        output.info(f"{item.verdict}: {item.name}: {item.detail}: {item.fix}")
    failed = sum(1 for item in report.items if item.verdict == Verdict.FAIL)
    warned = sum(1 for item in report.items if item.verdict == Verdict.WARN)
    output.info(
        f"{len(report.items)} items, {failed} failed, {warned} warned "
        f"({report.seconds:.1f} s): {report.verdict}"
    )


_ANCHORS = {
    chains.ANCHOR_PUBLIC: "a publicly trusted root",
    chains.ANCHOR_OWN_CA: "the stack's own CA (tls.mode selfsigned)",
    chains.ANCHOR_UNTRUSTED: "an untrusted root",
    chains.ANCHOR_INCOMPLETE: "incomplete",
    chains.ANCHOR_BROKEN: "broken",
}


def _show_tls_report(report: tlscheck.TlsCheckReport) -> None:
    """`check tls`: a small table per endpoint, then one line per finding with its fix."""
    for endpoint in report.endpoints:
        how = f"STARTTLS {endpoint.starttls}" if endpoint.starttls else "implicit TLS"
        title = Text(f"{endpoint.name} {endpoint.address}:{endpoint.port} ({how}) ")
        title.append(endpoint.verdict, style=output.VERDICT_STYLES[endpoint.verdict])
        table = Table(title=title, title_justify="left", show_header=False, box=box.SIMPLE)
        table.add_column("check", style="dim")
        table.add_column("found", overflow="fold")
        offered = [version for version, ok in endpoint.protocols.items() if ok]
        refused = [version for version, ok in endpoint.protocols.items() if not ok]
        table.add_row(
            "protocols",
            Text(", ".join(offered) or "none")
            + Text(f" (refused: {', '.join(refused)})" if refused else "", style="dim"),
        )
        leaf, chain = endpoint.leaf, endpoint.chain
        if leaf is not None:
            table.add_row("certificate", Text(f"{leaf.subject}, {leaf.key}, {leaf.signature}"))
            table.add_row("expires", Text(f"{leaf.not_after} ({leaf.days_left} days)"))
            revocation = (
                f"OCSP {', '.join(leaf.ocsp) or 'none'}; CRL {', '.join(leaf.crl) or 'none'}; "
                f"stapled: {'yes' if endpoint.ocsp_stapled else 'no'}"
            )
            table.add_row("revocation", Text(revocation))
        if chain is not None:
            path = " <- ".join(
                certificate.subject + ("" if certificate.served else " (not served)")
                for certificate in chain.certificates
            )
            table.add_row("chain", Text(f"{path}: {_ANCHORS[chain.anchor]}"))
        if endpoint.names:
            table.add_row(
                "names",
                Text(
                    ", ".join(
                        f"{check.name} {'ok' if check.covered else 'MISSING'}"
                        for check in endpoint.names
                    )
                ),
            )
        output.console.print(table)
    if report.acme is not None and report.acme.ok:
        until = (
            f", certificate valid until {report.acme.not_after}" if report.acme.not_after else ""
        )
        output.info(f"ACME: last renewal check {report.acme.checked}: ok{until}")
    findings = report.all_findings()
    for finding in findings:
        output.info(f"{finding.verdict}: {finding.what}: {finding.fix}")
    failed = sum(1 for finding in findings if finding.verdict == Verdict.FAIL)
    count = len(report.endpoints)
    if failed:
        output.info(f"{count} endpoints, {failed} failure{'' if failed == 1 else 's'}")
    elif report.own_ca:
        output.info(
            f"{count} endpoints good; the chain ends at the stack's own CA: other servers "
            "and clients do not trust it (use tls.mode acme, or manual with a public certificate)"
        )
    else:
        output.info(f"{count} endpoints good, publicly trusted")
