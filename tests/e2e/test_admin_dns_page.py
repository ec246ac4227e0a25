"""The web admin's DNS and Backups pages (issue 16) in Debian's Chromium, signed in with
password and TOTP, over what the host publishes: `mailstack jobs run` makes the backups and
dns reports (asked for by the pages' "Refresh now"); the DNS page shows a domain's DKIM
record as `mailstack dns records` prints it; a key rotated from the page (after the password
typed again) and from the API is done by the host's next run, and the page then shows the
selector `mailstack dkim show` calls active; the backups page lists the snapshots `backup
list` lists, with the last verify; a domain administrator sees only its domain's records,
cannot rotate another's key and is refused the backups page, in the pages and the API."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.adminweb import ADMIN_URL, chromium, db, new_admin, sign_in
from tests.e2e.conftest import DOMAIN, PROJECT, RunningStack
from tests.e2e.test_admin_api import api, new_token
from tests.e2e.test_admin_web_directory import alert_or_status, csrf_of, request, submit

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ours(stack: RunningStack) -> str:
    """A domain of this module (its key is rotated), made on the host before any browser
    starts (a new domain renews the certificate the browser pins)."""
    domain = f"dns-{uuid.uuid4().hex[:8]}.example.test"
    stack.cli("domain", "add", domain)
    return domain


@pytest.fixture(scope="module")
def snapshot(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A backup of the stack into a repository of this module, verified; mailstack.yaml's
    backup target as it was afterwards."""
    repository = tmp_path_factory.mktemp("dns-page-backup") / "repo"
    path = stack.root / "mailstack.yaml"
    before = path.read_text()
    config = yaml.safe_load(before)
    config["backup"]["target"] = str(repository)
    path.write_text(yaml.safe_dump(config, sort_keys=False))  # read by each backup command
    try:
        started = time.monotonic()
        created = json.loads(stack.cli("backup", "create", "--json", timeout=900).stdout)
        backed_up = time.monotonic()
        stack.cli("backup", "verify", timeout=900)
        print(
            f"\nbackup create {backed_up - started:.1f} s, "
            f"verify {time.monotonic() - backed_up:.1f} s"
        )
        yield str(created["snapshot"])
    finally:
        path.write_text(before)
        subprocess.run(
            ["docker", "volume", "rm", "--force", f"{PROJECT}-backup-cache"],
            capture_output=True,
            check=False,
        )


@pytest.fixture
def page(stack: RunningStack, ours: str, tmp_path: Path) -> Iterator[Any]:
    with chromium(stack, tmp_path / "chromium-profile") as browser_page:
        yield browser_page


def refresh_in_page(page: Any, path: str) -> int:
    """Click a page's "Refresh now"; the number of the report.refresh job it queued."""
    page.goto(ADMIN_URL + path, wait_until="domcontentloaded")
    assert submit(page, "Refresh now") == 202
    notice = alert_or_status(page)
    found = re.search(r"queued as host job #(\d+); the host does it within a minute", notice)
    assert found, notice
    return int(found.group(1))


def zone_lines(page: Any, domain: str) -> list[str]:
    section = page.locator("section").filter(
        has=page.get_by_role("heading", name=re.compile(f"Mail domain {re.escape(domain)}"))
    )
    return [text.strip() for text in section.locator("code.zone-line").all_inner_texts()]


def active_selector(stack: RunningStack, domain: str) -> str:
    keys = json.loads(stack.cli("dkim", "show", domain, "--json").stdout)
    (active,) = [key["selector"] for key in keys if key["active"]]
    return str(active)


