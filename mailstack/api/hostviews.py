"""The backups and DNS pages' and routes' operations (issue 16), free of any web framework:
they read the host reports (runtime.hostreports: the host writes them, `mailstack jobs
run`) and queue the host jobs those pages ask for (runtime.jobqueue).

- Backups (GET /api/v1/backups, /admin/backups): server-wide, administrators only.
- DNS (GET /api/v1/domains/{domain}/dns, /admin/dns?domain=D): a domain's own report
  (topic dns:<domain>): the records to publish, the DKIM keys and what `check dns` found;
  /admin/dns: the overview (the dns report, their index), each domain's verdict and counts
  and the server's own records. A domain administrator gets its domains only (the
  server's records, which serve every domain, are administrators'), and naming another
  domain is refused with the same line whether it exists or not.
- A DKIM key rotation (POST /api/v1/domains/{domain}/dkim/rotate, the DNS page's button):
  a dkim.rotate host job for a domain the caller manages; the host does it as `mailstack
  dkim rotate DOMAIN` does, then remakes that domain's report.
- "Refresh now": a report.refresh job (api.reportview.refresh, every page's); the DNS
  page's names a domain (refresh_dns) for that domain's report.
- A report's age and error: api.reportview, as on every page.

Loaded by the admin service on Debian's own Python: no pydantic, typer or rich.
"""

from __future__ import annotations

from typing import Any

from mailstack.accounts import directory, names
from mailstack.adapters.psql import Executor
from mailstack.api import reportview
from mailstack.api.operations import checked, refusals
from mailstack.errors import NotFound
from mailstack.identity.principal import ADMIN, Principal
from mailstack.runtime import hostreports, jobqueue


def report_state(report: hostreports.HostReport | None, topic: str) -> dict[str, Any]:
    """When a report was made and how old it is ("as of HH:MM:SS UTC, N s ago", or that it
    is not made yet), and the error the host published instead of it, if any."""
    shown = reportview.view(report, topic)
    return {
        "taken": shown.taken,
        "age_seconds": shown.age_seconds,
        "as_of": shown.as_of or reportview.NOT_YET,
        "error": (shown.error or "") if report is not None else "",
    }


def backups(executor: Executor, who: Principal) -> dict[str, Any]:
    """The backups report (administrators only): snapshots, their count, the last verify."""
    with refusals():
        who.require_admin()
        report = hostreports.read(executor, hostreports.BACKUPS)
    body = report.body if report is not None and isinstance(report.body, dict) else {}
    return {
        "report": report_state(report, hostreports.BACKUPS),
        "target": body.get("target"),
        "repository": body.get("repository"),
        "count": body.get("count", 0),
        "left_out": body.get("left_out", 0),
        "snapshots": body.get("snapshots", []),
        "last_verify": body.get("last_verify"),
    }


def dns(executor: Executor, who: Principal, domain: str | None = None) -> dict[str, Any]:
    """The DNS overview (the dns report, the index: each domain's verdict and counts) cut to
    what the caller manages; or, with a domain named, that domain's own report whole."""
    only = checked("DOMAIN", names.domain, domain) if domain else None
    if only is not None:
        return _one_domain(executor, who, only)
    with refusals():
        report = hostreports.read(executor, hostreports.DNS)
    body = report.body if report is not None and isinstance(report.body, dict) else {}
    lines = [line for line in body.get("domains", []) if isinstance(line, dict)]
    visible = set(who.visible(line.get("domain", "") for line in lines))
    return {
        "report": report_state(report, hostreports.DNS),
        "hostname": body.get("hostname"),
        "resolver": body.get("resolver"),
        "server": body.get("server") if who.role == ADMIN else None,
        "index": [line for line in lines if line.get("domain") in visible],
        "domains": [],
        "left_out": list(who.visible(body.get("left_out", []))),
    }


def _one_domain(executor: Executor, who: Principal, domain: str) -> dict[str, Any]:
    with refusals():
        who.require_domain(domain)
        topic = hostreports.domain_dns_topic(domain)
        report = hostreports.read(executor, topic)
    body = report.body if report is not None and isinstance(report.body, dict) else {}
    return {
        "report": report_state(report, topic),
        "hostname": body.get("hostname"),
        "resolver": body.get("resolver"),
        "server": None,
        "index": [],
        "domains": [body] if body.get("domain") == domain else [],
        "left_out": [],
    }


def domain_dns(executor: Executor, who: Principal, domain: str) -> dict[str, Any]:
    """GET /api/v1/domains/{domain}/dns: the domain's own DNS report (topic dns:<domain>);
    404 when there is none (not a mail domain, added since the last run, or not made yet)."""
    found = dns(executor, who, domain)
    if not found["domains"]:
        state = found["report"]
        why = state["error"] or state["as_of"]
        with refusals():
            raise NotFound(f"the DNS report has no domain {domain.strip().lower()} ({why})")
    entry = {key: value for key, value in found["domains"][0].items() if key in _DOMAIN_KEYS}
    return {"report": found["report"], **entry}


# What a domain's report holds beside the server's name and resolver (the API's DomainDns).
_DOMAIN_KEYS = ("domain", "records", "keys", "checks", "unchecked", "verdict")


def rotate_dkim(executor: Executor, who: Principal, domain: str) -> dict[str, Any]:
    """Queue a dkim.rotate host job for a hosted domain the caller manages."""
    target = checked("DOMAIN", names.domain, domain)
    with refusals():
        who.require_domain(target)
        if target not in {found.name for found in directory.list_domains(executor)}:
            raise NotFound(f"domain {target} does not exist")
        job = jobqueue.queue(executor, jobqueue.ROTATE_DKIM, target)
    return {"domain": target, "job": job, "note": reportview.QUEUED.format(job=job)}


def refresh_dns(executor: Executor, who: Principal, domain: str | None = None) -> dict[str, Any]:
    """ "Refresh now" of the DNS page: the overview, or the named domain's report only."""
    if not domain:
        return reportview.refresh(executor, who, hostreports.DNS)
    target = checked("DOMAIN", names.domain, domain)
    with refusals():
        topic = hostreports.domain_dns_topic(target)
    return reportview.refresh(executor, who, topic)
