"""`mailstack update` between two real versions of the project, on its own running stack.

The old version is this checkout; the new one is a copy of it with a version bump, a changed
Postfix template, a changed postfix image and a schema migration. A third copy breaks the
dovecot image's healthcheck. Each runs as `python -m mailstack` from its own tree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import DOMAIN, HOSTNAME, SLOT, mailstack, side_stack_ports
from tests.e2e.sidestack import PASSWORD, SideStack, copy_checkout
from tests.e2e.steady import SteadySender

REPO = Path(__file__).resolve().parents[2]
OLD_VERSION = "0.1.0"
NEW_VERSION = "0.1.1"
PROJECT = f"mailstack-e2e-update{SLOT or ''}"
UPDATE_PORTS = side_stack_ports(shift=5, side=1)  # beside the session stack's
SUBNETS = (
    ("172.29.92.0/24", "172.29.93.0/24")
    if SLOT == 0
    else (f"172.31.{2 * SLOT}.0/24", f"172.31.{2 * SLOT + 1}.0/24")
)
MAIN_CF = "config/postfix/main.cf"
TEMPLATE_LINE = "smtpd_error_sleep_time = 1s"
NEW_TEMPLATE_LINE = "smtpd_error_sleep_time = 2s"


def _version_tree(root: Path, version: str, *, broken_dovecot: bool = False) -> Path:
    """A copy of the project at `version`, changed the way a release changes things."""
    copy_checkout(root)
    init = root / "mailstack" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{OLD_VERSION}"', f'"{version}"'))
    template = root / "templates" / MAIN_CF
    assert TEMPLATE_LINE in template.read_text()
    template.write_text(template.read_text().replace(TEMPLATE_LINE, NEW_TEMPLATE_LINE))
    with (root / "compose" / "postfix" / "Dockerfile").open("a") as dockerfile:
        dockerfile.write(f'\nLABEL org.mailstack.test-release="{version}"\n')
    (root / "mailstack" / "migrations" / "0099_update_test.sql").write_text(
        "CREATE TABLE update_test (note text NOT NULL);\n"
        "INSERT INTO update_test VALUES ('added by the update');\n"
    )
    if broken_dovecot:
        healthcheck = root / "compose" / "dovecot" / "healthcheck"
        healthcheck.unlink()
        healthcheck.write_text(
            "#!/bin/sh\n# A release whose dovecot never becomes healthy.\nexit 1\n"
        )
        healthcheck.chmod(0o755)
    return root


@dataclass
class UpdateStack(SideStack):
    new_tree: Path = Path()
    broken_tree: Path = Path()

    def run(
        self, tree: Path, *args: str, timeout: float = 1200
    ) -> subprocess.CompletedProcess[str]:
        """`python -m mailstack ARGS --dir ROOT` from a version tree (its package wins)."""
        return subprocess.run(
            [sys.executable, "-m", "mailstack", *args, "--dir", str(self.root)],
            cwd=tree, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def manifest_version(self) -> str:
        return str(json.loads((self.root / ".mailstack" / "manifest.json").read_text())["version"])

    def postconf(self, name: str) -> str:
        return self.compose("exec", "-T", "postfix", "postconf", "-h", name).stdout.strip()


@pytest.fixture(scope="module")
def update_stack(
    tmp_path_factory: pytest.TempPathFactory, egress_guard: None
) -> Iterator[UpdateStack]:
    base = tmp_path_factory.mktemp("update")
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
    config["network"]["ports"] = dict(UPDATE_PORTS)
    config["backup"]["target"] = str(base / "backups")
    # The steady sender below is one client sending five messages a second.
    limits = config.setdefault("policy", {}).setdefault("rate_limits", {})
    limits.update(client_connections_per_minute=0, client_ip_burst=0)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    stack = UpdateStack(
        root,
        PROJECT,
        UPDATE_PORTS,
        new_tree=_version_tree(base / "new", NEW_VERSION),
        broken_tree=_version_tree(base / "broken", NEW_VERSION, broken_dovecot=True),
    )
    mailstack("render", "--dir", str(root))
    stack.compose("down", "--volumes", "--remove-orphans", check=False)
    try:
        mailstack("up", "--dir", str(root), "--timeout", "400")
        stack.mailbox = f"steady-{uuid.uuid4().hex[:8]}@{DOMAIN}"
        mailstack("mailbox", "add", stack.mailbox, "--password-stdin", "--dir", str(root),
                  stdin=PASSWORD + "\n")  # fmt: skip
        yield stack
    finally:
        if sys.exc_info()[0] is not None:
            sys.stderr.write(
                stack.compose("logs", "--no-color", "--tail", "40", check=False).stdout
            )
        stack.compose("down", "--volumes", "--remove-orphans", check=False)
        # restic's cache for the pre-update snapshot is a volume of its own, outside Compose.
        subprocess.run(
            ["docker", "volume", "rm", "--force", f"{PROJECT}-backup-cache"],
            capture_output=True, check=False,
        )  # fmt: skip


def test_a_conflicting_edit_stops_the_update_before_any_restart(update_stack: UpdateStack) -> None:
    main_cf = update_stack.root / MAIN_CF
    original = main_cf.read_bytes()
    edited = original.replace(TEMPLATE_LINE.encode(), b"smtpd_error_sleep_time = 3s")
    main_cf.write_bytes(edited)
    before = update_stack.started_at()
    try:
        result = update_stack.run(update_stack.new_tree, "update", "--skip-backup")
        assert result.returncode == 2, result.stdout + result.stderr
        assert MAIN_CF in result.stderr and "before touching the running stack" in result.stderr
        assert "Traceback" not in result.stderr
        assert main_cf.read_bytes() == edited  # the operator's file, untouched
        assert (update_stack.root / (MAIN_CF + ".mailstack-merge")).exists()
        assert update_stack.started_at() == before  # nothing restarted
        assert update_stack.manifest_version() == OLD_VERSION
        # Postfix copies its config at start: still the value from before, nothing reloaded.
        assert update_stack.postconf("smtpd_error_sleep_time") == "1s"
        assert not (update_stack.root / ".mailstack" / "update").exists()
    finally:
        main_cf.write_bytes(original)
        (update_stack.root / (MAIN_CF + ".mailstack-merge")).unlink(missing_ok=True)


def test_b_a_new_image_that_never_gets_healthy_is_rolled_back(update_stack: UpdateStack) -> None:
    old_dovecot = update_stack.image_of("dovecot")
    result = update_stack.run(
        update_stack.broken_tree, "update", "--skip-backup", "--health-timeout", "40"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "dovecot" in output and "rolled back" in output, output
    assert update_stack.manifest_version() == OLD_VERSION
    assert update_stack.image_of("dovecot") == old_dovecot
    assert update_stack.postconf("smtpd_error_sleep_time") == "1s"
    status = update_stack.run(REPO, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    update_stack.send("after rollback")
    update_stack.wait_for(["after rollback"])


def test_c_an_update_killed_midway_converges_and_loses_no_mail(update_stack: UpdateStack) -> None:
    main_cf = update_stack.root / MAIN_CF
    main_cf.write_text(
        main_cf.read_text() + "\n# the operator's own line\ndelay_warning_time = 4h\n"
    )
    started = update_stack.started_at()
    old_postfix = update_stack.image_of("postfix")
    sender = SteadySender(update_stack.send)
    sender.start()
    try:
        state_file = update_stack.root / ".mailstack" / "update" / "state.json"
        first = subprocess.Popen(
            [sys.executable, "-m", "mailstack", "update", "--dir", str(update_stack.root)],
            cwd=update_stack.new_tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and first.poll() is None:
            if state_file.exists() and '"step": "recreate"' in state_file.read_text():
                break
            time.sleep(0.2)
        assert first.poll() is None, "the update ended before it could be killed"
        os.killpg(first.pid, signal.SIGKILL)  # power loss: no cleanup of any kind
        first.wait()
        assert state_file.exists()

        result = update_stack.run(update_stack.new_tree, "update")
        output = result.stdout + result.stderr
        if result.returncode != 0:  # the daemons' side of the story
            logs = update_stack.compose(
                "logs", "--no-color", "--tail", "80", "postfix", "db", check=False
            )
            output += logs.stdout
        assert result.returncode == 0, output
        assert "rolled back the interrupted update" in output, output
        assert f"updated from {OLD_VERSION} to {NEW_VERSION}" in output, output
        assert "mail round trip" in output, output
        print(output)
    finally:
        sender.finish()
    assert update_stack.manifest_version() == NEW_VERSION
    # The template's change and the operator's line are both in force.
    assert update_stack.postconf("smtpd_error_sleep_time") == "2s"
    assert update_stack.postconf("delay_warning_time") == "4h"
    # The new postfix image, as recorded in .env (its tag follows its context and packages).
    recorded = (update_stack.root / ".env").read_text()
    assert f"MAILSTACK_IMAGE_POSTFIX={update_stack.image_of('postfix')}\n" in recorded
    assert update_stack.image_of("postfix") != old_postfix
    # Image tags follow each build context: what the release left alone kept running.
    after = update_stack.started_at()
    for service in ("db", "dovecot", "redis", "resolver"):
        name = f"/{PROJECT}-{service}-1"
        assert after[name] == started[name], f"{service} was restarted by the update"
    migrated = update_stack.compose(
        "exec", "-T", "--user", "postgres", "db", "psql", "-tA", "-d", "mail",
        "-c", "SELECT note FROM update_test",
    )  # fmt: skip
    assert migrated.stdout.strip() == "added by the update"
    snapshots = update_stack.run(update_stack.new_tree, "backup", "list", "--json")
    assert f"pre-update-{OLD_VERSION}-{NEW_VERSION}" in snapshots.stdout, snapshots.stdout
    # Every message the steady sender handed over is in the mailbox exactly once.
    assert not sender.refused, sender.refused  # nothing refused with a 5xx meanwhile
    assert len(sender.sent) > 20
    received = update_stack.wait_for(sender.sent)
    duplicates = sorted({s for s in received if received.count(s) > 1})
    assert duplicates == [], duplicates
    print(f"steady sender: {len(sender.sent)} messages, {sender.retries} retries")
