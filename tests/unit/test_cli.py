"""The command line, through Typer's CliRunner: init, render, resolve and error paths."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailstack.cli.main import app
from mailstack.stack.secrets import SECRET_NAMES

runner = CliRunner()


def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.output


def init(root: Path, *extra: str) -> tuple[int, str]:
    return invoke(
        "init",
        "--non-interactive",
        "--hostname",
        "mail.example.test",
        "--domain",
        "example.test",
        "--dir",
        str(root),
        *extra,
    )


def test_version() -> None:
    code, text = invoke("--version")
    assert code == 0 and text.startswith("mailstack ")


def test_init_creates_config_secrets_and_render(stack_root: Path) -> None:
    code, text = init(stack_root)
    assert code == 0, text
    assert (stack_root / "mailstack.yaml").is_file()
    assert (stack_root / "compose.yaml").is_file()
    assert (stack_root / ".mailstack" / "manifest.json").is_file()
    for service in ("postfix", "dovecot", "rspamd", "front", "resolver"):
        assert (stack_root / "overrides" / service).is_dir()
    secrets = stack_root / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for name in SECRET_NAMES:
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600
        assert len((secrets / name).read_text().strip()) >= 43  # 256 bits, url-safe base64
    assert stat.S_IMODE((stack_root / "tls" / "key.pem").stat().st_mode) == 0o600


def test_no_secret_appears_in_any_output(stack_root: Path) -> None:
    _, init_text = init(stack_root)
    _, render_text = invoke("render", "--dir", str(stack_root))
    values = [p.read_text().strip() for p in (stack_root / "secrets").iterdir() if p.is_file()]
    generated = [
        p.read_text(errors="replace")
        for p in stack_root.rglob("*")
        if p.is_file() and "secrets" not in p.parts and p.suffix != ".pem"
    ]
    for value in values:
        assert value not in init_text and value not in render_text
        assert not any(value in text for text in generated)


def test_init_refuses_existing_stack_without_force(stack_root: Path) -> None:
    init(stack_root)
    before = (stack_root / "mailstack.yaml").read_bytes()
    code, text = init(stack_root)
    assert code == 2
    assert "already holds a mailstack stack" in text and "--force" in text
    assert (stack_root / "mailstack.yaml").read_bytes() == before


def test_init_force_keeps_dated_backup_and_secrets(stack_root: Path) -> None:
    init(stack_root)
    secret = (stack_root / "secrets" / "db_admin_password").read_text()
    (stack_root / "mailstack.yaml").write_text(
        (stack_root / "mailstack.yaml").read_text() + "# my note\n"
    )
    code, text = init(stack_root, "--force")
    assert code == 0, text
    backups = list(stack_root.glob("mailstack.yaml.*.bak"))
    assert len(backups) == 1 and "# my note" in backups[0].read_text()
    assert (stack_root / "secrets" / "db_admin_password").read_text() == secret


def test_non_interactive_init_names_what_is_missing(stack_root: Path) -> None:
    code, text = invoke(
        "init", "--non-interactive", "--domain", "example.test", "--dir", str(stack_root)
    )
    assert code == 2
    assert "--hostname: is required with --non-interactive" in text
    assert not stack_root.exists()


def test_interactive_init_asks_again_on_a_bad_answer(stack_root: Path) -> None:
    code, text = invoke(
        "init",
        "--dir",
        str(stack_root),
        input="bad host\nmail.example.test\nexample.test\n",
    )
    assert code == 0, text
    assert "--hostname: 'bad host'" in text
    assert "hostname: mail.example.test" in (stack_root / "mailstack.yaml").read_text()


@pytest.mark.parametrize(
    "hostile", ["mail.example.test\nrelayhost=evil", "mail;example.test", "{{x}}.example.test"]
)
def test_init_refuses_hostile_hostname_in_one_line(stack_root: Path, hostile: str) -> None:
    code, text = invoke(
        "init",
        "--non-interactive",
        "--hostname",
        hostile,
        "--domain",
        "example.test",
        "--dir",
        str(stack_root),
    )
    assert code == 2
    assert text.startswith("error: --hostname: ")
    assert "Traceback" not in text
    assert not (stack_root / "mailstack.yaml").exists()


def test_edit_survives_render(stack_root: Path) -> None:
    init(stack_root)
    compose = stack_root / "compose.yaml"
    edited = compose.read_text().replace('max-file: "3"', 'max-file: "5"')
    compose.write_text(edited)
    code, text = invoke("render", "--dir", str(stack_root))
    assert code == 0, text
    assert compose.read_text() == edited
    assert "kept your edits to compose.yaml" in text


def test_config_change_is_merged_with_edit(stack_root: Path) -> None:
    init(stack_root)
    compose = stack_root / "compose.yaml"
    compose.write_text(compose.read_text().replace('max-file: "3"', 'max-file: "5"'))
    config = stack_root / "mailstack.yaml"
    config.write_text(config.read_text().replace("timezone: UTC", "timezone: Europe/Berlin"))
    code, text = invoke("render", "--dir", str(stack_root))
    assert code == 0, text
    merged = compose.read_text()
    assert 'max-file: "5"' in merged and '"Europe/Berlin"' in merged


def test_conflict_exits_non_zero_and_resolve_clears_it(stack_root: Path) -> None:
    init(stack_root)
    compose = stack_root / "compose.yaml"
    mine = compose.read_text().replace('TZ: "UTC"', 'TZ: "Asia/Tokyo"')
    compose.write_text(mine)
    config = stack_root / "mailstack.yaml"
    config.write_text(config.read_text().replace("timezone: UTC", "timezone: Europe/Berlin"))
    code, text = invoke("render", "--dir", str(stack_root))
    assert code == 2
    assert "conflict:" in text and "compose.yaml.mailstack-merge" in text
    assert "mailstack resolve compose.yaml" in text
    assert compose.read_text() == mine
    code, text = invoke("up", "--dir", str(stack_root))
    assert code == 1 and "unresolved render conflicts in: compose.yaml" in text
    code, text = invoke("resolve", "compose.yaml", "--dir", str(stack_root))
    assert code == 0, text
    code, text = invoke("render", "--dir", str(stack_root))
    assert code == 0 and compose.read_text() == mine


def test_bad_config_value_is_one_line_exit_2(stack_root: Path) -> None:
    init(stack_root)
    config = stack_root / "mailstack.yaml"
    config.write_text(config.read_text().replace("submission: 587", "submission: 70000"))
    before = (stack_root / "compose.yaml").read_bytes()
    code, text = invoke("render", "--dir", str(stack_root))
    assert code == 2
    assert text.strip() == (
        "error: mailstack.yaml: network.ports.submission: 70000 is not a port (1–65535)"
    )
    assert (stack_root / "compose.yaml").read_bytes() == before


def test_command_on_missing_stack_says_how_to_start(tmp_path: Path) -> None:
    code, text = invoke("status", "--dir", str(tmp_path))
    assert code == 2
    assert "is not a mailstack directory" in text and "mailstack init" in text


def test_mailbox_add_refuses_bad_address_before_touching_anything(stack_root: Path) -> None:
    init(stack_root)
    code, text = invoke(
        "mailbox",
        "add",
        "not an address",
        "--password-stdin",
        "--dir",
        str(stack_root),
        input="Correct-horse-42-battery\n",
    )
    assert code == 2 and text.startswith("error: ADDRESS: ")


def test_mailbox_add_refuses_weak_password(stack_root: Path) -> None:
    init(stack_root)
    code, text = invoke(
        "mailbox",
        "add",
        "alice@example.test",
        "--password-stdin",
        "--dir",
        str(stack_root),
        input="short\n",
    )
    assert code == 2 and "password" in text.lower()


def test_unknown_option_is_usage_error() -> None:
    code, _ = invoke("render", "--no-such-option")
    assert code == 2


def _command_paths() -> list[tuple[str, ...]]:
    """Every command and group of the CLI, as the words an operator types."""
    import typer.main

    paths: list[tuple[str, ...]] = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():  # a group's subcommands
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "mailstack")
def test_every_help_page_renders(path: tuple[str, ...]) -> None:
    # Help text is rich markup: "[/prefix]" in a usage hint once crashed `restore --help`.
    code, text = invoke(*path, "--help")
    assert code == 0, text
    assert "Usage:" in text and "unexpected error" not in text
