"""Package plans, Debian versions, image tags that follow packages, and the .env record."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstack.images import debversion, imagerefs, imagetags, packageplan

INSTALLED = "libc6 2.36-9+deb12u13\nlibssl3 3.0.20-1~deb12u2\nzlib1g 1:1.2.13.dfsg-1\n"
PLAN_OUTPUT = f"""\
@installed
{INSTALLED}@simulation /contexts/postfix/packages
Inst libssl3 [3.0.20-1~deb12u2] (3.0.22-1~deb12u2 Debian-Security:12/oldstable-security [amd64])
Inst postfix (3.7.11-0+deb12u1 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64])
Inst libicu72 (72.1-3+deb12u1 Debian:12.15/oldstable [amd64])
Inst libc6:amd64 [2.36-9+deb12u13] (2.36-9+deb12u14 Debian:12.15/oldstable-updates [amd64])
Remv zlib1g [1:1.2.13.dfsg-1]
@simulation /contexts/redis/packages
"""


def _plan(image: str = "postfix") -> packageplan.Plan:
    installed, simulations = packageplan.parse_plan_output(PLAN_OUTPUT)
    return packageplan.apply_simulation(
        image, installed, simulations[f"/contexts/{image}/packages"]
    )


def test_a_plan_is_the_installed_set_with_the_simulation_applied() -> None:
    plan = _plan()
    assert plan.packages == {
        "libc6": "2.36-9+deb12u14",
        "libssl3": "3.0.22-1~deb12u2",
        "postfix": "3.7.11-0+deb12u1",
        "libicu72": "72.1-3+deb12u1",
    }
    assert plan.changes["libssl3"].security
    assert plan.changes["postfix"].security  # also in the point release: still a fix
    assert not plan.changes["libc6"].security
    assert not plan.changes["libicu72"].security
    # An image whose simulation changes nothing keeps the installed set.
    assert _plan("redis").packages == packageplan.parse_package_set(INSTALLED)


def test_the_plan_digest_is_what_mailstack_packages_computes_in_a_build() -> None:
    plan = _plan()
    # The helper runs: dpkg-query … | LC_ALL=C sort | sha256sum
    text = "".join(f"{name} {version}\n" for name, version in plan.packages.items())
    shell_sorted = subprocess.run(
        ["sort"], input=text, capture_output=True, text=True, env={"LC_ALL": "C"}, check=True
    ).stdout
    assert plan.digest == hashlib.sha256(shell_sorted.encode()).hexdigest()


def test_pending_changes_name_installed_and_candidate_versions() -> None:
    running = packageplan.parse_package_set(INSTALLED)
    pending = {change.name: change for change in packageplan.pending_changes(running, _plan())}
    assert set(pending) == {"libc6", "libssl3", "postfix", "libicu72"}
    assert (pending["libssl3"].installed, pending["libssl3"].candidate) == (
        "3.0.20-1~deb12u2",
        "3.0.22-1~deb12u2",
    )
    assert pending["postfix"].installed == ""  # new in this image
    assert packageplan.pending_changes(_plan().packages, _plan()) == []


@pytest.mark.parametrize(
    ("release", "security"),
    [
        ("Debian-Security:12/oldstable-security", True),
        ("mailstack-test:12/bookworm-security", True),
        ("Debian:12.15/oldstable", False),
        ("Debian:12.15/oldstable-updates", False),
    ],
)
def test_security_releases_are_told_apart(release: str, security: bool) -> None:
    assert packageplan.is_security_release(release) is security


CHANGELOG = """\
postsrsd (1.10-2+deb12u1) bookworm-security; urgency=high

  * Fix CVE-2099-0001: a crafted address crashes the daemon.
  * Also fixes CVE-2099-0002 and CVE-2099-0001 (again named).

 -- Maintainer <m@example.invalid>  Tue, 01 Dec 2026 10:00:00 +0000

postsrsd (1.10-2) unstable; urgency=medium

  * Fix CVE-2021-35525.

 -- Maintainer <m@example.invalid>  Mon, 01 Mar 2021 10:00:00 +0000
