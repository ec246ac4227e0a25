"""Debian security fixes reach a running stack: `check updates`, `update --security`, and the
daily run's notify and auto modes, against a signed repository served on this machine that
stands in for Debian's security suite (tests/e2e/aptrepo.py).

The stack builds from the host's Debian sources plus that repository (images.apt_sources).
It first serves nothing newer; then a newer build of postsrsd, which only the postfix image
(run by the postfix and sink services) contains, with a changelog entry naming a CVE; then an
even newer one that breaks the service's healthcheck.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mailstack.images import aptsources
from mailstack.images.imagetags import DEBIAN_IMAGE
from tests.e2e.aptrepo import LocalAptRepository, changelog_entry, download, repack
from tests.e2e.conftest import DOMAIN, HOSTNAME, SLOT, mailstack, side_stack_ports
from tests.e2e.sidestack import PASSWORD, SideStack
from tests.e2e.steady import SteadySender

PROJECT = f"mailstack-e2e-security{SLOT or ''}"
SECURITY_PORTS = side_stack_ports(shift=7, side=2)  # beside the session stack's
SUBNETS = (
    ("172.29.94.0/24", "172.29.95.0/24")
    if SLOT == 0
    else (f"172.28.{2 * SLOT}.0/24", f"172.28.{2 * SLOT + 1}.0/24")
)
PACKAGE = "postsrsd"  # in the postfix image only
CVE = "CVE-2099-0001"
BROKEN_CVE = "CVE-2099-0002"


@dataclass
class SecurityStack(SideStack):
    repository: LocalAptRepository | None = None
    work: Path = Path()  # where repacked packages are made
    original: Path | None = None  # the real .deb from Debian
    fixed_version: str = ""

    def cli(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
        return mailstack(*args, "--dir", str(self.root), check=False, timeout=timeout)

    def installed_version(self, service: str, package: str) -> str:
        return self.compose(
            "exec", "-T", service, "dpkg-query", "-W", "-f", "${Version}", package
        ).stdout.strip()

    def recorded(self) -> dict[str, str]:
        lines = (self.root / ".env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if line.startswith("MAILSTACK_IMAGE_"))

    def set_config(self, **update: str) -> None:
        path = self.root / "mailstack.yaml"
        config = yaml.safe_load(path.read_text())
        config.setdefault("update", {}).update(update)
        path.write_text(yaml.safe_dump(config, sort_keys=False))

    def publish_fix(self, version: str, cve: str, replace: dict[str, bytes] | None = None) -> None:
        assert self.original is not None and self.repository is not None
        entry = changelog_entry(
            PACKAGE,
            version,
            "bookworm-security",
            [f"Fix {cve}: a crafted address crashes the daemon (test fix)."],
            datetime.datetime.now(datetime.UTC),
        )
        fixed = repack(self.original, self.work / version, version, entry, replace)
        self.repository.publish([fixed])


def _host_sources(path: Path) -> Path:
    """The host's Debian sources (release, -updates, -security) as one deb822 file."""
    entries = aptsources.image_sources(aptsources.configured_sources(None))
    keyrings = {keyring: keyring for keyring in aptsources.keyring_files(entries)}
    path.write_text(aptsources.render_deb822(entries, keyrings))
    return path