def test_jobs_run_publishes_both_reports_and_the_pages_show_the_dkim_record_and_the_snapshots(
    stack: RunningStack, ours: str, snapshot: str, page: Any
) -> None:
    admin = new_admin(stack)
    sign_in(page, admin)
    backups_job = refresh_in_page(page, "backups")
    dns_job = refresh_in_page(page, "dns")
    started = time.monotonic()
    ran = stack.cli("jobs", "run").stdout
    print(f"\njobs run making both reports: {time.monotonic() - started:.1f} s")
    assert f"#{backups_job} report.refresh backups: done" in ran, ran
    assert f"#{dns_job} report.refresh dns: done" in ran, ran
    assert "backups report published" in ran and "dns report published" in ran, ran
    # The DNS page: the domain's DKIM TXT record exactly as `mailstack dns records` prints it.
    page.goto(ADMIN_URL + f"dns?domain={ours}", wait_until="domcontentloaded")
    assert page.locator("#as-of").inner_text().startswith("as of ")
    printed = json.loads(stack.cli("dns", "records", ours, "--json").stdout)
    dkim_lines = [
        record["zone_line"]
        for group in printed["groups"]
        for record in group["records"]
        if record["kind"] == "DKIM"
    ]
    assert dkim_lines and set(dkim_lines) <= set(zone_lines(page, ours))
    assert page.locator("td.selector").all_inner_texts() == [active_selector(stack, ours)]
    checks = page.locator("table.checks tbody tr").filter(has_text="DKIM").first.inner_text()
    assert checks.split("\t")[0] == "pass", checks  # the sandbox resolver serves the key
    # Every domain and the server's own records for an administrator.
    page.goto(ADMIN_URL + "dns", wait_until="domcontentloaded")
    assert page.get_by_role("heading", name=re.compile(f"Mail domain {DOMAIN}")).count() == 1
    assert page.get_by_role("heading", name=re.compile("^Mail server ")).count() == 1
    # The backups page: the snapshots `backup list` lists (the newest first) and the verify.
    listed = json.loads(stack.cli("backup", "list", "--json").stdout)
    page.goto(ADMIN_URL + "backups", wait_until="domcontentloaded")
    shown = [text.strip() for text in page.locator("td.snapshot").all_inner_texts()]
    assert shown == [item["short_id"] for item in reversed(listed)][:50]
    assert snapshot in shown
    verified = page.locator("#last-verify").inner_text()
    assert verified.startswith("Passed at ") and f"snapshot {snapshot}" in verified, verified
    # The API answers the same reports.
    _, token = new_token(stack, "read")
    status, backups = api(stack, "GET", "/api/v1/backups", token)
    assert (
        status == 200
        and [s["short_id"] for s in backups["snapshots"]] == [s["short_id"] for s in listed][-50:]
    )
    assert backups["last_verify"]["ok"] is True and backups["last_verify"]["snapshot"] == snapshot
    status, dns = api(stack, "GET", f"/api/v1/domains/{ours}/dns", token)
    assert status == 200 and dns["domain"] == ours and dns["report"]["age_seconds"] >= 0
    assert dkim_lines == [r["zone_line"] for r in dns["records"] if r["kind"] == "DKIM"]


def test_a_key_rotated_from_the_page_after_the_password_again_is_done_by_the_next_jobs_run(
    stack: RunningStack, ours: str, page: Any
) -> None:
    admin = new_admin(stack)
    sign_in(page, admin)
    before = active_selector(stack, ours)
    # The password was typed at the sign-in: six minutes later, it must be typed again.
    db(
        stack,
        "UPDATE web_sessions SET reauth_at = now() - interval '6 minutes' WHERE admin = :'name';",
        name=admin.name,
    )
    page.goto(ADMIN_URL + f"dns?domain={ours}", wait_until="domcontentloaded")
    rotate = f"Rotate the DKIM key of {ours}"
    submit(page, rotate)
    assert page.url.endswith("/admin/confirm?next=/admin/dns"), page.url
    page.get_by_label("Password").fill(admin.password)
    submit(page, "Confirm")
    assert page.url.endswith("/admin/dns?confirmed=1")
    assert alert_or_status(page).startswith("Password confirmed")
    assert submit(page, rotate) == 202
    notice = alert_or_status(page)
    found = re.search(r"queued as host job #(\d+)", notice)
    assert found and notice.startswith(f"Rotating the DKIM key of {ours}"), notice
    job = int(found.group(1))
    # The API asks too (a domains token): the same work, done once by the host.
    _, token = new_token(stack, "domains")
    status, queued = api(stack, "POST", f"/api/v1/domains/{ours}/dkim/rotate", token)
    assert status == 202 and queued["domain"] == ours, queued
    logged = json.loads(
        stack.cli("audit", "list", "--actor", f"admin:{admin.name}", "--json").stdout
    )
    assert ("dkim.rotate", ours, f"host job #{job}") in {
        (entry["action"], entry["target"], entry["detail"]) for entry in logged
    }, logged
    started = time.monotonic()
    ran = stack.cli("jobs", "run", timeout=900).stdout
    print(
        f"\njobs run rotating a key and remaking the dns report: {time.monotonic() - started:.1f} s"
    )
    after = active_selector(stack, ours)
    assert after != before
    assert f"#{job}, #{queued['job']} dkim.rotate {ours}: done: DKIM key {after} of {ours} " in ran
    assert f"dns:{ours} report published" in ran, ran  # made again in the same run
    page.goto(ADMIN_URL + f"dns?domain={ours}", wait_until="domcontentloaded")
    rows = [text.split("\t") for text in page.locator("table tbody tr").filter(
        has=page.locator("td.selector")).all_inner_texts()]  # fmt: skip
    states = {row[0].strip(): row[1].strip() for row in rows}
    assert states == {after: "active", before: "retiring"}, states
    assert any(after in line for line in zone_lines(page, ours))