"""


def test_changelog_entries_since_the_installed_version_name_their_cves() -> None:
    entries = packageplan.parse_changelog(CHANGELOG)
    assert [entry.version for entry in entries] == ["1.10-2+deb12u1", "1.10-2"]
    # A binNMU of 1.10-2 is installed: only the newer upload counts.
    new = packageplan.entries_since(entries, "1.10-2+b1")
    assert [entry.version for entry in new] == ["1.10-2+deb12u1"]
    assert new[0].cves == ("CVE-2099-0001", "CVE-2099-0002")
    assert new[0].date == "Tue, 01 Dec 2026 10:00:00 +0000"
    assert len(packageplan.entries_since(entries, "")) == 2  # a new package: all of it


def test_changelogs_output_shares_a_source_changelog_between_binaries() -> None:
    output = (
        "@changelog libssl3=3.0.22 openssl\n" + CHANGELOG + "@changelog openssl=3.0.22 openssl\n"
        "@same-source\n@changelog gone=1.0 gone\n@unavailable\n"
    )
    logs = packageplan.parse_changelogs_output(output)
    assert logs["openssl=3.0.22"] == logs["libssl3=3.0.22"]
    assert "CVE-2099-0001" in logs["libssl3=3.0.22"]
    assert logs["gone=1.0"] == ""


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("1.0", "1.0", 0),
        ("1.0-1", "1.0-2", -1),
        ("1:1.0", "2.0", 1),
        ("1.0~rc1", "1.0", -1),
        ("1.10-2+deb12u1mailstack1", "1.10-2+b1", 1),
        ("3.0.22-1~deb12u2", "3.0.20-1~deb12u2", 1),
        ("2.36-9+deb12u14", "2.36-9+deb12u9", 1),
        ("1.0a", "1.0+", -1),
        ("1.0", "1.0.0", -1),
    ],
)
def test_debian_versions_compare_as_dpkg_does(left: str, right: str, expected: int) -> None:
    assert debversion.compare(left, right) == expected


_VERSION = st.from_regex(r"\A([1-3]:)?[0-9][0-9a-z.+~]{0,6}(-[0-9a-z.+~]{1,5})?\Z")


@given(_VERSION, _VERSION)
def test_version_order_agrees_with_dpkg(left: str, right: str) -> None:
    lt = subprocess.run(["dpkg", "--compare-versions", left, "lt", right], check=False)
    gt = subprocess.run(["dpkg", "--compare-versions", left, "gt", right], check=False)
    expected = -1 if lt.returncode == 0 else 1 if gt.returncode == 0 else 0
    assert debversion.compare(left, right) == expected


def test_tags_are_stable_and_follow_the_plan() -> None:
    digest = _plan().digest
    assert imagetags.content_tag("postfix", digest) == imagetags.content_tag("postfix", digest)
    changed = dict(_plan().packages, libssl3="3.0.23-1~deb12u1")
    other = packageplan.package_set_digest(changed)
    assert imagetags.content_tag("postfix", other) != imagetags.content_tag("postfix", digest)
    assert imagetags.content_tag("redis", digest) != imagetags.content_tag("postfix", digest)


def test_the_env_file_records_references_and_merges(tmp_path: Path) -> None:
    assert imagerefs.read(tmp_path) == {}
    assert imagerefs.write(
        tmp_path, {"postfix": "mailstack/postfix:aa", "mta-sts": "r/mailstack/mta-sts:bb"}
    )
    assert not imagerefs.write(tmp_path, {"postfix": "mailstack/postfix:aa"})  # no change
    imagerefs.write(tmp_path, {"postfix": "mailstack/postfix:cc"})
    assert imagerefs.read(tmp_path) == {
        "postfix": "mailstack/postfix:cc",
        "mta-sts": "r/mailstack/mta-sts:bb",
    }
    text = (tmp_path / ".env").read_text()
    assert "MAILSTACK_IMAGE_MTA_STS=r/mailstack/mta-sts:bb\n" in text
    assert imagerefs.compose_reference("mta-sts") == (
        "${MAILSTACK_IMAGE_MTA_STS:-mailstack/mta-sts:unbuilt}"
    )
