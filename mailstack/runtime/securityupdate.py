"""`mailstack update --security`: Debian's security fixes rolled out through the update path.

Only the images with a pending security fix are rebuilt (each takes every pending update of
its packages, as a build always does); everything else keeps its image and keeps running.
The path is `mailstack update`'s: preflight, a safety snapshot, the build while the old stack
serves, one service at a time gated on health (Postfix last), a real 587 -> 993 round trip,
and a rollback to the previous images on any failure. No new mailstack release is needed.

`--unattended` is what the daily timer runs: it follows update.security (auto: apply inside
the window and mail the postmaster what was done; notify: mail what is pending, once per
change; off: nothing) and records its outcome for `status`.
"""

from __future__ import annotations

import datetime
import time
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

from mailstack import __version__
from mailstack.errors import MailstackError, UsageError
from mailstack.images import builder, imagerefs, packageplan, securitycheck
from mailstack.images.securitycheck import UpdatesReport
from mailstack.runtime import notify
from mailstack.runtime.update import (
    HEALTH_TIMEOUT,
    Progress,
    UpdateRecords,
    UpdateRun,
    UpdateState,
    preflight,
    roll_back_interrupted,
)
from mailstack.stack.stackdir import Stack, StackDir


@dataclass(frozen=True)
class SecurityUpdateResult:
    report: UpdatesReport
    images: tuple[str, ...]
    recreated: tuple[str, ...]
    backup: str | None
    probe: str | None
    seconds: float
    rolled_back_first: str | None = None

    def __str__(self) -> str:
        lines = [self.rolled_back_first] if self.rolled_back_first else []
        if not self.images:
            lines.append("no security fixes pending: nothing to do")
            lines.append(securitycheck.summary_line(self.report))
            return "\n".join(lines)
        lines.append(
            f"applied {self.report.security_fixes} security fix(es) to "
            f"{', '.join(self.images)} in {self.seconds:.0f} s"
        )
        if self.report.cves:
            lines.append("CVEs fixed: " + ", ".join(self.report.cves))
        lines.append(
            "recreated: " + (", ".join(self.recreated) if self.recreated else "no service")
        )
        if self.backup:
            lines.append(f"safety snapshot: {self.backup}")
        if self.probe:
            lines.append(self.probe)
        return "\n".join(lines)


def check(stack: Stack) -> tuple[UpdatesReport, dict[str, packageplan.Plan]]:
    """`mailstack check updates`: the pending fixes of every image the stack records."""
    references = imagerefs.read(stack.dir.root)
    wanted = builder.wanted(stack)
    if not any(name in references for name in wanted):
        raise UsageError(
            "no image of this stack is built yet: nothing to check",
            hint="`mailstack build` (or `mailstack up`) first",
        )
    return securitycheck.check(
        stack.dir.root,
        {name: references[name] for name in wanted if name in references},
        securitycheck.services_of(stack.compose.images()),
        apt_sources=stack.config.images.apt_sources_path,
    )


def security_update(
    root: Path,
    *,
    skip_backup: bool = False,
    progress: Progress | None = None,
    health_timeout: float = HEALTH_TIMEOUT,
) -> SecurityUpdateResult:
    started = time.monotonic()
    records = UpdateRecords(StackDir(root).require())
    rolled_back = roll_back_interrupted(root, records, progress, health_timeout)
    current = Stack.load(root)
    require_current_release(current)
    if current.config.images.registry:
        raise UsageError(
            "mailstack.yaml: images.registry is set: images are pulled, so Debian's fixes "
            "arrive with the registry's new images",
            hint="`mailstack check updates` still lists what is pending; pull new images with "
            "`mailstack build` once the registry has them",
        )
    _say(progress, "preflight: health, conflicts, disk, Docker and Compose")
    preflight(current)
    _say(progress, "checking the configured Debian suites for security fixes")
    report, plans = check(current)
    names = report.security_images
    if not names:
        return SecurityUpdateResult(report, (), (), None, None, 0.0, rolled_back)
    state = UpdateState(__version__, __version__, "snapshot", _now(), kind="security")
    run = UpdateRun(root, records, state, progress, health_timeout)
    records.begin(state)
    try:
        backup = None
        if not skip_backup:
            backup = run.safety_backup(f"pre-security-{_now()[:10]}")
        run.build_images(list(names), {name: plans[name] for name in names})
        run.recreate(set())
        probe_line = run.verify()
    except BaseException as failure:  # Ctrl-C included: never leave a half-updated stack
        raise run.roll_back(failure) from None
    records.clear()
    return SecurityUpdateResult(
        report,
        names,
        tuple(state.recreated),
        backup,
        probe_line,
        time.monotonic() - started,
        rolled_back,
    )


