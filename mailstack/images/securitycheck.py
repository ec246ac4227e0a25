"""Debian fixes pending for a stack's images: what `check updates`, `status` and the daily
security run report, with the CVEs each new version fixes.

For each image the stack uses, the packages it has (its label) are compared with the plan a
build would get now (packageplan.resolve, against the configured mirrors). Each pending
version's Debian changelog is read from the new .deb itself, downloaded from the same mirror
in a scratch container: nothing else is contacted. The last report is kept in
`.mailstack/security.json` (this module is its one reader and writer) for `status`.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mailstack.adapters.docker import DOCKER
from mailstack.errors import EXIT_OK, EXIT_SECURITY_PENDING, MailstackError
from mailstack.images import builder, imagerefs, packageplan
from mailstack.stack.stackdir import atomic_write

STATE_FILE = "security.json"


@dataclass(frozen=True)
class PendingFix:
    """One package of one image with a newer version in the configured suites."""

    package: str
    installed: str  # "" for a package the new build brings in
    candidate: str
    releases: tuple[str, ...]
    security: bool
    cves: tuple[str, ...] = ()
    published: str = ""  # ISO date of the newest changelog entry ("" when unknown)


@dataclass(frozen=True)
class ImageUpdates:
    image: str
    reference: str
    services: tuple[str, ...]  # the services that run it ("" for one-shot jobs)
    pending: tuple[PendingFix, ...]

    @property
    def security(self) -> tuple[PendingFix, ...]:
        return tuple(fix for fix in self.pending if fix.security)


@dataclass(frozen=True)
class UpdatesReport:
    checked: str  # ISO time of the check
    images: tuple[ImageUpdates, ...]
    not_built: tuple[str, ...] = ()

    @property
    def security_images(self) -> tuple[str, ...]:
        return tuple(item.image for item in self.images if item.security)

    @property
    def security_fixes(self) -> int:
        return sum(len(item.security) for item in self.images)

    @property
    def cves(self) -> tuple[str, ...]:
        found = {cve for item in self.images for fix in item.security for cve in fix.cves}
        return tuple(sorted(found))

    def oldest_security_fix(self) -> str:
        """ISO date of the oldest pending security fix ("" when none has a date)."""
        dates = [fix.published for item in self.images for fix in item.security if fix.published]
        return min(dates) if dates else ""

    @property
    def exit_code(self) -> int:
        return EXIT_SECURITY_PENDING if self.security_fixes else EXIT_OK

    def digest(self) -> str:
        """What is pending (images, packages, versions): a notice is sent once per change."""
        lines = sorted(
            f"{item.image} {fix.package} {fix.candidate}"
            for item in self.images
            for fix in item.security
        )
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def __str__(self) -> str:
        lines: list[str] = []
        for item in self.images:
            if not item.pending:
                continue
            runs = f" ({', '.join(item.services)})" if item.services else ""
            lines.append(
                f"{item.image}{runs}: {len(item.pending)} package(s) pending, "
                f"{len(item.security)} with security fixes"
            )
            for fix in item.pending:
                lines.append("  " + fix_line(fix))
        if not lines:
            lines.append("every image is current with the configured Debian suites")
        for name in self.not_built:
            lines.append(f"{name}: not built yet (`mailstack build`)")
        lines.append(summary_line(self))
        return "\n".join(lines)


def fix_line(fix: PendingFix) -> str:
    version = f"{fix.installed or '(new)'} -> {fix.candidate}"
    source = f" [{', '.join(fix.releases)}]" if fix.releases else ""
    cves = f" fixes {', '.join(fix.cves)}" if fix.cves else ""
    mark = "security " if fix.security else ""
    return f"{mark}{fix.package} {version}{source}{cves}"


def summary_line(report: UpdatesReport, now: datetime.datetime | None = None) -> str:
    """One line for `status` and the end of `check updates`."""
    if not report.security_fixes:
        others = sum(len(item.pending) for item in report.images)
        tail = f"; {others} other update(s) come with the next `mailstack update`" if others else ""
        return f"security: no fixes pending (checked {_ago(report.checked, now)}){tail}"
    oldest = report.oldest_security_fix()
    age = f", the oldest published {_ago(oldest, now)}" if oldest else ""
    return (
        f"security: {report.security_fixes} fix(es) pending in "
        f"{', '.join(report.security_images)}{age} (checked {_ago(report.checked, now)}); "
        "run `mailstack update --security`"
    )


# --- the check -------------------------------------------------------------------------------


def check(
    root: Path,
    references: Mapping[str, str],
    services_by_image: Mapping[str, Sequence[str]],
    *,
    apt_sources: Path | None,
    now: datetime.datetime | None = None,
) -> tuple[UpdatesReport, dict[str, packageplan.Plan]]:
    """Pending fixes of each recorded image (and the plans that would bring them); the report
    is kept for `status`."""
    built = {name: ref for name, ref in references.items() if DOCKER.has_image(ref)}
    layer = builder.ensure_base_layer(apt_sources)
    plans = builder.resolve_plans(layer, sorted(built))
    pending_by_image = {
        name: packageplan.pending_changes(builder.installed_packages(ref), plans[name])
        for name, ref in built.items()
    }
    specs = sorted(
        {f"{c.name}={c.candidate}" for changes in pending_by_image.values() for c in changes}
    )
    changelogs = packageplan.changelogs(layer, specs)
    report = UpdatesReport(
        checked=(now or _now()).isoformat(timespec="seconds"),
        images=tuple(
            ImageUpdates(
                name,
                built[name],
                tuple(services_by_image.get(name, ())),
                tuple(_fix(change, changelogs) for change in pending_by_image[name]),
            )
            for name in sorted(built)
        ),
        not_built=tuple(sorted(set(references) - set(built))),
    )
    save(root, report)
    return report, plans


def _fix(change: packageplan.PackageChange, changelogs: Mapping[str, str]) -> PendingFix:
    text = changelogs.get(f"{change.name}={change.candidate}", "")
    entries = packageplan.entries_since(packageplan.parse_changelog(text), change.installed)
    cves = tuple(dict.fromkeys(cve for entry in entries for cve in entry.cves))
    return PendingFix(
        change.name,
        change.installed,
        change.candidate,
        change.releases,
        change.security or bool(cves and change.installed),
        cves,
        _iso_date(entries[0].date) if entries else "",
    )


def _iso_date(rfc2822: str) -> str:
    try:
        return email.utils.parsedate_to_datetime(rfc2822).date().isoformat()
    except (TypeError, ValueError):
        return ""


# --- the state file --------------------------------------------------------------------------


@dataclass
class SecurityState:
    """`.mailstack/security.json`: the last report and the last notice mailed."""

    report: UpdatesReport | None = None
    notified_digest: str = ""
    last_run: dict[str, str] = field(default_factory=dict)  # the daily run's outcome


def load(root: Path) -> SecurityState:
    path = root / ".mailstack" / STATE_FILE
    if not path.is_file():
        return SecurityState()
    try:
        data = json.loads(path.read_text())
        report = data.get("report")
        return SecurityState(
            _report_from(report) if report else None,
            str(data.get("notified_digest", "")),
            {str(k): str(v) for k, v in (data.get("last_run") or {}).items()},
        )
    except (ValueError, TypeError, KeyError) as e:
        raise MailstackError(
            f"{path} is damaged ({e})", hint="delete it; `mailstack check updates` writes it anew"
        ) from None


def store(root: Path, state: SecurityState) -> None:
    data: dict[str, Any] = {
        "report": asdict(state.report) if state.report else None,
        "notified_digest": state.notified_digest,
        "last_run": state.last_run,
    }
    path = root / ".mailstack" / STATE_FILE
    atomic_write(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), 0o600)


def save(root: Path, report: UpdatesReport) -> None:
    state = load(root)
    state.report = report
    store(root, state)


def _report_from(data: Mapping[str, Any]) -> UpdatesReport:
    return UpdatesReport(
        checked=str(data["checked"]),
        images=tuple(
            ImageUpdates(
                str(item["image"]),
                str(item["reference"]),
                tuple(item["services"]),
                tuple(_fix_from(fix) for fix in item["pending"]),
            )
            for item in data["images"]
        ),
        not_built=tuple(data.get("not_built", ())),
    )


def _fix_from(data: Mapping[str, Any]) -> PendingFix:
    return PendingFix(
        str(data["package"]),
        str(data["installed"]),
        str(data["candidate"]),
        tuple(data["releases"]),
        bool(data["security"]),
        tuple(data["cves"]),
        str(data.get("published", "")),
    )


# --- the notice ------------------------------------------------------------------------------


def notice(report: UpdatesReport, hostname: str, *, applied: bool = False) -> tuple[str, str]:
    """(subject, body) of the mail to the postmaster."""
    if applied:
        subject = (
            f"[mailstack] {hostname}: {report.security_fixes} security fix(es) applied to "
            f"{', '.join(report.security_images)}"
        )
        opening = "mailstack applied these Debian security fixes (update.security: auto):"
        closing = "Nothing is left to do. `mailstack status` shows the stack."
    else:
        subject = (
            f"[mailstack] {hostname}: {report.security_fixes} security fix(es) pending for "
            f"{', '.join(report.security_images)}"
        )
        opening = "Debian has published security fixes for packages in this stack's images:"
        closing = (
            "To apply them (health-gated, one service at a time, rolled back on failure), run "
            "on the host:\n\n    mailstack update --security\n"
        )
    body = [opening, ""]
    for item in report.images:
        if not item.security:
            continue
        runs = f" (runs {', '.join(item.services)})" if item.services else ""
        body.append(f"{item.image}{runs}:")
        body += [f"  {fix_line(fix)}" for fix in item.security]
        body.append("")
    if report.cves:
        body += ["CVEs: " + ", ".join(report.cves), ""]
    body.append(closing)
    return subject, "\n".join(body) + "\n"


def in_window(window: str, now: datetime.time) -> bool:
    """Whether a local time is inside HH:MM-HH:MM (a window may cross midnight)."""
    start_text, _, end_text = window.partition("-")
    start = datetime.time.fromisoformat(start_text)
    end = datetime.time.fromisoformat(end_text)
    if start < end:
        return start <= now < end
    return now >= start or now < end


def services_of(service_images: Mapping[str, str]) -> dict[str, list[str]]:
    """{image: [services]} from {service: reference} (compose.yaml)."""
    found: dict[str, list[str]] = {}
    for service, reference in sorted(service_images.items()):
        found.setdefault(imagerefs.image_name(reference), []).append(service)
    return found


def _ago(iso: str, now: datetime.datetime | None = None) -> str:
    try:
        moment = datetime.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    seconds = ((now or _now()) - moment).total_seconds()
    if seconds < 3600:
        return f"{max(0, int(seconds // 60))} min ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
