"""The release feed: which newer versions an operator's channel offers, and which security
advisories affect the running version (`mailstack update --check`).

The feed is one JSON document (schema in docs/release-feed.md):

    {"schema": 1,
     "releases": [{"version": "0.2.0", "channel": "stable", "published": "2026-12-01",
                   "notes": "..."}],
     "advisories": [{"id": "MS-2026-001", "severity": "high", "affected": "<0.1.2",
                     "fixed": "0.1.2", "summary": "..."}]}

A release's channel is the first channel that carries it: fixes ship on `fast`, which
every channel sees; feature releases on `stable`; previews on `beta`, seen only there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import requests
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from mailstack.errors import MailstackError

FEED_SCHEMA = 1
CHANNELS_SEEN = {
    "fast": ("fast",),
    "stable": ("fast", "stable"),
    "beta": ("fast", "stable", "beta"),
}
SEVERITIES = ("low", "medium", "high", "critical")
_MAX_FEED_BYTES = 1024 * 1024


class FeedError(MailstackError):
    """The feed could not be read or is not a valid feed."""


@dataclass(frozen=True)
class Release:
    version: str
    channel: str
    published: str
    notes: str
    major: bool = False  # a new major version: never taken without saying so

    def __str__(self) -> str:
        flag = "  NEW MAJOR VERSION: read the notes first" if self.major else ""
        beta = "  (beta: early, expect rough edges)" if self.channel == "beta" else ""
        return f"{self.version} ({self.channel}, {self.published}){beta}{flag}  {self.notes}"


@dataclass(frozen=True)
class Advisory:
    id: str
    severity: str
    affected: str
    fixed: str | None
    summary: str

    def __str__(self) -> str:
        fix = f"fixed in {self.fixed}" if self.fixed else "no fixed version yet"
        return (
            f"{self.id} [{self.severity.upper()}] {self.summary} (affects {self.affected}; {fix})"
        )


@dataclass(frozen=True)
class UpdateCheck:
    current: str
    channel: str
    newer: tuple[Release, ...]
    advisories: tuple[Advisory, ...]
    offline: str | None = None  # why the feed could not be read

    def __str__(self) -> str:
        if self.offline:
            return f"mailstack {self.current}: could not read the release feed ({self.offline})"
        lines = [f"mailstack {self.current} on the {self.channel} channel"]
        if self.newer:
            lines.append("newer versions:")
            lines += [f"  {release}" for release in self.newer]
        else:
            lines.append("no newer version on this channel")
        if self.advisories:
            lines.append("security advisories affecting this version:")
            lines += [f"  {advisory}" for advisory in self.advisories]
        return "\n".join(lines)


def check(current: str, channel: str, document: Any) -> UpdateCheck:
    """Newer releases on `channel` and advisories that affect `current` (pure)."""
    releases, advisories = parse_feed(document)
    running = _version("current version", current)
    seen = CHANNELS_SEEN[channel]
    newer = sorted(
        (r for r in releases if r.channel in seen and Version(r.version) > running),
        key=lambda r: Version(r.version),
    )
    marked = tuple(
        Release(
            r.version, r.channel, r.published, r.notes, Version(r.version).major > running.major
        )
        for r in newer
    )
    affecting = tuple(
        a for a in advisories if SpecifierSet(a.affected).contains(running, prereleases=True)
    )
    return UpdateCheck(current, channel, marked, affecting)


def parse_feed(document: Any) -> tuple[list[Release], list[Advisory]]:
    if not isinstance(document, dict):
        raise FeedError("release feed: the document is not a JSON object")
    schema = document.get("schema")
    if schema != FEED_SCHEMA:
        raise FeedError(
            f"release feed: schema {schema!r} is not supported (this reads {FEED_SCHEMA})"
        )
    releases = [_release(i, item) for i, item in enumerate(_list(document, "releases"))]
    advisories = [_advisory(i, item) for i, item in enumerate(_list(document, "advisories"))]
    return releases, advisories


def fetch_feed(url: str, timeout: float = 10) -> Any:
    """The feed document; FeedError when it cannot be fetched or parsed."""
    try:
        response = requests.get(url, timeout=timeout, stream=True)
        response.raise_for_status()
        body = response.raw.read(_MAX_FEED_BYTES + 1, decode_content=True)
    except requests.RequestException as e:
        raise FeedError(f"{url}: {type(e).__name__}: {_short(e)}") from None
    if len(body) > _MAX_FEED_BYTES:
        raise FeedError(f"{url}: the feed is larger than {_MAX_FEED_BYTES // 1024} KiB")
    try:
        return json.loads(body)
    except ValueError as e:
        raise FeedError(f"{url}: not JSON ({e})") from None


def check_online(current: str, channel: str, url: str | None) -> UpdateCheck:
    """`check` against the feed at `url`; offline (or no feed) is reported, not raised."""
    if url is None:
        return UpdateCheck(current, channel, (), (), "update.feed_url is not set in mailstack.yaml")
    try:
        document = fetch_feed(url)
    except FeedError as e:
        return UpdateCheck(current, channel, (), (), e.message)
    return check(current, channel, document)


# --- parsing ---------------------------------------------------------------------------------


def _list(document: dict[str, Any], key: str) -> list[Any]:
    value = document.get(key, [])
    if not isinstance(value, list):
        raise FeedError(f"release feed: {key} is not a list")
    return value


def _field(where: str, item: Any, key: str, *, optional: bool = False) -> str | None:
    if not isinstance(item, dict):
        raise FeedError(f"release feed: {where} is not an object")
    value = item.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > 2000 or "\n" in value.strip():
        raise FeedError(f"release feed: {where}.{key} must be a one-line string")
    return value


def _release(index: int, item: Any) -> Release:
    where = f"releases[{index}]"
    version = str(_field(where, item, "version"))
    _version(f"{where}.version", version)
    channel = str(_field(where, item, "channel"))
    if channel not in CHANNELS_SEEN:
        raise FeedError(
            f"release feed: {where}.channel {channel!r} is not one of fast, stable, beta"
        )
    published = _field(where, item, "published", optional=True) or "undated"
    notes = _field(where, item, "notes", optional=True) or ""
    return Release(version, channel, published, notes)


def _advisory(index: int, item: Any) -> Advisory:
    where = f"advisories[{index}]"
    severity = str(_field(where, item, "severity")).lower()
    if severity not in SEVERITIES:
        raise FeedError(
            f"release feed: {where}.severity {severity!r} is not one of {', '.join(SEVERITIES)}"
        )
    affected = str(_field(where, item, "affected"))
    try:
        SpecifierSet(affected)
    except InvalidSpecifier:
        raise FeedError(
            f"release feed: {where}.affected {affected!r} is not a version range like <0.1.2"
        ) from None
    fixed = _field(where, item, "fixed", optional=True)
    if fixed is not None:
        _version(f"{where}.fixed", fixed)
    return Advisory(
        str(_field(where, item, "id")),
        severity,
        affected,
        fixed,
        str(_field(where, item, "summary")),
    )


def _version(where: str, text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise FeedError(f"release feed: {where} {text!r} is not a version like 1.2.3") from None


def _short(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return text[:200]
