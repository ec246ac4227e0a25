"""Sieve: script checks and sievec's errors as one line, `mailbox sieve show|set` through the CLI,
and the Sieve, ManageSieve and quota settings that reach the generated files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mailstack.accounts import directory, sieve
from mailstack.cli.main import app
from mailstack.errors import ConfigError, ExternalCommandFailed, UsageError
from mailstack.stack.config import validate_config
from mailstack.stack.render import RenderInputs, render_stack
from mailstack.stack.stackdir import Stack
from tests.conftest import REFERENCE
from tests.unit.fakes import Call, FakeContainers

runner = CliRunner()

GOOD = (
    'require ["fileinto"];\nif header :contains "Subject" "receipt" {\n  fileinto "Receipts";\n}\n'
)
SIEVEC_OUTPUT = (
    "script: line 3: error: unknown command 'fileinot' (only reported once at first occurrence).\n"
    "script: line 5: error: unexpected end of script.\n"
    "script: error: validation failed.\n"
    "sievec: Fatal: failed to compile sieve script '/tmp/sieve-check.Ab12/script.sieve'\n"
)
DOVEADM_OUTPUT = (
    "doveadm(a@example.test): Error: sieve: mailstack: line 4: unknown command 'foo' "
    "(only reported once at first occurrence)\n"
    "doveadm(a@example.test): Error: sieve: mailstack: validation failed\n"
)


@dataclass
class SieveMailbox:
    """One mailbox's Sieve scripts as the dovecot container keeps them; `answer` is how the
    container answers doveadm and sieve-check (tests.unit.fakes.FakeContainers)."""

    scripts: dict[str, str] = field(default_factory=dict)
    active: str | None = None
    compile_output: str | None = None  # sieve-check fails with this output when set
    known_user: bool = True
    containers: FakeContainers = field(default_factory=FakeContainers)

    def __post_init__(self) -> None:
        self.containers.by_marker = [("", self.answer)]

    def answer(self, call: Call) -> bytes | Exception:
        assert call.service == "dovecot"
        argv = call.argv
        if argv == [sieve.CHECKER]:
            if self.compile_output is not None:
                return ExternalCommandFailed("docker compose exec (exit 89)", self.compile_output)
            return b""
        if not self.known_user:
            return ExternalCommandFailed(
                "docker compose exec (exit 67)", "doveadm(x): Error: User doesn't exist"
            )
        if argv[:4] == ["doveadm", "-f", "json", "sieve"] and argv[4] == "list":
            rows = [
                {"script": name, "active": "ACTIVE" if name == self.active else ""}
                for name in self.scripts
            ]
            return json.dumps(rows).encode()
        if argv[:4] == ["doveadm", "-f", "json", "sieve"] and argv[4] == "get":
            return json.dumps([{"sieve script": self.scripts[argv[-1]]}]).encode()
        if argv[:4] == ["doveadm", "sieve", "put", "-a"]:
            name = argv[-1]
            self.scripts[name] = call.stdin
            self.active = name
            return b""
        raise AssertionError(f"unexpected command {argv}")

    @property
    def calls(self) -> list[tuple[list[str], bytes]]:
        return [(call.argv, call.stdin.encode()) for call in self.containers.calls]

    def commands(self) -> list[list[str]]:
        return [call.argv for call in self.containers.calls]


@pytest.fixture
def dovecot(monkeypatch: pytest.MonkeyPatch) -> SieveMailbox:
    mailbox = SieveMailbox()
    stack = SimpleNamespace(compose=mailbox.containers, config=validate_config(REFERENCE))
    monkeypatch.setattr(Stack, "load", lambda root: stack)
    return mailbox


def invoke(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stdout, result.stderr


# --- sievec's and doveadm's errors ---------------------------------------------------------------


def test_sievec_errors_are_read_with_their_line_numbers() -> None:
    errors = sieve.compile_errors(SIEVEC_OUTPUT)
    assert errors == [
        sieve.CompileError(3, "unknown command 'fileinot'"),
        sieve.CompileError(5, "unexpected end of script"),
    ]


def test_doveadm_errors_are_read_the_same_way() -> None:
    assert sieve.compile_errors(DOVEADM_OUTPUT) == [sieve.CompileError(4, "unknown command 'foo'")]


def test_an_invalid_script_is_one_line_naming_file_and_line() -> None:
    error = sieve.invalid_script("filters.sieve", sieve.compile_errors(SIEVEC_OUTPUT))
    assert error.message == (
        "FILE: filters.sieve:3: unknown command 'fileinot'; nothing was changed"
    )
    assert error.hint == "1 more error(s) after this one"
    assert "\n" not in error.message


def test_an_error_without_a_line_is_still_named() -> None:
    errors = sieve.compile_errors("sievec: Error: script is too large\n")
    error = sieve.invalid_script("stdin", errors)
    assert error.message == "FILE: stdin: sievec: Error: script is too large; nothing was changed"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "is empty"),
        (b"  \n\n", "is empty"),
        (b"keep;\n" + b"#" * sieve.MAX_SCRIPT_BYTES, "is too large"),
        (b'fileinto "Sp\xe4m";\n', "is not UTF-8 text (byte 13)"),
        (b"keep;\0\n", "contains a NUL byte"),
    ],
    ids=["empty", "blank", "too-large", "latin-1", "nul"],
)
def test_script_text_refuses_what_is_no_sieve_script(raw: bytes, problem: str) -> None:
    with pytest.raises(UsageError) as refused:
        sieve.script_text(raw, "f.sieve")
    assert refused.value.message.startswith("FILE: f.sieve ")
    assert problem in refused.value.message


def test_a_utf8_script_is_accepted_verbatim() -> None:
    text = (
        'require "fileinto";\nif header :contains "Subject" "Rechnung für" { fileinto "Büro"; }\n'
    )
    assert sieve.script_text(text.encode(), "f.sieve") == text


@pytest.mark.parametrize(
    "name", ["", "../x", "a/b", "x" * 65, "-rf", "name with space", "nul\0", "é"]
)
def test_odd_script_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError) as refused:
        sieve.check_name(name)
    assert refused.value.message.startswith("--name: ")


# --- sieve set and show --------------------------------------------------------------------------


def test_a_script_that_does_not_compile_is_never_stored(dovecot: SieveMailbox) -> None:
    dovecot.scripts = {"mailstack": GOOD}
    dovecot.active = "mailstack"
    dovecot.compile_output = SIEVEC_OUTPUT
    code, _, err = invoke("mailbox", "sieve", "set", "a@example.test", "-", input="fileinot;\n")
    assert code == 2
    assert err.splitlines()[0] == (
        "error: FILE: stdin:3: unknown command 'fileinot'; nothing was changed"
    )
    assert not any(argv[:3] == ["doveadm", "sieve", "put"] for argv in dovecot.commands())
    assert dovecot.scripts == {"mailstack": GOOD} and dovecot.active == "mailstack"


def test_a_good_script_travels_on_stdin_and_is_activated(
    dovecot: SieveMailbox, tmp_path: Path
) -> None:
    dovecot.scripts = {"roundcube": "keep;\n"}
    dovecot.active = "roundcube"
    script = tmp_path / "filters.sieve"
    script.write_text(GOOD)
    code, out, _ = invoke("mailbox", "sieve", "set", "A@Example.TEST", str(script))
    assert code == 0
    assert out.strip() == (
        f"activated Sieve script 'mailstack' ({len(GOOD)} bytes) for a@example.test; "
        "'roundcube' is kept, inactive"
    )
    put = [(argv, data) for argv, data in dovecot.calls if argv[:3] == ["doveadm", "sieve", "put"]]
    assert put == [
        (["doveadm", "sieve", "put", "-a", "-u", "a@example.test", "mailstack"], GOOD.encode())
    ]
    checked = [data for argv, data in dovecot.calls if argv == [sieve.CHECKER]]
    assert checked == [GOOD.encode()]
    assert all(GOOD not in " ".join(argv) for argv in dovecot.commands())


def test_show_prints_the_active_script_exactly(dovecot: SieveMailbox) -> None:
    text = 'require ["fileinto"];\n\tfileinto "Tabs";\n# no newline at the end'
    dovecot.scripts = {"mine": text, "old": "keep;\n"}
    dovecot.active = "mine"
    code, out, err = invoke("mailbox", "sieve", "show", "a@example.test")
    assert code == 0
    assert out == text
    assert err.strip() == "a@example.test: active Sieve script 'mine'; also stored, inactive: old"
    code, out, _ = invoke("mailbox", "sieve", "show", "a@example.test", "--json")
    shown = json.loads(out)
    assert shown["active"] == "mine" and shown["text"] == text
    assert shown["scripts"] == [{"name": "mine", "active": True}, {"name": "old", "active": False}]


def test_show_says_when_there_is_no_active_script(dovecot: SieveMailbox) -> None:
    code, out, err = invoke("mailbox", "sieve", "show", "a@example.test")
    assert (code, out) == (0, "")
    assert err.strip() == "a@example.test has no active Sieve script"


def test_an_unknown_mailbox_is_named(dovecot: SieveMailbox) -> None:
    dovecot.known_user = False
    code, _, err = invoke("mailbox", "sieve", "show", "nobody@example.test")
    assert code == 2
    assert err.strip() == "error: ADDRESS: nobody@example.test is not a mailbox of this stack"


def test_bad_arguments_are_refused_before_the_stack_is_touched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def load(root: Path) -> None:
        raise AssertionError("the stack was loaded: validation came too late")

    monkeypatch.setattr(Stack, "load", load)
    missing = tmp_path / "missing.sieve"
    cases: list[tuple[list[str], str | None, str]] = [
        (["set", "a@example.test", str(missing)], None, "cannot be read (No such file"),
        (["set", "a@example.test", "-"], "", "FILE: stdin is empty"),
        (["set", "a@example.test", "-", "--name", "../x"], GOOD, "--name: '../x'"),
        (["set", "a@example.test\nbcc@evil.example", "-"], GOOD, "ADDRESS: "),
        (["show", "x'; DROP TABLE mailboxes; --"], None, "ADDRESS: "),
    ]
    for args, stdin, expected in cases:
        code, _, err = invoke("mailbox", "sieve", *args, input=stdin)
        assert code == 2, args
        assert len(err.strip().splitlines()) == 1, err
        assert expected in err, (args, err)


# --- settings in mailstack.yaml and what they render -----------------------------------------------


def render(data: dict[str, Any]) -> dict[str, str]:
    rendered = render_stack(RenderInputs(validate_config(data), "1"))
    return {path: content.decode() for path, content in rendered.items()}


def test_quota_warnings_are_rendered_highest_first() -> None:
    files = render({**REFERENCE, "mailboxes": {"quota_warnings": [80, 95, 90]}})
    lines = [
        line.strip()
        for line in files["config/dovecot/dovecot.conf"].splitlines()
        if line.strip().startswith("quota_warning")
    ]
    assert lines == [
        "quota_warning = storage=95%% quota-warning 95 %u",
        "quota_warning2 = storage=90%% quota-warning 90 %u",
        "quota_warning3 = storage=80%% quota-warning 80 %u",
    ]


def test_no_quota_warnings_when_the_list_is_empty() -> None:
    files = render({**REFERENCE, "mailboxes": {"quota_warnings": []}})
    assert "quota_warning" not in files["config/dovecot/dovecot.conf"]


def test_defaults_warn_at_85_and_95_and_give_2g() -> None:
    mailboxes = validate_config(REFERENCE).mailboxes
    assert mailboxes.default_quota == "2G"
    assert sorted(mailboxes.quota_warnings) == [85, 95]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "0"), (1048576, "1048576"), ("500M", "500M"), (" 2G ", "2G"), ("1TiB", "1TiB")],
)
def test_default_quota_accepts_sizes_as_operators_write_them(value: object, expected: str) -> None:
    config = validate_config({**REFERENCE, "mailboxes": {"default_quota": value}})
    assert config.mailboxes.default_quota == expected


@pytest.mark.parametrize(
    ("mailboxes", "message"),
    [
        ({"default_quota": "2X"}, "mailboxes.default_quota: '2X' is not a size"),
        ({"default_quota": "-1G"}, "mailboxes.default_quota: '-1G' is not a size"),
        ({"default_quota": "2G\nquota = 0"}, "contains a control character"),
        ({"default_quota": "{{ x }}"}, "contains a template sequence"),
        ({"default_quota": True}, "mailboxes.default_quota: True is not text"),
        ({"default_quota": "999999999T"}, "is too large (at most 4194304T)"),
        (
            {"quota_warnings": [85, 85]},
            "mailboxes.quota_warnings: [85, 85] lists a percentage twice",
        ),
        ({"quota_warnings": [0]}, "mailboxes.quota_warnings.0: 0 is too small (at least 1)"),
        ({"quota_warnings": [100]}, "mailboxes.quota_warnings.0: 100 is too large (at most 99)"),
        ({"quota_warnings": [50, 60, 70, 80, 90, 95]}, "mailboxes.quota_warnings"),
        ({"quota_warnings": "85"}, "mailboxes.quota_warnings"),
        ({"default_qouta": "1G"}, "did you mean default_quota?"),
    ],
)
def test_bad_mailbox_settings_are_one_clear_line(mailboxes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        validate_config({**REFERENCE, "mailboxes": mailboxes})
    assert message in refused.value.message
    assert "\n" not in refused.value.message


def test_managesieve_is_published_on_its_own_port_and_bind_addresses() -> None:
    data = {
        **REFERENCE,
        "network": {
            "bind_ipv4": "192.0.2.10",
            "ports": {"managesieve": 14190},
        },
    }
    compose = yaml.safe_load(render(data)["compose.yaml"])
    ports = compose["services"]["dovecot"]["ports"]
    assert ports == ["192.0.2.10:143:143", "192.0.2.10:993:993", "192.0.2.10:14190:4190"]
    with pytest.raises(ConfigError) as clash:
        validate_config({**REFERENCE, "network": {"ports": {"managesieve": 993}}})
    assert "port 993 is used twice (imaps and managesieve)" in clash.value.message


def test_only_dovecot_may_relay_through_the_internal_port() -> None:
    files = render({**REFERENCE, "network": {"backend_subnet": "10.9.8.0/24"}})
    master = files["config/postfix/master.cf"]
    service = master.split("\n10587 ", 1)[1].split("\n\n", 1)[0]
    assert "-o mynetworks=10.9.8.24/32" in service
    assert "-o smtpd_relay_restrictions=permit_mynetworks,reject" in service
    compose = yaml.safe_load(files["compose.yaml"])
    services = compose["services"]
    assert services["postfix"]["networks"]["backend"]["aliases"] == ["postfix-backend"]
    assert services["dovecot"]["networks"]["backend"]["ipv4_address"] == "10.9.8.24"
    fixed = [
        network.get("ipv4_address")
        for service in services.values()
        for network in (service.get("networks") or {}).values()
        if isinstance(network, dict)
    ]
    assert fixed.count("10.9.8.24") == 1, "no other service may hold Dovecot's address"
    assert "submission_host = postfix-backend:10587" in files["config/dovecot/dovecot.conf"]


def test_the_spam_rule_runs_before_every_user_script() -> None:
    files = render(REFERENCE)
    conf = files["config/dovecot/dovecot.conf"]
    assert "sieve_before = /run/mailstack-sieve/before.d" in conf
    rule = files["config/dovecot/sieve/before.d/10-spam-to-junk.sieve"]
    assert 'if header :is "X-Spam" "Yes"' in rule
    assert 'fileinto :create "Junk";' in rule and "stop;" in rule


def test_mailbox_add_takes_the_default_quota_from_mailstack_yaml(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = validate_config({**REFERENCE, "mailboxes": {"default_quota": "300M"}})
    monkeypatch.setattr(Stack, "load", lambda root: SimpleNamespace(compose=None, config=config))
    added: list[tuple[str, int, bool]] = []
    monkeypatch.setattr(
        directory,
        "add_mailbox",
        lambda compose, address, password_hash, quota, default_quota, **_back_ends: added.append(
            (address, quota, default_quota)
        ),
    )
    password = "Correct-horse-42-battery\n"
    assert invoke("mailbox", "add", "a@example.test", "--password-stdin", input=password)[0] == 0
    assert (
        invoke(
            "mailbox", "add", "b@example.test", "--password-stdin", "--quota", "0", input=password
        )[0]
        == 0
    )
    # The default is said to be the default (a domain quota's refusal names it).
    assert added == [("a@example.test", 300 * 1024**2, True), ("b@example.test", 0, False)]
