"""Package plans: which Debian package versions an image gets when it is built now.

`mailstack-packages plan` (compose/base) refreshes apt's lists in a scratch container of the
base layer and prints the installed set followed, per image, by apt's simulation of the very
install command a build runs. A plan is that set with the simulation applied; its digest is
what the image's tag follows (mailstack.images.imagetags), and a build fails unless it installs
exactly the plan. Parsing is pure; `resolve` and `changelogs` run the scratch container.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mailstack.adapters.docker import DOCKER, Bind, OneShot
from mailstack.images import debversion

PLAN_HELPER = "/usr/local/sbin/mailstack-packages"
CONTEXTS_MOUNT = "/contexts"
# `Inst name [old] (new Label:Version/Archive, Label:Version/Archive [arch])`
_INST = re.compile(
    r"^Inst (?P<name>[^\s:]+)(?::\S+)? (?:\[(?P<old>[^\]]+)\] )?"
    r"\((?P<new>\S+) (?P<releases>.*?) \[[^\]]*\]\)"
)
_REMOVE = re.compile(r"^Remv (?P<name>[^\s:]+)")
_CVE = re.compile(r"\bCVE-\d{4}-\d{4,}\b")
_CHANGELOG_HEADER = re.compile(r"^(?P<source>[a-z0-9][a-z0-9+.-]*) \((?P<version>[^)]+)\) ")
_CHANGELOG_TRAILER = re.compile(r"^ -- .*?  (?P<date>\S.*)\Z")


@dataclass(frozen=True)
class PackageChange:
    """One package a build would bring: new, or a newer version, with where it comes from."""

    name: str
    installed: str  # "" when the image does not have it yet
    candidate: str
    releases: tuple[str, ...]  # apt's words: "Debian-Security:12/oldstable-security"

    @property
    def security(self) -> bool:
        return any(is_security_release(release) for release in self.releases)


@dataclass(frozen=True)
class Plan:
    """The package set an image gets if built now: {name: version}, and what apt brings."""

    image: str
    packages: Mapping[str, str]
    changes: Mapping[str, PackageChange] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return package_set_digest(self.packages)


def package_set_text(packages: Mapping[str, str]) -> str:
    """The canonical text of a package set: `name version` lines, byte-sorted (LC_ALL=C)."""
    lines = sorted(f"{name} {version}\n" for name, version in packages.items())
    return "".join(lines)


def package_set_digest(packages: Mapping[str, str]) -> str:
    """sha256 of the canonical text; mailstack-packages computes the same inside a build."""
    return hashlib.sha256(package_set_text(packages).encode()).hexdigest()


def parse_package_set(text: str) -> dict[str, str]:
    """`name version` lines (the record in an image, its label) into {name: version}."""
    packages: dict[str, str] = {}
    for line in text.splitlines():
        name, _, version = line.strip().partition(" ")
        if name and version:
            packages[name] = version
    return packages


def is_security_release(release: str) -> bool:
    """`Label:Version/Archive` names Debian's security archive (or a -security suite)."""
    label, _, rest = release.partition(":")
    archive = rest.rpartition("/")[2] if rest else label
    return label.lower().endswith("security") or archive.endswith("-security")


def parse_plan_output(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """`mailstack-packages plan` output: (installed set, {context file: simulation lines})."""
    installed_lines: list[str] = []
    simulations: dict[str, list[str]] = {}
    section: list[str] | None = None
    for line in text.splitlines():
        if line == "@installed":
            section = installed_lines
        elif line.startswith("@simulation "):
            section = simulations.setdefault(line.removeprefix("@simulation ").strip(), [])
        elif section is not None:
            section.append(line)
    return parse_package_set("\n".join(installed_lines)), simulations


def apply_simulation(image: str, installed: Mapping[str, str], simulation: Iterable[str]) -> Plan:
    """The plan: the installed set with apt's simulated installs and removals applied."""
    packages = dict(installed)
    changes: dict[str, PackageChange] = {}
    for line in simulation:
        inst = _INST.match(line)
        if inst:
            name = inst["name"]
            releases = tuple(part.strip() for part in inst["releases"].split(",") if part.strip())
            changes[name] = PackageChange(name, installed.get(name, ""), inst["new"], releases)
            packages[name] = inst["new"]
            continue
        removal = _REMOVE.match(line)
        if removal:
            packages.pop(removal["name"], None)
    return Plan(image, packages, changes)


def pending_changes(running: Mapping[str, str], plan: Plan) -> list[PackageChange]:
    """What building `plan` would change in an image whose package set is `running`: every
    package with another version (newer, or new), sorted by name."""
    pending: list[PackageChange] = []
    for name, version in sorted(plan.packages.items()):
        current = running.get(name, "")
        if current == version:
            continue
        known = plan.changes.get(name)
        releases = known.releases if known else ()
        pending.append(PackageChange(name, current, version, releases))
    return pending


@dataclass(frozen=True)
class ChangelogEntry:
    source: str
    version: str
    date: str  # RFC 2822, as written in the trailer
    text: str

    @property
    def cves(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_CVE.findall(self.text)))


