"""The services' health and the brute-force bans, as the admin service's pages (/admin/health,
/admin/bans, the dashboard's line) and the REST API (GET /api/v1/health, GET /api/v1/bans,
DELETE /api/v1/bans/{address}) show them, free of any web framework.

The admin service cannot ask Docker or the bans service itself (it has no Docker socket, by
design): it reads the `health` and `bans` host reports that `mailstack jobs run` writes
every minute (runtime.hostreports) and says how old they are (api.reportview, as every
page does); clearing a ban queues a host job (runtime.jobqueue) that the host's next run
does, as "Refresh now" does (reportview.refresh). Both
are server-wide: administrators only (a domain administrator's request is the 403 of
identity.principal). An address to clear is checked by the CLI's own rule
(runtime.bans.client_address) before anything is queued, and again by the job's runner.

Loaded by the admin service on Debian's own Python: no pydantic, typer or rich.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailstack.adapters.psql import Executor
from mailstack.api.operations import refusals
from mailstack.api.reportview import ReportView, view
from mailstack.identity.principal import Principal
from mailstack.runtime import bans, hostreports, jobqueue

CLEAR_NOTE = (
    "queued for the host: `mailstack jobs run` (every minute from its timer) lifts the ban "
    "and forgets the address's failed logins; GET /api/v1/bans shows it gone"
)


def health(executor: Executor, caller: Principal) -> ReportView:
    """The `health` host report (administrators only): every service's state."""
    with refusals():
        caller.require_admin()
        return view(hostreports.read(executor, hostreports.HEALTH), hostreports.HEALTH)


def list_bans(executor: Executor, caller: Principal) -> ReportView:
    """The `bans` host report (administrators only): bans in force and delayed addresses."""
    with refusals():
        caller.require_admin()
        return view(hostreports.read(executor, hostreports.BANS), hostreports.BANS)


def clear_ban(executor: Executor, caller: Principal, address: str) -> dict[str, Any]:
    """DELETE /api/v1/bans/{address} (administrators only): the address by the CLI's rule
    (a hostile one is a 400, nothing queued), then a ban.clear host job (audited: ban.clear,
    the address, "host job #N", by the caller)."""
    with refusals():
        target = bans.client_address(address)  # the CLI's line, whoever asks (as operations)
        caller.require_admin()
        job = jobqueue.queue(executor, jobqueue.CLEAR_BAN, target)
    return {"address": target, "job": job, "note": CLEAR_NOTE}


@dataclass(frozen=True)
class HealthSummary:
    """The dashboard's line about the services."""

    healthy: bool | None  # None: no usable report
    line: str


def health_summary(report: ReportView) -> HealthSummary:
    if report.error:
        return HealthSummary(None, f"Service health is unknown: {report.error}.")
    services = [s for s in report.body.get("services") or () if isinstance(s, dict)]
    failing = [str(s.get("service")) for s in services if not service_healthy(s)]
    when = f" ({report.as_of})"
    if report.body.get("healthy") and not failing:
        return HealthSummary(True, f"All {len(services)} services are healthy{when}.")
    names = ", ".join(failing) or "none running"
    return HealthSummary(
        False, f"{len(failing)} of {len(services)} services need attention: {names}{when}."
    )


def service_healthy(service: dict[str, Any]) -> bool:
    """As `mailstack status` judges one service: running, healthy (or no healthcheck), and
    no failing check."""
    return (
        service.get("state") == "running"
        and service.get("health") in ("healthy", "")
        and not service.get("failing_checks")
    )
