"""The release feed: channels, advisories, major versions, bad feeds, offline."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from mailstack.runtime import releases
from mailstack.runtime.releases import FeedError, check, check_online, parse_feed


def feed(**extra: Any) -> dict[str, Any]:
    return {
        "schema": 1,
        "releases": [
            {"version": "0.1.0", "channel": "stable", "published": "2026-11-01", "notes": "first"},
            {"version": "0.1.1", "channel": "fast", "published": "2026-11-20", "notes": "fix"},
            {"version": "0.2.0", "channel": "stable", "published": "2026-12-01", "notes": "new"},
            {"version": "0.3.0b1", "channel": "beta", "published": "2026-12-02", "notes": "next"},
            {"version": "1.0.0", "channel": "stable", "published": "2027-01-01", "notes": "big"},
        ],
        "advisories": [
            {
                "id": "MS-2026-001",
                "severity": "high",
                "affected": "<0.1.1",
                "fixed": "0.1.1",
                "summary": "relay through a crafted alias",
            },
            {
                "id": "MS-2026-002",
                "severity": "low",
                "affected": ">=0.2.0,<0.2.1",
                "fixed": "0.2.1",
                "summary": "verbose banner",
            },
        ],
        **extra,
    }


def advisory(**fields: str) -> dict[str, Any]:
    item = {"id": "A", "severity": "low", "affected": "<1", "summary": "s", **fields}
    return {"schema": 1, "advisories": [item]}


def versions(result: releases.UpdateCheck) -> list[str]:
    return [release.version for release in result.newer]


def test_each_channel_sees_its_releases_newest_last() -> None:
    assert versions(check("0.1.0", "fast", feed())) == ["0.1.1"]
    assert versions(check("0.1.0", "stable", feed())) == ["0.1.1", "0.2.0", "1.0.0"]
    assert versions(check("0.1.0", "beta", feed())) == ["0.1.1", "0.2.0", "0.3.0b1", "1.0.0"]


def test_a_new_major_version_is_flagged_and_said_so() -> None:
    result = check("0.1.0", "stable", feed())
    assert [r.version for r in result.newer if r.major] == ["1.0.0"]
    assert "NEW MAJOR VERSION" in str(result)


def test_only_advisories_that_affect_the_running_version_are_shown() -> None:
    assert [a.id for a in check("0.1.0", "stable", feed()).advisories] == ["MS-2026-001"]
    assert [a.id for a in check("0.1.1", "stable", feed()).advisories] == []
    shown = str(check("0.1.0", "fast", feed()))
    assert "MS-2026-001 [HIGH]" in shown and "fixed in 0.1.1" in shown


def test_nothing_newer_is_said_plainly() -> None:
    assert "no newer version" in str(check("1.0.0", "stable", feed()))


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ([], "not a JSON object"),
        ({"schema": 2}, "schema 2 is not supported"),
        ({"schema": 1, "releases": {}}, "releases is not a list"),
        ({"schema": 1, "releases": [{"version": "x.y", "channel": "stable"}]}, "not a version"),
        ({"schema": 1, "releases": [{"version": "1.0", "channel": "nightly"}]}, "channel"),
        (
            {"schema": 1, "releases": [{"version": "1.0", "channel": "stable", "notes": "a\nb"}]},
            "one-line",
        ),
        (advisory(severity="dire"), "severity"),
        (advisory(affected="soon"), "version range"),
    ],
)
def test_a_bad_feed_is_named_precisely(document: Any, words: str) -> None:
    with pytest.raises(FeedError, match=words):
        parse_feed(document)


@pytest.fixture
def feed_server() -> Iterator[str]:
    body = json.dumps(feed()).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/feed.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_the_feed_is_fetched_over_http(feed_server: str) -> None:
    result = check_online("0.1.0", "fast", f"{feed_server}/feed.json")
    assert result.offline is None
    assert versions(result) == ["0.1.1"]


def test_offline_or_missing_feed_is_reported_not_raised(feed_server: str) -> None:
    missing = check_online("0.1.0", "stable", f"{feed_server}/nothing.json")
    assert missing.offline is not None and "404" in missing.offline
    assert "could not read the release feed" in str(missing)
    closed = check_online("0.1.0", "stable", "http://127.0.0.1:9/feed.json")
    assert closed.offline is not None
    unset = check_online("0.1.0", "stable", None)
    assert unset.offline == "update.feed_url is not set in mailstack.yaml"