def parse_changelog(text: str) -> list[ChangelogEntry]:
    """Entries of a Debian changelog (debian/changelog format), newest first."""
    entries: list[ChangelogEntry] = []
    header: re.Match[str] | None = None
    body: list[str] = []
    for line in text.splitlines():
        match = _CHANGELOG_HEADER.match(line)
        if match:
            header, body = match, []
            continue
        trailer = _CHANGELOG_TRAILER.match(line)
        if trailer and header is not None:
            entries.append(
                ChangelogEntry(
                    header["source"], header["version"], trailer["date"], "\n".join(body)
                )
            )
            header = None
            continue
        if header is not None:
            body.append(line)
    return entries


def entries_since(entries: Sequence[ChangelogEntry], installed: str) -> list[ChangelogEntry]:
    """The entries newer than the installed version (all of them for a new package)."""
    if not installed:
        return list(entries)
    return [entry for entry in entries if debversion.newer(entry.version, installed)]


def parse_changelogs_output(text: str) -> dict[str, str]:
    """`mailstack-packages changelog` output: {"name=version": changelog text} (a package
    whose source's changelog came with an earlier package maps to that text too)."""
    by_spec: dict[str, str] = {}
    by_source: dict[str, str] = {}
    spec = source = ""
    lines: list[str] = []

    def close() -> None:
        if spec:
            text = "\n".join(lines)
            if lines == ["@same-source"]:
                text = by_source.get(source, "")
            elif lines == ["@unavailable"]:
                text = ""
            else:
                by_source[source] = text
            by_spec[spec] = text

    for line in text.splitlines():
        if line.startswith("@changelog "):
            close()
            _, spec, source = [*line.split(" "), ""][:3]
            lines = []
        else:
            lines.append(line)
    close()
    return by_spec


# --- the scratch container -----------------------------------------------------------------


def resolve(base_layer: str, contexts: str, images: Sequence[str]) -> dict[str, Plan]:
    """Each image's plan, from one scratch container of the base layer (apt's lists fresh)."""
    files = [f"{CONTEXTS_MOUNT}/{image}/packages" for image in images]
    result = DOCKER.run(
        _scratch(base_layer, ("plan", *files), (Bind(contexts, CONTEXTS_MOUNT, read_only=True),)),
        timeout=900,
        what="resolving package versions (apt-get in a scratch container)",
    )
    installed, simulations = parse_plan_output(result.stdout.decode(errors="replace"))
    return {
        image: apply_simulation(image, installed, simulations.get(path, []))
        for image, path in zip(images, files, strict=True)
    }


def changelogs(base_layer: str, specs: Sequence[str]) -> dict[str, str]:
    """{"name=version": Debian changelog text} for each package, downloaded from the mirror in
    a scratch container (one download per source package)."""
    if not specs:
        return {}
    result = DOCKER.run(
        _scratch(base_layer, ("changelog", *specs)),
        timeout=1800,
        what="reading changelogs (apt-get download in a scratch container)",
    )
    return parse_changelogs_output(result.stdout.decode(errors="replace"))


def _scratch(base_layer: str, command: tuple[str, ...], binds: tuple[Bind, ...] = ()) -> OneShot:
    """The base layer's package helper, on the default bridge (it reaches the mirror), as
    root with apt's usual privileges: apt drops to _apt for downloads itself."""
    return OneShot(
        base_layer,
        command,
        entrypoint=PLAN_HELPER,
        network="bridge",
        binds=binds,
        hardened=False,
    )
