"""The web admin's Health and Bans pages and their API (/admin/health, /admin/bans,
GET /api/v1/health, GET/DELETE /api/v1/bans) on the running stack, in Debian's Chromium: the
host's `mailstack jobs run` reports every service healthy; an address banned for real after
failed IMAP logins shows on the Bans page with its protocol, "Clear" queues a ban.clear host
job that the audit log names admin:NAME for, the next `jobs run` lifts the ban and the
address logs in again; a domain administrator gets 403 on both pages and the API.

The address banned here is this module's own (a spare address of the frontend bridge, as
test_bans.py and test_admin_web.py use theirs); it is cleared when the module ends.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.adminweb import ADMIN_URL, chromium, new_admin, sign_in
from tests.e2e.conftest import DOMAIN, PROJECT, SUBNETS, RunningStack
from tests.e2e.test_admin_api import api, new_token
from tests.e2e.test_admin_web import bans_policy
from tests.e2e.test_admin_web_directory import csrf_of, request, submit
from tests.e2e.test_bans import SourcedIMAP4

pytestmark = pytest.mark.e2e

# Ours alone: test_bans.py uses .101-.106, test_admin_web.py .110 (all below Docker's .128+).
BANNED = str(ipaddress.ip_network(SUBNETS[0]).network_address + 118)
MAX_FAILURES = 3


@pytest.fixture
def page(stack: RunningStack, tmp_path: Path) -> Iterator[Any]:
    with chromium(stack, tmp_path / "chromium-profile") as browser_page:
        yield browser_page


@pytest.fixture(scope="module")
def source(stack: RunningStack) -> Iterator[str]:
    """BANNED on the frontend bridge, under a quick bans policy; cleared and gone after."""
    network_id = subprocess.run(
        ["docker", "network", "inspect", "--format", "{{.Id}}", f"{PROJECT}_frontend"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    bridge = f"br-{network_id[:12]}"
    subprocess.run(["ip", "addr", "add", f"{BANNED}/32", "dev", bridge], check=True)
    try:
        with bans_policy(stack, max_failures=MAX_FAILURES, ban_time="10m", max_delay="1s"):
            yield BANNED
    finally:
        stack.cli("security", "bans", "--clear", BANNED, check=False)
        subprocess.run(
            ["ip", "addr", "del", f"{BANNED}/32", "dev", bridge], capture_output=True, check=False
        )


def imap_login(stack: RunningStack, source: str, login: str, password: str) -> bool:
    dovecot = stack.addresses("dovecot")["frontend"]
    with SourcedIMAP4(source, dovecot, stack.tls_context()) as imap:
        try:
            imap.login(login, password)
        except imap.error:
            return False
        return True


def bans_rows(page: Any) -> str:
    page.goto(ADMIN_URL + "bans", wait_until="domcontentloaded")
    return str(page.get_by_role("region", name="Banned addresses", exact=True).inner_text())


def test_the_health_page_lists_every_service_healthy(stack: RunningStack, page: Any) -> None:
    stack.cli("jobs", "run")
    running = set(stack.compose("ps", "--services").stdout.decode().split())
    admin = new_admin(stack)
    sign_in(page, admin)
    assert "services are healthy" in page.locator("p.notice").inner_text()  # the dashboard
    answer = page.goto(ADMIN_URL + "health", wait_until="domcontentloaded")
    assert answer.status == 200
    assert page.get_by_text("Every service is running and healthy.").is_visible()
    assert re.search(r"as of \d\d:\d\d:\d\d UTC, \d+ s ago", page.locator("main").inner_text())
    rows = page.locator("table tbody tr")
    shown = {}
    for index in range(rows.count()):
        cells = rows.nth(index).locator("td").all_inner_texts()
        shown[cells[0]] = (cells[1], cells[2], cells[3])
    assert set(shown) == running, (shown, running)
    for service, (state, health, failing) in shown.items():
        assert state == "running" and health in ("healthy", "no healthcheck"), service
        assert failing == "0", service
    assert submit(page, "Refresh now") == 202
    assert re.fullmatch(
        r"A fresh health report is queued as host job #\d+; the host does it within a minute\.",
        page.locator("[role=status]").inner_text(),
    )
    _, token = new_token(stack, "admin")
    status, health = api(stack, "GET", "/api/v1/health", token)
    assert status == 200 and health["healthy"] is True and health["error"] is None
    assert {service["service"] for service in health["services"]} == running


def test_a_ban_shows_on_the_page_and_clear_lifts_it_after_the_hosts_run(
    stack: RunningStack, source: str, page: Any
) -> None:
    address, password = stack.new_mailbox()
    for _ in range(MAX_FAILURES):
        assert not imap_login(stack, source, address, f"wrong-{uuid.uuid4().hex}")
    assert not imap_login(stack, source, address, password)  # banned: even the right one
    admin = new_admin(stack)
    sign_in(page, admin)
    # The report is remade every minute; "Refresh now" asks for it at the host's next run.
    page.goto(ADMIN_URL + "bans", wait_until="domcontentloaded")
    assert submit(page, "Refresh now") == 202
    assert (
        "A fresh bans report is queued as host job #" in page.locator("[role=status]").inner_text()
    )
    assert "bans report published" in stack.cli("jobs", "run").stdout
    row = page.get_by_role("row").filter(has_text=source)
    assert source in bans_rows(page)
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == source and cells[2] == str(MAX_FAILURES), cells
    assert cells[3] == "imap" and cells[4] == address, cells
    # A forged post without the form's token changes nothing.
    forged = request(stack, page, "POST", "bans/clear", {"address": source})
    assert forged.status == 403
    assert submit(page, f"Clear {source}") == 202
    notice = page.locator("[role=status]").inner_text()
    match = re.fullmatch(rf"Clearing {re.escape(source)} is queued as host job #(\d+); .*", notice)
    assert match, notice
    job = match.group(1)
    logged = json.loads(
        stack.cli("audit", "list", "--actor", f"admin:{admin.name}", "--json").stdout
    )
    cleared = [
        (e["action"], e["target"], e["detail"]) for e in logged if e["action"] == "ban.clear"
    ]
    assert cleared == [("ban.clear", source, f"host job #{job}")], logged
    assert source in bans_rows(page)  # the host has not run yet
    ran = stack.cli("jobs", "run").stdout
    assert f"#{job} ban.clear {source}: done: cleared {source}: it may log in again" in ran, ran
    assert source not in bans_rows(page)
    assert imap_login(stack, source, address, password)
    # The API: the ban is gone from its list; DELETE queues a job (a hostile address: 400).
    _, token = new_token(stack, "admin")
    status, listed = api(stack, "GET", "/api/v1/bans", token)
    assert status == 200 and source not in [ban["address"] for ban in listed["bans"]]
    assert listed["settings"]["max_failures"] == MAX_FAILURES
    status, queued = api(stack, "DELETE", f"/api/v1/bans/{source}", token)
    assert status == 202 and queued["address"] == source and queued["job"] > int(job)
    status, refused = api(stack, "DELETE", "/api/v1/bans/0.0.0.0%2F0", token)
    assert status == 400 and refused["error"].startswith("ADDRESS: '0.0.0.0/0' is not accepted")
    ran = stack.cli("jobs", "run").stdout
    assert f"#{queued['job']} ban.clear {source}: done: {source} was not banned" in ran, ran


def test_a_domain_administrator_gets_403_on_both_pages_and_the_api(
    stack: RunningStack, page: Any
) -> None:
    admin = new_admin(stack, "--role", "domain-admin", "--domain", DOMAIN)
    sign_in(page, admin)
    assert page.locator("p.notice, p.error").count() == 0  # no health line on its dashboard
    for path in ("health", "bans"):
        answer = page.goto(ADMIN_URL + path, wait_until="domcontentloaded")
        assert answer.status == 403, path
        assert page.locator("[role=alert]").inner_text() == "only an administrator may do this"
        assert page.locator("table").count() == 0
    token = csrf_of(page)
    for path, form in [("bans/clear", {"address": "192.0.2.10"}), ("bans/refresh", {})]:
        answer = request(stack, page, "POST", path, {"csrf": token, **form})
        assert answer.status == 403 and "only an administrator may do this" in answer.text
    logged = json.loads(
        stack.cli("audit", "list", "--actor", f"admin:{admin.name}", "--json").stdout
    )
    assert "ban.clear" not in [entry["action"] for entry in logged]
    created = stack.cli(
        "api", "token", "create", f"e2e-{uuid.uuid4().hex[:8]}", "--scope", "admin",
        "--by", admin.name, "--json",
    )  # fmt: skip
    its_token = json.loads(created.stdout)["token"]
    for method, path in [
        ("GET", "/api/v1/health"),
        ("GET", "/api/v1/bans"),
        ("DELETE", "/api/v1/bans/192.0.2.10"),
    ]:
        assert api(stack, method, path, its_token) == (
            403,
            {"error": "only an administrator may do this"},
        ), path