@pytest.fixture(scope="module")
def security_stack(
    tmp_path_factory: pytest.TempPathFactory, egress_guard: None
) -> Iterator[SecurityStack]:
    base = tmp_path_factory.mktemp("security")
    repository = LocalAptRepository(base / "repository")
    repository.publish([])  # nothing newer than Debian's own, at first
    with repository.serve():
        root = base / "stack"
        mailstack(
            "init", "--non-interactive", "--sandbox", "--bind", "127.0.0.1",
            "--hostname", HOSTNAME, "--domain", DOMAIN, "--dir", str(root),
        )  # fmt: skip
        config_path = root / "mailstack.yaml"
        config = yaml.safe_load(config_path.read_text())
        config["project"] = PROJECT
        config["features"]["antivirus"] = False
        config["network"]["frontend_subnet"], config["network"]["backend_subnet"] = SUBNETS
        config["network"]["ports"] = dict(SECURITY_PORTS)
        config["backup"]["target"] = str(base / "backups")
        host = _host_sources(base / "host.sources")
        # What an operator with an extra repository writes: images.apt_sources names the file.
        sources = base / "apt.sources"
        sources.write_text(host.read_text() + "\n" + repository.sources_entry())
        config["images"] = {"apt_sources": str(sources)}
        limits = config.setdefault("policy", {}).setdefault("rate_limits", {})
        limits.update(client_connections_per_minute=0, client_ip_burst=0)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        mailstack("render", "--dir", str(root))
        stack = SecurityStack(
            root, PROJECT, SECURITY_PORTS, repository=repository, work=base / "debs"
        )
        stack.compose("down", "--volumes", "--remove-orphans", check=False)
        try:
            mailstack("up", "--dir", str(root), "--timeout", "400")
            stack.mailbox = f"steady-{uuid.uuid4().hex[:8]}@{DOMAIN}"
            for address in (stack.mailbox, f"postmaster@{DOMAIN}"):
                mailstack("mailbox", "add", address, "--password-stdin", "--dir", str(root),
                          stdin=PASSWORD + "\n")  # fmt: skip
            stack.original = download(PACKAGE, DEBIAN_IMAGE, host, base / "original")
            yield stack
        finally:
            if sys.exc_info()[0] is not None:
                sys.stderr.write(stack.compose("logs", "--no-color", "--tail", "40",
                                               check=False).stdout)  # fmt: skip
            stack.compose("down", "--volumes", "--remove-orphans", check=False)
            subprocess.run(["docker", "volume", "rm", "--force", f"{PROJECT}-backup-cache"],
                           capture_output=True, check=False)  # fmt: skip


def _check(stack: SecurityStack) -> tuple[int, dict[str, object]]:
    result = stack.cli("check", "updates", "--json")
    assert result.returncode in (0, 4), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