def require_current_release(stack: Stack) -> None:
    rendered = stack.dir.manifest().version or "0.0.0"
    if rendered != __version__:
        raise UsageError(
            f"the stack was rendered by mailstack {rendered} and this is {__version__}: a "
            "security update applies fixes to the running release only",
            hint="run `mailstack update` (it moves to this version and takes every fix)",
        )


# --- the daily run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UnattendedResult:
    mode: str
    outcome: str  # what happened, one line for the journal and `status`
    mailed: bool = False

    def __str__(self) -> str:
        return self.outcome + (" (the postmaster was mailed)" if self.mailed else "")


def unattended(
    root: Path, *, now: datetime.datetime | None = None, progress: Progress | None = None
) -> UnattendedResult:
    """What the daily timer runs: update.security decides (auto, notify or off)."""
    stack = Stack.load(root)
    config = stack.config
    mode = config.update.security
    moment = now or datetime.datetime.now(datetime.UTC)
    local = moment.astimezone(zoneinfo.ZoneInfo(config.timezone))
    if mode == "off":
        return _record(root, UnattendedResult(mode, "update.security is off: nothing done"))
    if mode == "auto" and not securitycheck.in_window(config.update.window, local.time()):
        return _record(
            root,
            UnattendedResult(
                mode,
                f"outside the maintenance window {config.update.window} ({config.timezone}, now "
                f"{local:%H:%M}): nothing done",
            ),
        )
    if mode == "notify" or stack.dir.manifest().version != __version__:
        return _record(root, _notify(stack, progress))
    try:
        result = security_update(root, progress=progress)
    except MailstackError as failure:
        mailed = _mail_failure(stack, failure)
        _record(root, UnattendedResult(mode, f"failed: {failure.message}", mailed))
        raise
    if not result.images:
        return _record(root, UnattendedResult(mode, str(result).splitlines()[-1]))
    subject, body = securitycheck.notice(result.report, config.hostname, applied=True)
    mailed = notify.mail_postmaster(stack, subject, body + "\n" + str(result) + "\n")
    return _record(root, UnattendedResult(mode, str(result).splitlines()[0], mailed))


def _notify(stack: Stack, progress: Progress | None) -> UnattendedResult:
    _say(progress, "checking the configured Debian suites for security fixes")
    report, _ = check(stack)
    state = securitycheck.load(stack.dir.root)
    line = securitycheck.summary_line(report)
    if not report.security_fixes or state.notified_digest == report.digest():
        return UnattendedResult("notify", line)
    subject, body = securitycheck.notice(report, stack.config.hostname)
    if stack.dir.manifest().version != __version__:
        body += (
            f"\nThe stack runs mailstack {stack.dir.manifest().version}; this host has "
            f"{__version__}: run `mailstack update` instead (it takes every fix).\n"
        )
    mailed = notify.mail_postmaster(stack, subject, body)
    if mailed:
        state = securitycheck.load(stack.dir.root)
        state.notified_digest = report.digest()
        securitycheck.store(stack.dir.root, state)
    return UnattendedResult("notify", line, mailed)


def _mail_failure(stack: Stack, failure: MailstackError) -> bool:
    subject = f"[mailstack] {stack.config.hostname}: the unattended security update failed"
    body = (
        "The unattended security update (update.security: auto) failed:\n\n"
        f"  {failure.message}\n\n"
        "Nothing was left half-done: a failure after the build rolls the stack back to the "
        "images it ran before. See `mailstack status` and `mailstack logs SERVICE`, then run "
        "`mailstack update --security` once the cause is fixed.\n"
    )
    return notify.mail_postmaster(stack, subject, body)


def _record(root: Path, result: UnattendedResult) -> UnattendedResult:
    state = securitycheck.load(root)
    state.last_run = {"at": _now(), "mode": result.mode, "outcome": str(result)}
    securitycheck.store(root, state)
    return result


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _say(progress: Progress | None, message: str) -> None:
    if progress:
        progress(message)
