"""The update's pure parts and its records: order, what changed, the saved tree, refusals.
The whole flow against a running stack is in tests/e2e/test_update.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mailstack.cli.main import app
from mailstack.errors import UsageError
from mailstack.runtime import update
from mailstack.stack import stackfiles as stack_ops
from mailstack.stack.merge import Action
from mailstack.stack.stackdir import FileOutcome, RenderReport, StackDir

runner = CliRunner()


class FakeCompose:
    def __init__(self, services: list[str]) -> None:
        self.services = services

    def images(self) -> dict[str, str]:
        return {name: f"mailstack/{name}:0.1.0" for name in self.services}


class FakeStack:
    def __init__(self, services: list[str]) -> None:
        self.compose = FakeCompose(services)


def test_back_end_first_unknown_services_before_the_mta_which_is_last() -> None:
    stack = FakeStack(["postfix", "front", "db", "newthing", "dovecot", "redis", "rspamd"])
    assert update.recreate_order(stack) == [  # type: ignore[arg-type]
        "db",
        "redis",
        "rspamd",
        "dovecot",
        "front",
        "newthing",
        "postfix",
    ]


def test_services_with_changed_config_come_from_the_render_report() -> None:
    report = RenderReport(
        (
            FileOutcome("config/postfix/main.cf", Action.MERGED),
            FileOutcome("config/dovecot/dovecot.conf", Action.KEEP),
            FileOutcome("config/rspamd/local.d/x.conf", Action.WRITE),
            FileOutcome("compose.yaml", Action.WRITE),
        ),
        (),
        (),
        (),
    )
    assert report.services_with_changed_config() == {"postfix", "rspamd"}


def test_a_downgrade_is_refused_in_one_line() -> None:
    with pytest.raises(UsageError, match=r"older than the 0\.2\.0 that rendered the stack"):
        update._refuse_downgrade("0.2.0", "0.1.0")
    update._refuse_downgrade("0.1.0", "0.2.0")


@pytest.fixture
def stack_dir(tmp_path: Path) -> StackDir:
    config = stack_ops.initial_config("mail.example.test", "example.test")
    stack_ops.init_stack(tmp_path / "stack", config, check_ports=False)
    return StackDir(tmp_path / "stack")


def test_the_saved_tree_restores_files_records_and_removes_new_files(stack_dir: StackDir) -> None:
    records = update.UpdateRecords(stack_dir)
    main_cf = stack_dir.root / "config" / "postfix" / "main.cf"
    edited = main_cf.read_bytes() + b"\n# operator\n"
    main_cf.write_bytes(edited)
    manifest_before = (stack_dir.state_dir / "manifest.json").read_bytes()
    state = update.UpdateState("0.1.0", "0.1.1", "snapshot", "now")
    records.begin(state)
    assert json.loads(records.state_file.read_text())["step"] == "snapshot"
    assert (records.dir.stat().st_mode & 0o777) == 0o700
    # What a new render might do: rewrite a file, add one, change the records.
    main_cf.write_bytes(b"new render\n")
    added = stack_dir.root / "config" / "postfix" / "new.cf"
    added.write_bytes(b"added\n")
    manifest = json.loads(manifest_before)
    manifest["files"]["config/postfix/new.cf"] = "0" * 64
    manifest["version"] = "0.1.1"
    (stack_dir.state_dir / "manifest.json").write_text(json.dumps(manifest))
    records.restore_tree()
    assert main_cf.read_bytes() == edited
    assert not added.exists()
    assert (stack_dir.state_dir / "manifest.json").read_bytes() == manifest_before
    records.clear()
    assert records.load() is None


def test_a_damaged_state_file_is_a_clear_error(stack_dir: StackDir) -> None:
    records = update.UpdateRecords(stack_dir)
    records.dir.mkdir(parents=True)
    records.state_file.write_text("{not json")
    with pytest.raises(update.MailstackError, match=r"state\.json is damaged"):
        records.load()


def test_update_check_without_a_feed_says_so(stack_dir: StackDir) -> None:
    result = runner.invoke(app, ["update", "--check", "--dir", str(stack_dir.root)])
    assert result.exit_code == 0
    assert "update.feed_url is not set" in result.output


def test_update_check_json_names_the_channel(stack_dir: StackDir) -> None:
    result = runner.invoke(
        app, ["update", "--check", "--channel", "beta", "--json", "--dir", str(stack_dir.root)]
    )
    assert result.exit_code == 0
    document = json.loads(result.output)
    assert document["channel"] == "beta" and document["offline"]


@pytest.mark.parametrize(
    "url",
    ["ftp://feed.example/x.json", "http://feed.example/x.json", "https://", "https://a\nb"],
)
def test_a_bad_feed_url_is_refused_in_one_line(stack_dir: StackDir, url: str) -> None:
    config = yaml.safe_load(stack_dir.config_path.read_text())
    config.setdefault("update", {})["feed_url"] = url
    stack_dir.config_path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["update", "--check", "--dir", str(stack_dir.root)])
    assert result.exit_code == 2
    assert "update.feed_url" in result.output
    assert "Traceback" not in result.output
