"""A domain's quota on the running stack (issue 16: domain administrators set quotas "within
a domain quota"): an administrator sets it through the API; a domain administrator adding a
mailbox over it in the web admin gets the core's one line and nothing is added, within it
succeeds; the CLI (root) is refused the same way; lowering it below what the mailboxes hold
is refused with the figures; a domain administrator cannot set it (403); parallel adds
cannot both slip under it.

One domain of its own (made on the host before any browser starts: a new domain renews the
certificate the browser pins), removed with everything in it at the end."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.adminweb import (
    ADMIN_URL,
    MAILBOX_PASSWORD,
    Admin,
    chromium,
    db,
    mailbox_listed,
    new_admin,
    sign_in,
)
from tests.e2e.conftest import RunningStack
from tests.e2e.test_admin_api import api, new_token

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


@dataclass(frozen=True)
class World:
    domain: str
    admin: Admin  # a domain administrator of it (signs in once, in the browser test)
    admin_token: str  # scope admin, acting for that domain administrator
    root_token: str  # scope admin, root's


@pytest.fixture(scope="module")
def world(stack: RunningStack) -> Iterator[World]:
    domain = f"dq-{uuid.uuid4().hex[:8]}.example.test"
    stack.cli("domain", "add", domain)
    admin = new_admin(stack, "--role", "domain-admin", "--domain", domain)
    token_name = f"e2e-dq-{uuid.uuid4().hex[:6]}"
    created = stack.cli(
        "api", "token", "create", token_name, "--scope", "admin", "--by", admin.name, "--json"
    )
    root_name, root_token = new_token(stack, "admin")
    try:
        yield World(domain, admin, json.loads(created.stdout)["token"], root_token)
    finally:
        stack.cli("domain", "remove", domain, "--force", check=False)
        stack.cli("admin", "remove", admin.name, check=False)
        for name in (token_name, root_name):
            stack.cli("api", "token", "revoke", name, check=False)


def set_quota(stack: RunningStack, world: World, quota: str) -> tuple[int, Any]:
    return api(
        stack, "PATCH", f"/api/v1/domains/{world.domain}", world.root_token, {"quota": quota}
    )


def mailboxes_of(stack: RunningStack, domain: str) -> dict[str, int]:
    listed = json.loads(stack.cli("mailbox", "list", "--domain", domain, "--json").stdout)
    return {mailbox["address"]: mailbox["quota_bytes"] for mailbox in listed}


def add_on_host(stack: RunningStack, address: str, *options: str) -> Any:
    return stack.cli(
        "mailbox", "add", address, *options, "--password-stdin",
        stdin=MAILBOX_PASSWORD + "\n", check=False,
    )  # fmt: skip


def test_an_administrator_sets_the_domain_quota_through_the_api_and_a_domain_administrator_reads_it(
    stack: RunningStack, world: World
) -> None:
    status, changed = set_quota(stack, world, "10M")
    assert status == 200, changed
    assert (changed["name"], changed["quota_bytes"]) == (world.domain, 10 * MIB)
    # The domain administrator reads it (list and one domain), with what is allocated.
    status, one = api(stack, "GET", f"/api/v1/domains/{world.domain}", world.admin_token)
    assert status == 200
    assert (one["quota_bytes"], one["allocated_bytes"]) == (10 * MIB, 0)
    status, listed = api(stack, "GET", "/api/v1/domains", world.admin_token)
    assert [(d["name"], d["quota_bytes"]) for d in listed["domains"]] == [(world.domain, 10 * MIB)]
    # A bad value is the one line, naming the key, and changes nothing.
    assert set_quota(stack, world, "lots") == (
        400,
        {"error": "quota: 'lots' is not a size (a number with an optional K, M, G or T, "
         "e.g. 2G), or none"},
    )  # fmt: skip
    shown = stack.cli("domain", "quota", world.domain).stdout
    assert f"{world.domain}: domain quota 10M" in shown
    # The audit log names the token's change.
    audit = stack.cli("audit", "list", "--json").stdout
    assert any(
        e["action"] == "domain.quota" and e["target"] == world.domain for e in json.loads(audit)
    )


def test_a_domain_administrator_cannot_set_the_domain_quota(
    stack: RunningStack, world: World
) -> None:
    assert set_quota(stack, world, "10M")[0] == 200
    answer = api(
        stack, "PATCH", f"/api/v1/domains/{world.domain}", world.admin_token, {"quota": "1T"}
    )
    assert answer == (403, {"error": "only an administrator may do this"})
    _, one = api(stack, "GET", f"/api/v1/domains/{world.domain}", world.root_token)
    assert one["quota_bytes"] == 10 * MIB


def test_a_domain_administrator_adding_a_mailbox_over_the_domain_quota_in_the_page_gets_the_line_and_nothing_is_added(
    stack: RunningStack, world: World, tmp_path: Path
) -> None:
    assert set_quota(stack, world, "10M")[0] == 200
    first, over, default, within = (
        f"{name}-{uuid.uuid4().hex[:6]}@{world.domain}" for name in ("first", "over", "dflt", "in")
    )
    with chromium(stack, tmp_path / "profile") as page:
        sign_in(page, world.admin)
        assert "Added mailbox" in add_in_form(page, first, "4M")
        line = add_in_form(page, over, "8M")
        assert line == (
            f"quota: 8M would give {world.domain}'s mailboxes 12M in all, over its domain "
            "quota of 10M (6M left); nothing was changed"
        )
        # Without a quota the stack's default (2G) does not fit either: the same line, naming it.
        line = add_in_form(page, default, "")
        assert line.startswith("quota: the stack's default of ")
        assert "(mailboxes.default_quota) would give" in line
        assert line.endswith("over its domain quota of 10M (6M left); nothing was changed")
        assert "Added mailbox" in add_in_form(page, within, "6M")
        # A quota change on the mailbox's page is held to it too.
        page.goto(ADMIN_URL + f"mailbox?address={first}", wait_until="domcontentloaded")
        page.get_by_label("New quota").fill("5M")
        with page.expect_navigation(wait_until="domcontentloaded") as navigation:
            page.get_by_role("button", name="Save changes").click()
        assert navigation.value.status == 409
        assert page.locator("[role=alert]").first.inner_text() == (
            f"quota: 5M would give {world.domain}'s mailboxes 11M in all, over its domain "
            f"quota of 10M (0B left, at most 4M for this mailbox); nothing was changed"
        )
        # The domains page shows the quota and what is allocated, without the admin's form.
        page.goto(ADMIN_URL + "domains", wait_until="domcontentloaded")
        row = page.locator("tr", has_text=world.domain)
        assert row.locator("td.quota").inner_text().strip() == "10M"
        assert row.locator("td.allocated").inner_text().strip() == "10M"
        assert page.locator("form[action='/admin/domains/quota']").count() == 0
    assert mailboxes_of(stack, world.domain) == {first: 4 * MIB, within: 6 * MIB}
    for address in (first, within):
        stack.cli("mailbox", "remove", address)


def test_the_cli_is_refused_the_same_way_and_lowering_below_the_allocation_is_refused(
    stack: RunningStack, world: World
) -> None:
    assert set_quota(stack, world, "10M")[0] == 200
    kept = f"kept-{uuid.uuid4().hex[:6]}@{world.domain}"
    assert add_on_host(stack, kept, "--quota", "7M").returncode == 0
    over = f"over-{uuid.uuid4().hex[:6]}@{world.domain}"
    refused = add_on_host(stack, over, "--quota", "4M")
    assert refused.returncode == 2
    assert (
        f"quota: 4M would give {world.domain}'s mailboxes 11M in all, over its domain quota "
        "of 10M (3M left); nothing was changed"
    ) in refused.stderr
    unlimited = add_on_host(stack, over, "--quota", "0")
    assert unlimited.returncode == 2
    assert f"quota: none, but a mailbox of {world.domain} needs a quota" in unlimited.stderr
    assert stack.cli("mailbox", "quota", kept, "0", check=False).returncode == 2
    # Lowering the domain quota below the 7M allocated: refused with the figures, on the
    # host and through the API; raising it is what the line says to do.
    lowered = stack.cli("domain", "quota", world.domain, "5M", check=False)
    assert lowered.returncode == 2
    assert (
        f"quota: 5M is below the 7M {world.domain}'s mailboxes already hold; give at least "
        "7M, or lower their quotas first; nothing was changed"
    ) in lowered.stderr
    status, answer = set_quota(stack, world, "6M")
    assert status == 409 and answer["error"].startswith("quota: 6M is below the 7M")
    listed = stack.cli("domain", "list").stdout
    assert f"{world.domain}  1 mailbox(es), quota 10M, 7M allocated" in listed
    assert mailboxes_of(stack, world.domain) == {kept: 7 * MIB}
    stack.cli("mailbox", "remove", kept)


def test_parallel_adds_cannot_both_slip_under_the_domain_quota(
    stack: RunningStack, world: World
) -> None:
    assert set_quota(stack, world, "10M")[0] == 200
    addresses = [f"race{n}-{uuid.uuid4().hex[:6]}@{world.domain}" for n in range(4)]

    def add(address: str) -> int:
        return int(add_on_host(stack, address, "--quota", "6M").returncode)

    with ThreadPoolExecutor(len(addresses)) as pool:
        codes = list(pool.map(add, addresses))
    assert sorted(codes) == [0, 2, 2, 2], codes
    added = mailboxes_of(stack, world.domain)
    assert list(added.values()) == [6 * MIB]
    for address in added:
        assert mailbox_listed(stack, address)
        stack.cli("mailbox", "remove", address)


def test_an_add_waiting_for_the_domains_lock_counts_the_mailbox_added_meanwhile(
    stack: RunningStack, world: World
) -> None:
    """The lock comes before the sum: another transaction holds the domain's row and adds a
    6M mailbox; `mailbox add --quota 6M` waits for it, and its sum (a new snapshot) sees that
    mailbox, so it is refused. Without the lock, or with the lock inside the summing
    statement (a snapshot from before the wait), both would slip under the 10M."""
    assert set_quota(stack, world, "10M")[0] == 200
    holder = f"holder-{uuid.uuid4().hex[:6]}@{world.domain}"
    waiting = f"waiting-{uuid.uuid4().hex[:6]}@{world.domain}"
    held = threading.Thread(
        target=db,
        args=(
            stack,
            "BEGIN;\n"
            "SELECT name FROM domains WHERE name = :'domain' FOR UPDATE;\n"
            "INSERT INTO mailboxes (address, local_part, domain, password, quota_bytes) "
            "VALUES (:'address', split_part(:'address', '@', 1), :'domain', '{PLAIN}x', "
            f"{6 * MIB});\n"
            "SELECT pg_sleep(4);\nCOMMIT;\n",
        ),
        kwargs={"domain": world.domain, "address": holder},
    )
    held.start()
    deadline = time.monotonic() + 30
    while "1" not in db(
        stack, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep';"
    ):
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.2)
    started = time.monotonic()
    refused = add_on_host(stack, waiting, "--quota", "6M")
    waited = time.monotonic() - started
    held.join()
    assert refused.returncode == 2, refused.stdout
    assert (
        f"quota: 6M would give {world.domain}'s mailboxes 12M in all, over its domain quota "
        "of 10M (4M left); nothing was changed"
    ) in refused.stderr
    assert waited > 1  # it did wait for the holder's commit
    assert mailboxes_of(stack, world.domain) == {holder: 6 * MIB}
    stack.cli("mailbox", "remove", holder)


def test_an_administrator_sets_the_domain_quota_on_the_domains_page_and_a_post_without_csrf_changes_nothing(
    stack: RunningStack, world: World, tmp_path: Path
) -> None:
    admin = new_admin(stack)
    with chromium(stack, tmp_path / "profile") as page:
        sign_in(page, admin)
        page.goto(ADMIN_URL + "domains", wait_until="domcontentloaded")
        page.get_by_role("textbox", name=f"Quota of {world.domain}").fill("20M")
        with page.expect_navigation(wait_until="domcontentloaded"):
            page.get_by_role("button", name=f"Set the quota of {world.domain}").click()
        assert page.locator("[role=status]").first.inner_text() == f"Quota of {world.domain}: 20M."
        row = page.locator("tr", has_text=world.domain)
        assert row.locator("td.quota").inner_text().strip().startswith("20M")
        # A bad value: the one line, nothing changed.
        page.get_by_role("textbox", name=f"Quota of {world.domain}").fill("lots")
        with page.expect_navigation(wait_until="domcontentloaded") as navigation:
            page.get_by_role("button", name=f"Set the quota of {world.domain}").click()
        assert navigation.value.status == 400
        assert page.locator("[role=alert]").first.inner_text().startswith("quota: 'lots'")
        # Without the form's CSRF token: refused, nothing changed.
        row = page.locator("tr", has_text=world.domain)
        row.locator("td.quota input[name=csrf]").evaluate("element => element.remove()")
        page.get_by_role("textbox", name=f"Quota of {world.domain}").fill("none")
        with page.expect_navigation(wait_until="domcontentloaded") as navigation:
            page.get_by_role("button", name=f"Set the quota of {world.domain}").click()
        assert navigation.value.status == 403
    _, one = api(stack, "GET", f"/api/v1/domains/{world.domain}", world.root_token)
    assert one["quota_bytes"] == 20 * MIB
    stack.cli("admin", "remove", admin.name)


def test_an_accounts_import_over_the_domain_quota_is_refused_and_changes_nothing(
    stack: RunningStack, world: World, tmp_path: Path
) -> None:
    assert set_quota(stack, world, "10M")[0] == 200
    kept = f"import-{uuid.uuid4().hex[:6]}@{world.domain}"
    assert add_on_host(stack, kept, "--quota", "4M").returncode == 0
    exported = tmp_path / "accounts.yaml"
    stack.cli("accounts", "export", str(exported))
    document = yaml.safe_load(exported.read_text())
    for mailbox in document["mailboxes"]:
        if mailbox["address"] == kept:
            mailbox["quota"] = "20M"
    exported.write_text(yaml.safe_dump(document))
    refused = stack.cli("accounts", "import", str(exported), check=False)
    assert refused.returncode == 2, refused.stdout
    assert (
        f"mailboxes: its mailboxes' quotas come to 20M, over {world.domain}'s domain quota "
        "of 10M; nothing was changed"
    ) in refused.stderr
    assert mailboxes_of(stack, world.domain) == {kept: 4 * MIB}
    stack.cli("mailbox", "remove", kept)


# --- helpers ---------------------------------------------------------------------------------


def add_in_form(page: Any, address: str, quota: str) -> str:
    """The Mailboxes page's add form with a quota; the alert or status line it answers with."""
    page.goto(ADMIN_URL + "mailboxes", wait_until="domcontentloaded")
    page.get_by_label("Address").fill(address)
    page.get_by_label("Password").fill(MAILBOX_PASSWORD)
    page.get_by_label("Quota").fill(quota)
    with page.expect_navigation(wait_until="domcontentloaded"):
        page.get_by_role("button", name="Add mailbox").click()
    return str(page.locator("[role=alert], [role=status]").first.inner_text()).strip()
