"""The mail queue, end to end: mail that really waits in Postfix's queue (the sandbox's sink,
where every outbound message goes, is stopped, so delivery defers with Postfix's own reason)
is listed by `mailstack queue list --json`, published by `jobs run` into the `queue` host
report, and shown on /admin/queue in Debian's Chromium; Delete there asks for the password
again, queues a queue.delete host job (audited), and the next `jobs run` deletes it from the
real queue; Retry all, once the sink is back, delivers the rest. A domain administrator gets
403 on the page, its forms and the API. The queue is left as it was found: the sink runs
again and nothing of this module waits in it."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.adminweb import ADMIN_URL, chromium, db, new_admin, sign_in
from tests.e2e.conftest import DOMAIN, RunningStack
from tests.e2e.mail import message, submit, unique_subject, wait_for_sink
from tests.e2e.test_admin_api import api, new_token
from tests.e2e.test_admin_web_directory import alert_or_status, csrf_of, request

pytestmark = pytest.mark.e2e

FAR = "far-away.example"  # outside the stack: in the sandbox, relayed to the sink


def queued(stack: RunningStack) -> list[dict[str, Any]]:
    return list(json.loads(stack.cli("queue", "list", "--json").stdout)["messages"])


def wait_until_deferred(stack: RunningStack, recipients: set[str]) -> dict[str, dict[str, Any]]:
    """{recipient: its message} once each waits in the deferred queue with a reason."""
    deadline = time.monotonic() + 90
    while True:
        found = {
            recipient["address"]: item
            for item in queued(stack)
            for recipient in item["recipients"]
            if item["queue_name"] == "deferred" and recipient["delay_reason"]
        }
        if recipients <= set(found):
            return {recipient: found[recipient] for recipient in recipients}
        assert time.monotonic() < deadline, f"not deferred after 90 s: {queued(stack)}"
        time.sleep(2)


def sink_healthy(stack: RunningStack) -> None:
    deadline = time.monotonic() + 90
    while b"healthy" not in stack.compose("ps", "--format", "{{.Health}}", "sink").stdout:
        assert time.monotonic() < deadline, "the sink is not healthy again after 90 s"
        time.sleep(2)


@pytest.fixture(scope="module")
def waiting(stack: RunningStack) -> Iterator[dict[str, dict[str, Any]]]:
    """Two messages from a mailbox of the stack to the outside, deferred: {recipient: its
    message in `queue list --json`} (the one to delete, the one to retry)."""
    before = {item["queue_id"] for item in queued(stack)}
    sender, password = stack.new_mailbox()
    recipients = {f"{what}-{uuid.uuid4().hex[:8]}@{FAR}" for what in ("delete", "retry")}
    stack.compose("stop", "sink")
    try:
        for recipient in sorted(recipients):
            submit(stack, sender, password, message(sender, recipient, unique_subject(recipient)))
        yield wait_until_deferred(stack, recipients)
    finally:
        stack.compose("start", "sink")
        sink_healthy(stack)
        stack.compose("exec", "-T", "postfix", "postqueue", "-f")  # ends the sink's dead time
        for item in queued(stack):
            mine = {r["address"] for r in item["recipients"]} & recipients
            if mine and item["queue_id"] not in before:
                stack.cli("queue", "delete", item["queue_id"], check=False)


@pytest.fixture
def page(stack: RunningStack, tmp_path: Path) -> Iterator[Any]:
    with chromium(stack, tmp_path / "chromium-profile") as browser_page:
        yield browser_page


def click(page: Any, button: str) -> int:
    with page.expect_navigation(wait_until="domcontentloaded") as navigation:
        page.get_by_role("button", name=button, exact=True).click()
    return int(navigation.value.status)


def test_a_deferred_message_is_listed_shown_deleted_through_a_host_job_and_the_rest_retried(
    stack: RunningStack, waiting: dict[str, dict[str, Any]], page: Any
) -> None:
    doomed, kept = (
        next(item for recipient, item in waiting.items() if recipient.startswith(what))
        for what in ("delete-", "retry-")
    )
    doomed_id, kept_id = doomed["queue_id"], kept["queue_id"]
    # The CLI's listing: Postfix's own fields and reason.
    (reason,) = [r["delay_reason"] for r in doomed["recipients"]]
    assert re.search(r"sink|connect|lookup|[Hh]ost", reason), reason
    assert doomed["sender"].endswith(f"@{DOMAIN}") and doomed["message_size"] > 0
    # The host publishes it; the page shows it, with the report's age. The report is remade
    # once a minute, so an earlier module's `jobs run` may have just made it: "Refresh now"
    # asks for it at this run.
    admin = new_admin(stack)
    sign_in(page, admin)
    page.goto(ADMIN_URL + "queue", wait_until="domcontentloaded")
    assert click(page, "Refresh now") == 202
    ran = stack.cli("jobs", "run").stdout
    assert "queue report published" in ran, ran
    page.goto(ADMIN_URL + "queue", wait_until="domcontentloaded")
    assert re.fullmatch(
        r"Reported by the host as of \d\d:\d\d:\d\d UTC, \d+ s ago .*",
        page.locator("#report-age").inner_text(),
    )
    for item in (doomed, kept):
        row = page.locator(f"#message-{item['queue_id']}").inner_text()
        assert "deferred" in row and item["recipients"][0]["address"] in row, row
        assert item["sender"] in row and reason[:40] in row, row
    assert re.match(
        r"\d+ messages? queued; the oldest", page.locator("#queue-summary").inner_text()
    )
    # Delete is sensitive: with the password typed more than five minutes ago, it is asked.
    db(
        stack,
        "UPDATE web_sessions SET reauth_at = now() - interval '6 minutes' WHERE admin = :'name';",
        name=admin.name,
    )
    click(page, f"Delete {doomed_id}")
    assert page.url.endswith("/admin/confirm?next=/admin/queue")
    page.get_by_label("Password").fill(admin.password)
    click(page, "Confirm")
    assert page.url.endswith("/admin/queue?confirmed=1")
    assert alert_or_status(page).startswith("Password confirmed")
    assert click(page, f"Delete {doomed_id}") == 202
    notice = alert_or_status(page)
    assert re.fullmatch(
        rf"Deletion of {doomed_id}: queued as host job #\d+; the host does it within a minute\.",
        notice,
    ), notice
    logged = json.loads(
        stack.cli("audit", "list", "--actor", f"admin:{admin.name}", "--json").stdout
    )
    assert ("queue.delete", doomed_id) in {(e["action"], e["target"]) for e in logged}, logged
    assert doomed_id in {item["queue_id"] for item in queued(stack)}  # only queued so far
    # The host deletes it from the real queue and writes the report again in the same run.
    ran = stack.cli("jobs", "run").stdout
    assert f"queue.delete {doomed_id}: done" in ran, ran
    now_queued = {item["queue_id"] for item in queued(stack)}
    assert doomed_id not in now_queued and kept_id in now_queued
    page.goto(ADMIN_URL + "queue", wait_until="domcontentloaded")
    assert page.locator(f"#message-{doomed_id}").count() == 0
    assert page.locator(f"#message-{kept_id}").count() == 1
    # The sink back, Retry all delivers the other one now, not at Postfix's next try.
    stack.compose("start", "sink")
    sink_healthy(stack)
    assert click(page, "Retry all") == 202
    assert "Retry of ALL: queued as host job #" in alert_or_status(page)
    ran = stack.cli("jobs", "run").stdout
    assert "queue.retry ALL: done" in ran, ran
    subject_text = kept["recipients"][0]["address"]
    wait_for_sink(stack, subject_text)
    deadline = time.monotonic() + 60
    while kept_id in {item["queue_id"] for item in queued(stack)}:
        assert time.monotonic() < deadline, queued(stack)
        time.sleep(1)
    assert click(page, "Refresh now") == 202
    assert "A fresh queue report is queued as host job #" in alert_or_status(page)
    stack.cli("jobs", "run")
    page.goto(ADMIN_URL + "queue", wait_until="domcontentloaded")
    assert page.locator(f"#message-{kept_id}").count() == 0


def test_a_domain_administrator_gets_403_on_the_queue_page_its_forms_and_the_api(
    stack: RunningStack, page: Any
) -> None:
    admin = new_admin(stack, "--role", "domain-admin", "--domain", DOMAIN)
    sign_in(page, admin)
    answer = page.goto(ADMIN_URL + "queue", wait_until="domcontentloaded")
    assert answer.status == 403
    assert alert_or_status(page) == "only an administrator may do this"
    assert page.get_by_role("button", name=re.compile("^(Delete|Retry)")).count() == 0
    token = csrf_of(page)
    # Posted anyway (forged forms with a valid token): refused, nothing queued.
    for path in ("queue/retry", "queue/delete", "queue/refresh"):
        forged = request(stack, page, "POST", path, {"csrf": token, "id": "3F1A2B4C5D"})
        assert forged.status == 403 and "only an administrator may do this" in forged.text, path
    jobs = stack.cli("jobs", "list", "--json").stdout
    assert f"admin:{admin.name}" not in jobs
    # The API: a token acting for the domain administrator has the admin scope, yet 403.
    theirs = json.loads(
        stack.cli(
            "api", "token", "create", f"q-{uuid.uuid4().hex[:8]}", "--scope", "admin",
            "--by", admin.name, "--json",
        ).stdout
    )["token"]  # fmt: skip
    assert api(stack, "GET", "/api/v1/queue", theirs) == (
        403, {"error": "only an administrator may do this"},
    )  # fmt: skip
    assert api(stack, "DELETE", "/api/v1/queue/3F1A2B4C5D", theirs)[0] == 403
    assert api(stack, "POST", "/api/v1/queue/ALL/retry", theirs)[0] == 403
    # Root's admin token reads it; a hostile id gets the CLI's line.
    _, root = new_token(stack, "admin")
    status, body = api(stack, "GET", "/api/v1/queue", root)
    assert status == 200 and set(body) >= {"taken", "age_seconds", "total", "messages"}, body
    status, body = api(stack, "DELETE", "/api/v1/queue/ALL", root)
    assert status == 400 and body["error"].startswith("ID: 'ALL' is not a Postfix queue id")
    _, read_only = new_token(stack, "read")
    assert api(stack, "GET", "/api/v1/queue", read_only)[0] == 403
