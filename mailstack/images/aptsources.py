"""The Debian repositories images are built from: read from the host's apt sources at run time.

Every image sees the release, `-updates` and `-security` suites of the mirrors the host is
configured with (deb822 `.sources` and one-line `.list` files alike), so a build is fully
upgraded with Debian's fixes. No mirror's name is ever written into mailstack itself.
Pure functions over text; `host_sources` is the one reader of the host's files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mailstack.errors import MailstackError, UsageError

RELEASE = "bookworm"
# The suites an image must see: the release, its stable updates and its security fixes.
SUITES = (RELEASE, f"{RELEASE}-updates", f"{RELEASE}-security")
SECURITY_SUITE = f"{RELEASE}-security"
HOST_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))
# Where the keyrings an entry names with Signed-By are put inside the image.
IMAGE_KEYRINGS = "/etc/apt/keyrings"


@dataclass(frozen=True)
class AptSource:
    """One repository entry: what apt's sources.list(5) calls a source."""

    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str = ""  # a keyring path, an inline key, or "" (apt's trusted keys)

    @property
    def inline_key(self) -> bool:
        return "BEGIN PGP PUBLIC KEY BLOCK" in self.signed_by


def parse_sources(text: str) -> list[AptSource]:
    """The binary (`deb`) entries of a sources text, deb822 stanzas and one-line entries."""
    entries = [_one_line_entry(line) for line in text.splitlines()]
    found = [entry for entry in entries if entry is not None]
    return found + [entry for entry in _deb822_entries(text) if entry is not None]


def _one_line_entry(raw: str) -> AptSource | None:
    line = raw.split("#", 1)[0].strip()
    if not line.startswith("deb "):
        return None
    options = ""
    rest = line[4:].strip()
    if rest.startswith("["):
        options, _, rest = rest[1:].partition("]")
    parts = rest.split()
    if len(parts) < 2:
        return None
    signed_by = ""
    for option in options.split():
        name, _, value = option.partition("=")
        if name == "signed-by":
            signed_by = value
    return AptSource((parts[0],), (parts[1],), tuple(parts[2:]), signed_by)


def _deb822_entries(text: str) -> list[AptSource | None]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    field = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, field = {}, ""
        elif raw[0] in " \t" and field:  # a continuation line (an inline Signed-By key)
            value = raw.strip()
            current[field] += "\n" + (" ." if value == "." else " " + value)
        elif ":" in raw and not raw.startswith(("deb ", "deb-src ")):
            field, _, value = raw.partition(":")
            field = field.strip().lower()
            current[field] = value.strip()
    return [_deb822_entry(stanza) for stanza in stanzas]


def _deb822_entry(stanza: dict[str, str]) -> AptSource | None:
    if "deb" not in stanza.get("types", "").split():
        return None
    if stanza.get("enabled", "yes").strip().lower() == "no":
        return None
    return AptSource(
        tuple(stanza.get("uris", "").split()),
        tuple(stanza.get("suites", "").split()),
        tuple(stanza.get("components", "").split()),
        stanza.get("signed-by", "").strip(),
    )


def image_sources(entries: Iterable[AptSource], suites: Sequence[str] = SUITES) -> list[AptSource]:
    """The entries that serve the release's suites, narrowed to those suites; the release,
    -updates and -security must each be served, or images would miss Debian's fixes."""
    chosen: list[AptSource] = []
    for entry in entries:
        wanted = tuple(suite for suite in entry.suites if suite in suites)
        if wanted and entry.uris and entry.components:
            chosen.append(AptSource(entry.uris, wanted, entry.components, entry.signed_by))
    served = {suite for entry in chosen for suite in entry.suites}
    missing = [suite for suite in suites if suite not in served]
    if missing:
        raise MailstackError(
            f"the apt sources name no {', '.join(missing)} suite: images built from them "
            "would miss Debian's " + ("security fixes" if SECURITY_SUITE in missing else "updates"),
            hint=f"add {' and '.join(missing)} to the host's apt sources (or to the file "
            "images.apt_sources names), then try again",
        )
    return chosen


def debootstrap_mirror(entries: Iterable[AptSource]) -> str:
    """The mirror debootstrap fetches the release from: the first entry serving it."""
    for entry in entries:
        if RELEASE in entry.suites:
            for uri in entry.uris:
                if re.match(r"^https?://", uri):
                    return uri
    raise MailstackError(
        f"no http(s) mirror for {RELEASE} in the apt sources",
        hint="configure apt (/etc/apt/sources.list.d/debian.sources), or set images.registry",
    )


def keyring_files(entries: Iterable[AptSource]) -> list[str]:
    """The keyring files the entries name (Signed-By paths), each once, in order."""
    paths: list[str] = []
    for entry in entries:
        if entry.signed_by and not entry.inline_key:
            paths += [path for path in entry.signed_by.split() if path not in paths]
    return paths


def image_keyring_path(host_path: str, index: int) -> str:
    """Where the index-th keyring lives inside the image (names stay unique)."""
    return f"{IMAGE_KEYRINGS}/{index:02d}-{Path(host_path).name}"


def render_deb822(entries: Iterable[AptSource], keyrings: dict[str, str]) -> str:
    """The image's sources file; `keyrings` maps each host keyring path to its image path."""
    stanzas: list[str] = []
    for entry in entries:
        lines = [
            "Types: deb",
            f"URIs: {' '.join(entry.uris)}",
            f"Suites: {' '.join(entry.suites)}",
            f"Components: {' '.join(entry.components)}",
        ]
        if entry.inline_key:  # continuation lines keep their leading space (deb822)
            lines.append("Signed-By:\n " + entry.signed_by)
        elif entry.signed_by:
            paths = [keyrings[path] for path in entry.signed_by.split()]
            lines.append(f"Signed-By: {' '.join(paths)}")
        stanzas.append("\n".join(lines))
    return "# Written by mailstack from the host's apt sources.\n\n" + "\n\n".join(stanzas) + "\n"


def read_source_texts(sources: Sequence[Path] = HOST_SOURCES) -> list[str]:
    """The texts of apt's source files (`*.sources` and `*.list` in a directory, or files)."""
    texts: list[str] = []
    for source in sources:
        if source.is_dir():
            texts += [p.read_text(errors="replace") for p in sorted(source.glob("*.list"))]
            texts += [p.read_text(errors="replace") for p in sorted(source.glob("*.sources"))]
        elif source.is_file():
            texts.append(source.read_text(errors="replace"))
    return texts


def configured_sources(apt_sources: Path | None) -> list[AptSource]:
    """Every entry of the file images.apt_sources names, else of the host's apt sources."""
    if apt_sources is not None:
        if not apt_sources.is_file():
            raise UsageError(
                f"mailstack.yaml: images.apt_sources: {str(apt_sources)!r} is not a readable file",
                hint="name a sources file (deb822 .sources or one-line .list), or remove the key "
                "to use the host's apt sources",
            )
        return parse_sources(apt_sources.read_text(errors="replace"))
    return [entry for text in read_source_texts() for entry in parse_sources(text)]