def test_a_domain_administrator_sees_only_its_domains_records_and_cannot_rotate_anothers_key(
    stack: RunningStack, ours: str, page: Any
) -> None:
    admin = new_admin(stack, "--role", "domain-admin", "--domain", ours)
    sign_in(page, admin)
    page.goto(ADMIN_URL + "dns", wait_until="domcontentloaded")
    if page.get_by_role("heading", name=re.compile(f"Mail domain {re.escape(ours)}")).count() == 0:
        refresh_in_page(page, "dns")  # a report older than the domain: the host makes it
        stack.cli("jobs", "run")
        page.goto(ADMIN_URL + "dns", wait_until="domcontentloaded")
    headings = page.get_by_role("heading", level=2).all_inner_texts()
    assert len(headings) == 1 and headings[0].startswith(f"Mail domain {ours}"), headings
    assert f"_domainkey.{DOMAIN}" not in page.locator("main").inner_text()
    assert page.get_by_role("button", name=f"Rotate the DKIM key of {DOMAIN}").count() == 0
    # Another domain, existing or not: one line, a 403.
    for other in (DOMAIN, f"nowhere-{uuid.uuid4().hex[:6]}.example.test"):
        answer = page.goto(ADMIN_URL + f"dns?domain={other}", wait_until="domcontentloaded")
        assert (
            answer.status == 403 and alert_or_status(page) == f"{other} is not a domain you manage"
        )
    # A hostile name: the CLI's line, shown escaped.
    answer = page.goto(ADMIN_URL + "dns?domain=%22%3E%3Cb%3Ex", wait_until="domcontentloaded")
    assert answer.status == 400 and alert_or_status(page).startswith("DOMAIN: ")
    assert page.locator("main b").count() == 0
    before = active_selector(stack, DOMAIN)
    pending = db(stack, "SELECT count(*) FROM host_jobs WHERE kind = 'dkim.rotate';").strip()
    token = csrf_of(page)
    answer = request(stack, page, "POST", "dns/rotate", {"csrf": token, "domain": DOMAIN})
    assert answer.status == 403 and f"{DOMAIN} is not a domain you manage" in answer.text
    answer = request(stack, page, "POST", "dns/rotate", {"domain": ours})  # no CSRF token
    assert answer.status == 403 and "did not come from this site" in answer.text
    assert (
        db(stack, "SELECT count(*) FROM host_jobs WHERE kind = 'dkim.rotate';").strip() == pending
    )
    answer = page.goto(ADMIN_URL + "backups", wait_until="domcontentloaded")
    assert answer.status == 403 and alert_or_status(page) == "only an administrator may do this"
    assert page.locator("td.snapshot").count() == 0
    # The API, with a token acting for this domain administrator: the same lines.
    token = json.loads(
        stack.cli(
            "api", "token", "create", f"e2e-{uuid.uuid4().hex[:8]}", "--scope", "domains",
            "--by", admin.name, "--json",
        ).stdout
    )["token"]  # fmt: skip
    refused = (403, {"error": f"{DOMAIN} is not a domain you manage"})
    assert api(stack, "POST", f"/api/v1/domains/{DOMAIN}/dkim/rotate", token) == refused
    assert api(stack, "GET", f"/api/v1/domains/{DOMAIN}/dns", token) == refused
    assert api(stack, "GET", "/api/v1/backups", token) == (
        403,
        {"error": "only an administrator may do this"},
    )
    status, own = api(stack, "GET", f"/api/v1/domains/{ours}/dns", token)
    assert status == 200 and own["domain"] == ours
    assert active_selector(stack, DOMAIN) == before


def test_each_domain_gets_its_own_report_and_the_report_of_a_domain_no_longer_hosted_goes(
    stack: RunningStack, ours: str
) -> None:
    gone = f"dns:gone-{uuid.uuid4().hex[:6]}.example.test"
    db(stack, "INSERT INTO host_reports (topic, body) VALUES (:'topic', '{}');", topic=gone)
    db(stack, "UPDATE host_reports SET taken = now() - interval '2 hours' WHERE topic = 'dns';")
    ran = stack.cli("jobs", "run").stdout
    assert "dns report published, and its " in ran, ran
    reported = db(stack, "SELECT topic FROM host_reports WHERE topic LIKE 'dns:%' ORDER BY 1;")
    hosted = db(stack, "SELECT 'dns:' || name FROM domains WHERE active ORDER BY 1;")
    assert reported.split() == hosted.split() and f"dns:{ours}" in reported.split()
    index = json.loads(db(stack, "SELECT body FROM host_reports WHERE topic = 'dns';"))
    listed = [line["domain"] for line in index["domains"]]  # the stack's own domain first
    assert sorted(listed) == sorted(topic[4:] for topic in hosted.split()) and listed[0] == DOMAIN
    # Migration 0016's CHECK: the database itself takes no other text for a topic.
    for hostile in ("dns:../../x", f"dns:{ours.upper()}", "dns:a.test'--", "dns:" + "a" * 300):
        refused = stack.compose(
            "exec", "-T", "--user", "postgres", "db", "psql", "--host=/run/postgresql",
            "--username=postgres", "--dbname=mail", "--no-psqlrc", "--set=ON_ERROR_STOP=1",
            f"--set=topic={hostile}", check=False,
            stdin=b"INSERT INTO host_reports (topic, body) VALUES (:'topic', '{}');",
        )  # fmt: skip
        assert refused.returncode != 0 and b"host_reports_topic_check" in refused.stderr