def test_a_nothing_newer_means_nothing_pending_and_nothing_rebuilt(
    security_stack: SecurityStack,
) -> None:
    code, report = _check(security_stack)
    assert code == 0 and report["security_fixes"] == 0, report
    recorded = security_stack.recorded()
    started = security_stack.started_at()
    build = security_stack.cli("build")
    assert build.returncode == 0, build.stdout + build.stderr
    assert "nothing to build" in build.stdout, build.stdout
    assert security_stack.recorded() == recorded
    up = security_stack.cli("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert security_stack.started_at() == started  # nothing recreated
    status = security_stack.cli("status")
    assert "security: no fixes pending" in status.stdout, status.stdout


def test_b_a_fix_in_the_security_suite_is_named_with_package_versions_and_cve(
    security_stack: SecurityStack,
) -> None:
    installed = security_stack.installed_version("postfix", PACKAGE)
    security_stack.fixed_version = f"{installed.split('+b')[0]}+deb12u1mailstack1"
    security_stack.publish_fix(security_stack.fixed_version, CVE)
    code, report = _check(security_stack)
    assert code == 4, report
    images = {item["image"]: item for item in report["images"]}  # type: ignore[attr-defined]
    pending = {name: item["pending"] for name, item in images.items() if item["pending"]}
    assert list(pending) == ["postfix"], pending
    assert images["postfix"]["services"] == ["postfix", "sink"]
    (fix,) = pending["postfix"]
    assert fix["package"] == PACKAGE and fix["security"], fix
    assert (fix["installed"], fix["candidate"]) == (installed, security_stack.fixed_version)
    assert fix["cves"] == [CVE]
    assert any(release.endswith("/bookworm-security") for release in fix["releases"]), fix
    text = security_stack.cli("check", "updates")
    assert text.returncode == 4
    assert f"{PACKAGE} {installed} -> {security_stack.fixed_version}" in text.stdout, text.stdout
    status = security_stack.cli("status")
    assert "security: 1 fix(es) pending in postfix" in status.stderr + status.stdout


def test_c_notify_mails_the_postmaster_once(security_stack: SecurityStack) -> None:
    security_stack.set_config(security="notify")
    run = security_stack.cli("update", "--security", "--unattended")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "the postmaster was mailed" in run.stdout, run.stdout
    notices = [m for m in security_stack.messages(f"postmaster@{DOMAIN}")
               if "security fix(es) pending for postfix" in str(m["Subject"])]  # fmt: skip
    assert len(notices) == 1, [str(m["Subject"]) for m in notices]
    body = notices[0].get_content()
    for expected in (PACKAGE, security_stack.fixed_version, CVE, "mailstack update --security"):
        assert expected in body, body
    again = security_stack.cli("update", "--security", "--unattended")
    assert again.returncode == 0 and "mailed" not in again.stdout, again.stdout


def test_d_auto_outside_the_window_does_nothing(security_stack: SecurityStack) -> None:
    hour = datetime.datetime.now(datetime.UTC).hour
    window = f"{(hour + 2) % 24:02d}:00-{(hour + 3) % 24:02d}:00"
    security_stack.set_config(security="auto", window=window)
    before = security_stack.image_of("postfix")
    run = security_stack.cli("update", "--security", "--unattended")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"outside the maintenance window {window}" in run.stdout, run.stdout
    assert security_stack.image_of("postfix") == before


def test_e_update_security_rebuilds_only_postfix_and_loses_no_mail(
    security_stack: SecurityStack,
) -> None:
    recorded = security_stack.recorded()
    started = security_stack.started_at()
    sender = SteadySender(security_stack.send)
    sender.start()
    try:
        result = security_stack.cli("update", "--security")
    finally:
        sender.finish()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "applied 1 security fix(es) to postfix" in output, output
    assert CVE in output and "mail round trip" in output, output
    print(output)
    after = security_stack.recorded()
    changed = sorted(name for name in after if after[name] != recorded.get(name))
    assert changed == ["MAILSTACK_IMAGE_POSTFIX"], changed
    assert security_stack.installed_version("postfix", PACKAGE) == security_stack.fixed_version
    now = security_stack.started_at()
    for name, moment in started.items():
        if name.endswith(("-postfix-1", "-sink-1")):
            assert now[name] != moment, f"{name} still runs the old image"
        else:
            assert now[name] == moment, f"{name} was restarted"
    assert not sender.refused, sender.refused  # nothing refused with a 5xx meanwhile
    assert len(sender.sent) > 20
    security_stack.wait_for(sender.sent)
    print(f"steady sender: {len(sender.sent)} messages, {sender.retries} retries")
    code, _ = _check(security_stack)
    assert code == 0


def test_f_a_candidate_that_breaks_health_is_rolled_back(security_stack: SecurityStack) -> None:
    serving = security_stack.image_of("postfix")
    broken_version = security_stack.fixed_version.replace("mailstack1", "mailstack2")
    # A "fix" whose daemon never listens: Postfix's healthcheck fails on SRS.
    security_stack.publish_fix(
        broken_version, BROKEN_CVE, {"usr/sbin/postsrsd": b"#!/bin/sh\nexit 0\n"}
    )
    result = security_stack.cli("update", "--security", "--skip-backup", "--health-timeout", "45")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "postfix" in output and "rolled back" in output, output
    assert "Traceback" not in output
    assert security_stack.image_of("postfix") == serving
    assert f"mailstack/postfix:{serving.split(':')[1]}" in security_stack.recorded().values()
    status = security_stack.cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    security_stack.send("after the rollback")
    security_stack.wait_for(["after the rollback"])
