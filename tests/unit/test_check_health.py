"""`check health` (runtime.health, runtime.healthprobes): each judge at its thresholds, and
the whole check on a stack whose containers answer as each test says (FakeContainers), with
one daemon down, hung or wrong."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from mailstack.adapters.compose import ServiceState
from mailstack.backup import verification
from mailstack.backup.verification import Check, VerifyResult
from mailstack.cli.main import app
from mailstack.errors import (
    EXIT_FAILED,
    EXIT_HEALTH_WARN,
    EXIT_OK,
    ExternalCommandFailed,
    MailstackError,
)
from mailstack.images import securitycheck
from mailstack.images.securitycheck import ImageUpdates, PendingFix, UpdatesReport
from mailstack.runtime import health, healthprobes, probe
from mailstack.runtime.health import HealthItem
from mailstack.stack import stackfiles
from mailstack.stack.stackdir import Stack, StackDir
from mailstack.verdict import FAIL, PASS, WARN
from tests.unit.fakes import Call, FakeContainers, FakeEngine

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
EPOCH = NOW.timestamp()
HOUR = 3600
MAILBOX = "alice@example.test"
RUNNING = ("db", "redis", "resolver", "bans", "rspamd", "dovecot", "webmail", "admin", "dav",
           "front", "mta-sts", "sink", "postfix")  # fmt: skip


def _status(output: str, code: int = 0) -> bytes:
    return f"{output}\nmailstack-exit={code}\n".encode()


def _answers(changes: dict[str, object] | None = None) -> list[tuple[str, object]]:
    """Every probe answering as a healthy stack does; `changes` replaces one by its marker."""
    normal: dict[str, object] = {
        "FROM postfix_mailboxes": f"1,{MAILBOX}\n".encode(),
        "FROM users": b"3\n",
        "FROM host_reports": b"",
        "postmap -q": _status("example.test/alice/"),
        "doveadm user": _status(f"field\tvalue\nuser\t{MAILBOX}"),
        "rspamc": _status("Results for file: stdin (0.2 seconds)\nAction: no action\nScore: 1.2 / 15.00"),
        "healthcheck": _status(""),
        "drill": _status(";; ->>HEADER<<- opcode: QUERY, rcode: NOERROR, id: 1\n;; Query time: 3 msec"),
        "postqueue -j": b"",
        "find /var/lib/clamav": _status(f"{EPOCH - 2 * HOUR} daily.cld\n{EPOCH - 90 * 24 * HOUR} main.cvd"),
    }  # fmt: skip
    normal.update(changes or {})
    return list(normal.items())


def _stack(
    tmp_path: Path,
    fake: FakeContainers,
    mode: str = "sandbox",
    antivirus: bool = False,
    backup: dict[str, str] | None = None,
    dns: dict[str, str] | None = None,
) -> Stack:
    features = {"antivirus": antivirus, "webmail": True, "admin": True}
    backup = backup or {"target": str(tmp_path / "repo")}
    settings = {"mode": mode, "features": features, "backup": backup, "dns": dns or {}}
    config = stackfiles.initial_config("mail.example.test", "example.test", settings)
    stackfiles.init_stack(tmp_path / "stack", config, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    fake.running = fake.running or RUNNING
    return Stack(stack_dir, stack_dir.load_config(), fake)  # type: ignore[arg-type]


def _backed_up(tmp_path: Path, stack: Stack, age: float) -> None:
    """A snapshot written `age` seconds before NOW, and a passed verify an hour ago."""
    snapshots = tmp_path / "repo" / "snapshots"
    snapshots.mkdir(parents=True)
    (snapshots / "a1b2").write_bytes(b"{}")
    os.utime(snapshots / "a1b2", (EPOCH - age, EPOCH - age))
    result = VerifyResult("a1b2", (Check("restore", True, "ok"),), 3.0)
    verification.record_verify(stack.dir, result, now=NOW - datetime.timedelta(hours=1))


def _delivered(stack: Stack, executor: object) -> probe.ProbeResult:
    """The mail round trip of a healthy stack (the real one is proven end to end)."""
    return probe.ProbeResult(probe.probe_address(stack.config), 1.4)


def _check(
    stack: Stack, tmp_path: Path, round_trip: healthprobes.RoundTrip = _delivered
) -> dict[str, HealthItem]:
    return {item.name: item for item in _report(stack, tmp_path, round_trip).items}


def _report(
    stack: Stack, tmp_path: Path, round_trip: healthprobes.RoundTrip = _delivered
) -> health.HealthReport:
    return healthprobes.check_health(
        stack,
        engine=FakeEngine(docker_root=str(tmp_path)),
        clock=lambda: EPOCH,
        round_trip=round_trip,
    )


# --- the whole check ---------------------------------------------------------------------------


def test_a_healthy_stack_passes_every_item_and_exits_0(tmp_path: Path) -> None:
    fake = FakeContainers(by_marker=_answers())
    stack = _stack(tmp_path, fake)
    _backed_up(tmp_path, stack, age=2 * HOUR)
    report = _report(stack, tmp_path)
    items = {item.name: item for item in report.items}
    failing = [str(item) for item in report.items if item.verdict != PASS]
    # The DNS report has not been made (no host report): the one warning.
    assert failing == [str(items["dns records"])]
    assert items["dns records"].verdict == WARN and "jobs run" in items["dns records"].fix
    assert {f"service {name}" for name in RUNNING} <= set(items)
    assert items["recipient lookup"].detail == f"virtual_mailbox_maps found {MAILBOX}"
    assert items["mailbox lookup"].detail == f"userdb found {MAILBOX}"
    assert items["spam scan"].detail == "scanned: no action, score 1.2"
    assert items["mail database"].detail == "answered: 1 active mailboxes"
    assert items["webmail database"].detail == "answered: 3 webmail users"
    assert items["dns resolution"].detail == "example.test MX: NOERROR in 3 msec"
    assert items["antivirus signatures"].exempt  # the antivirus is off in this config
    assert items["mail round trip"].detail == "587 -> 993 as mailstack-probe@example.test: 1.4 s"
    # Sandbox: no daily security check, no blocklist (nothing is resolved on the Internet).
    assert items["security fixes"].exempt and items["dns blocklists"].exempt
    assert items["dns blocklists"].detail.startswith("exempt: sandbox mode: ")
    assert not fake.sent("for q; do drill")
    assert report.exit_code == EXIT_HEALTH_WARN


def test_the_lookups_use_the_mailbox_the_database_named_through_proxymap(tmp_path: Path) -> None:
    fake = FakeContainers(by_marker=_answers())
    _check(_stack(tmp_path, fake), tmp_path)
    (postmap,) = fake.sent("postmap -q")
    assert postmap.service == "postfix"
    table = "proxy:pgsql:/run/mailstack/postfix-sql/virtual_mailbox_maps.cf"
    assert postmap.argv[-4:] == ["postmap", "-q", MAILBOX, table]
    # Each probe's command is bounded inside its container too: `timeout 3 …`.
    assert postmap.argv[:2] == ["sh", "-c"] and postmap.argv[3] == "3"
    (doveadm,) = fake.sent("doveadm user")
    assert doveadm.service == "dovecot" and doveadm.argv[-1] == MAILBOX
    assert not fake.sent("auth test")  # no password is ever tried


def test_a_stack_without_mailboxes_looks_up_an_address_that_never_exists(tmp_path: Path) -> None:
    fake = FakeContainers(
        by_marker=_answers(
            {
                "FROM postfix_mailboxes": b"0,\n",
                "postmap -q": _status("", 1),
                "doveadm user": _status(
                    "userdb lookup: user mailstack-healthcheck@… doesn't exist", 67
                ),
            }
        )
    )
    items = _check(_stack(tmp_path, fake), tmp_path)
    assert items["recipient lookup"].verdict == PASS
    assert "no mailbox yet" in items["recipient lookup"].detail
    assert items["mailbox lookup"].verdict == PASS
    assert fake.sent("postmap -q")[0].argv[-2] == healthprobes.PROBE_ADDRESS


def test_db_stopped_fails_its_service_and_every_lookup_that_needs_it(tmp_path: Path) -> None:
    down = ExternalCommandFailed("docker compose exec (exit 1)", 'service "db" is not running')
    fake = FakeContainers(
        by_marker=_answers(
            {
                "FROM postfix_mailboxes": down,
                "FROM users": down,
                "FROM host_reports": down,
                "postmap -q": _status("postmap: fatal: table proxy:pgsql:…: query error", 1),
                "doveadm user": _status("Error: userdb lookup failed for …", 75),
            }
        ),
        running=tuple(name for name in RUNNING if name != "db"),
    )
    stack = _stack(tmp_path, fake)
    report = _report(stack, tmp_path)
    items = {item.name: item for item in report.items}
    assert report.exit_code == EXIT_FAILED
    assert items["service db"].verdict == FAIL and "mailstack up" in items["service db"].fix
    for name in ("mail database", "webmail database", "recipient lookup", "mailbox lookup"):
        assert items[name].verdict == FAIL, name
        assert "(db)" in items[name].fix, name
    assert items["recipient lookup"].detail.startswith("postmap: fatal")
    assert items["spam scan"].verdict == PASS  # what does not need the database still works


def test_a_hung_daemon_is_a_failure_within_its_bound(tmp_path: Path) -> None:
    def hung(call: Call) -> Exception:
        assert call.service == "rspamd"
        return ExternalCommandFailed("docker compose exec (timed out after 4s)", "")

    fake = FakeContainers(by_marker=_answers({"rspamc": hung}))
    bounds: list[float] = []
    exec_ = fake.exec

    def recording(service: str, argv: list[str], **options: object) -> bytes:
        bounds.append(float(options.get("timeout", 60)))  # type: ignore[arg-type]
        return exec_(service, argv, **options)  # type: ignore[arg-type]

    fake.exec = recording  # type: ignore[method-assign]
    items = _check(_stack(tmp_path, fake), tmp_path)
    assert items["spam scan"].verdict == FAIL
    assert "timed out" in items["spam scan"].detail
    assert bounds and max(bounds) <= healthprobes.PROBE_SECONDS


def test_an_unhealthy_answer_is_named_with_the_daemons_words(tmp_path: Path) -> None:
    fake = FakeContainers(
        by_marker=_answers(
            {
                "healthcheck": _status("redis: PING answered 'NOAUTH'", 1),
                "drill": _status(";; ->>HEADER<<- opcode: QUERY, rcode: SERVFAIL, id: 1"),
            }
        )
    )
    items = _check(_stack(tmp_path, fake), tmp_path)
    assert items["redis ping"].verdict == FAIL
    assert items["redis ping"].detail == "redis: PING answered 'NOAUTH'"
    assert items["dns resolution"].detail == "example.test MX: SERVFAIL"


def test_a_command_stopped_by_its_timeout_says_so(tmp_path: Path) -> None:
    fake = FakeContainers(by_marker=_answers({"drill": _status("", 124)}))
    items = _check(_stack(tmp_path, fake), tmp_path)
    assert items["dns resolution"].verdict == FAIL
    assert items["dns resolution"].detail == "drill: no answer within 3 s"


def test_a_failing_healthcheck_fails_the_service_though_docker_says_healthy(
    tmp_path: Path,
) -> None:
    states = [ServiceState(name, f"c-{name}", "running", "healthy", "Up", ()) for name in RUNNING]
    states[0] = ServiceState("db", "c-db", "running", "healthy", "Up", (), 2, "no answer")
    items = {i.service: i for i in health.judge_services(states, ["db", "postfix", "clamav"])}
    assert (
        items["db"].verdict == FAIL
        and items["db"].detail == "healthcheck failing (2 in a row): no answer"
    )
    assert items["postfix"].verdict == PASS
    assert items["clamav"].verdict == FAIL and items["clamav"].detail == "no container"


def test_the_dns_report_is_read_not_asked_again(tmp_path: Path) -> None:
    body = {
        "server": {"checks": [{"verdict": "pass"}]},
        "domains": [{"domain": "example.test", "verdict": "pass"}],
    }
    row = f'dns,"{json.dumps(body).replace(chr(34), chr(34) * 2)}",2026-12-06T11:40:00Z,1200\n'
    fake = FakeContainers(by_marker=_answers({"FROM host_reports": row.encode()}))
    items = _check(_stack(tmp_path, fake), tmp_path)
    assert items["dns records"].verdict == PASS
    assert items["dns records"].detail == "pass for the server and 1 domain, checked 20 min ago"
    assert fake.sent("FROM host_reports")[0].variables()["topic"] == "dns"
    assert not fake.sent("drill @127.0.0.1 _")  # no DNS question about the records


def test_production_antivirus_judges_the_signature_files_times(tmp_path: Path) -> None:
    aged = _status(f"{EPOCH - 72 * HOUR} daily.cld\n{EPOCH - 90 * 24 * HOUR} main.cvd")
    fake = FakeContainers(by_marker=_answers({"find /var/lib/clamav": aged}))
    fake.running = (*RUNNING, "clamav")
    items = _check(_stack(tmp_path, fake, mode="production", antivirus=True), tmp_path)
    assert items["antivirus signatures"].verdict == FAIL
    assert items["antivirus signatures"].detail == "newest daily.cld, 3 days old"


def test_sandbox_antivirus_is_exempt_and_says_so(tmp_path: Path) -> None:
    fake = FakeContainers(by_marker=_answers())
    items = _check(_stack(tmp_path, fake, antivirus=True), tmp_path)
    item = items["antivirus signatures"]
    assert item.exempt and item.verdict == PASS
    assert item.detail == "exempt: sandbox mode: local signatures, never updated"
    assert not fake.sent("find /var/lib/clamav")


# --- the judges at their thresholds ------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "oldest", "verdict"),
    [
        (0, 0, PASS),
        (3, 10 * 60, PASS),
        (99, HOUR - 1, PASS),
        (100, 60, WARN),
        (2, HOUR, WARN),
        (1000, 60, FAIL),
        (1, 24 * HOUR, FAIL),
    ],
)
def test_the_queue_is_judged_by_size_and_oldest_age(count: int, oldest: int, verdict: str) -> None:
    arrivals = [int(EPOCH) - oldest] + [int(EPOCH)] * (count - 1) if count else []
    item = health.judge_queue(arrivals, EPOCH)
    assert item.verdict == verdict
    assert (item.fix == "") == (verdict == PASS)


@pytest.mark.parametrize(
    ("hours", "verdict"), [(None, WARN), (2, PASS), (25.9, PASS), (26, WARN), (50, FAIL)]
)
def test_the_last_backup_is_judged_by_its_age(hours: float | None, verdict: str) -> None:
    last = None if hours is None else NOW - datetime.timedelta(hours=hours)
    assert health.judge_last_backup(last, NOW).verdict == verdict


def test_a_failed_verify_fails_and_an_old_one_warns() -> None:
    hour_ago = NOW - datetime.timedelta(hours=1)
    assert health.judge_last_verify(hour_ago, True, "", NOW).verdict == PASS
    failed = health.judge_last_verify(hour_ago, False, "restic check: pack damaged\n…", NOW)
    assert (
        failed.verdict == FAIL and failed.detail == "failed 60 min ago: restic check: pack damaged"
    )
    old = NOW - datetime.timedelta(days=9)
    assert health.judge_last_verify(old, True, "", NOW).verdict == WARN
    assert health.judge_last_verify(None, False, "", NOW).detail == "never verified"


@pytest.mark.parametrize(
    ("days", "verdict"), [(60, PASS), (21, PASS), (20, WARN), (6, FAIL), (-1, FAIL)]
)
def test_the_certificate_is_judged_by_days_left(days: int, verdict: str) -> None:
    end = NOW + datetime.timedelta(days=days, hours=1)
    assert health.judge_certificate(end, NOW).verdict == verdict


def test_a_missing_certificate_fails() -> None:
    assert health.judge_certificate(None, NOW).verdict == FAIL


@pytest.mark.parametrize(
    ("total_gib", "free_gib", "verdict"),
    [
        (100, 50, PASS),
        (100, 9, WARN),
        (20, 4, WARN),
        (4000, 100, WARN),
        (4000, 70, FAIL),
        (20, 0.5, FAIL),
    ],
)
def test_free_space_is_judged_in_bytes_and_share(
    total_gib: float, free_gib: float, verdict: str
) -> None:
    gib = health.GIB
    item = health.judge_free_space(
        "free space: volumes", "/var/lib/docker", int(total_gib * gib), int(free_gib * gib)
    )
    assert item.verdict == verdict


@pytest.mark.parametrize(("hours", "verdict"), [(2, PASS), (24, WARN), (48, FAIL)])
def test_signatures_older_than_two_days_fail(hours: int, verdict: str) -> None:
    mtimes = {"main.cvd": EPOCH - 90 * 24 * HOUR, "daily.cld": EPOCH - hours * HOUR}
    assert health.judge_signatures(mtimes, EPOCH).verdict == verdict
    assert health.judge_signatures({}, EPOCH).verdict == FAIL


def test_find_output_with_a_stray_line_is_parsed() -> None:
    found = healthprobes.parse_mtimes("1700000000.5 daily.cld\nfind: oops\n1600000000 main.cvd\n")
    assert found == {"daily.cld": 1700000000.5, "main.cvd": 1600000000.0}


@pytest.mark.parametrize(
    ("body", "age", "verdict"),
    [
        (
            {"server": {"checks": []}, "domains": [{"domain": "a.test", "verdict": "pass"}]},
            60,
            PASS,
        ),
        (
            {"server": {"checks": []}, "domains": [{"domain": "a.test", "verdict": "warn"}]},
            60,
            WARN,
        ),
        ({"server": {"checks": [{"verdict": "FAIL"}]}, "domains": []}, 60, FAIL),
        ({"server": {"checks": []}, "domains": [{"domain": "a.test", "verdict": None}]}, 60, WARN),
        (
            {"server": {"checks": []}, "domains": [{"domain": "a.test", "verdict": "pass"}]},
            4 * HOUR,
            WARN,
        ),
        ({"error": "the resolver did not answer"}, 60, WARN),
        ({"server": None, "domains": [{"domain": "a.test", "verdict": "odd"}]}, 60, FAIL),
        ("not an object", 60, WARN),
    ],
)
def test_the_dns_report_is_summed_up(body: object, age: int, verdict: str) -> None:
    assert health.judge_dns_report(body, age).verdict == verdict


def test_exit_codes_follow_the_worst_verdict() -> None:
    passed = HealthItem("a", "", PASS, "ok")
    warned = HealthItem("b", "", WARN, "meh", "fix it")
    failed = HealthItem("c", "", FAIL, "bad", "fix it")
    assert health.HealthReport((passed,), 0.1).exit_code == EXIT_OK
    assert health.HealthReport((passed, warned), 0.1).exit_code == EXIT_HEALTH_WARN
    assert health.HealthReport((warned, failed), 0.1).exit_code == EXIT_FAILED
    assert health.HealthReport((passed, warned, failed), 0.1).failing() == (warned, failed)


def test_a_mailbox_address_of_another_shape_never_reaches_argv(tmp_path: Path) -> None:
    fake = FakeContainers(
        by_marker=_answers({"FROM postfix_mailboxes": b"1,--help@example.test\n"})
    )
    _check(_stack(tmp_path, fake), tmp_path)
    assert fake.sent("postmap -q")[0].argv[-2] == healthprobes.PROBE_ADDRESS
    assert fake.sent("doveadm user")[0].argv[-1] == healthprobes.PROBE_ADDRESS


# --- the command ---------------------------------------------------------------------------------


def _cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    fake = FakeContainers(by_marker=_answers())
    stack = _stack(tmp_path, fake)
    found = _report(stack, tmp_path)
    monkeypatch.setattr(healthprobes, "check_health", lambda stack: found)
    return CliRunner().invoke(app, ["check", "health", *args, "--dir", str(stack.dir.root)])


def test_check_health_json_has_every_item_and_the_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _cli(tmp_path, monkeypatch, "--json")
    assert result.exit_code == EXIT_HEALTH_WARN, result.output
    report = json.loads(result.stdout)
    assert report["verdict"] == "warn" and report["exit_code"] == EXIT_HEALTH_WARN
    names = [item["name"] for item in report["items"]]
    assert names[: len(RUNNING)] == [f"service {name}" for name in RUNNING]
    assert names[len(RUNNING) :] == [
        "mail database", "recipient lookup", "mailbox lookup", "webmail database", "spam scan",
        "redis ping", "dns resolution", "mail round trip", "dns blocklists", "mail queue",
        "antivirus signatures", "dns records", "security fixes", "last backup",
        "last backup verify", "certificate", "free space: volumes", "free space: backups",
    ]  # fmt: skip
    assert set(report["items"][0]) == {
        "name", "service", "verdict", "detail", "fix", "exempt", "seconds"
    }  # fmt: skip


def test_check_health_text_gives_each_warning_its_fix_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _cli(tmp_path, monkeypatch)
    assert result.exit_code == EXIT_HEALTH_WARN
    lines = result.stdout.splitlines()
    assert "warn: last backup: no backup yet: `mailstack backup create` now; `mailstack backup " \
        "schedule on` makes one daily" in " ".join(result.stdout.split())  # fmt: skip
    assert lines[-1].startswith("31 items, 0 failed, 3 warned (")


def test_check_health_help_documents_the_exit_codes() -> None:
    result = CliRunner().invoke(app, ["check", "health", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert (
        "Exit codes: 0 every item passes (or is exempt, and says why); 1 an item fails; 6" in text
    )


def test_check_health_of_a_directory_without_a_stack_is_one_line_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["check", "health", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a mailstack directory" in result.output and "Traceback" not in result.output


def test_a_remote_target_s_last_backup_comes_from_the_backups_report(tmp_path: Path) -> None:
    body = {
        "snapshots": [{"time": "2026-12-06T09:00:00.123456789Z"}, {"time": "2026-12-05T09:00:00Z"}]
    }
    row = f'backups,"{json.dumps(body).replace(chr(34), chr(34) * 2)}",2026-12-06T11:50:00Z,600\n'

    def report(call: Call) -> bytes:
        return row.encode() if call.variables()["topic"] == "backups" else b""

    fake = FakeContainers(by_marker=_answers({"FROM host_reports": report}))
    target = {"target": "s3://s3.example.test/bucket", "s3_access_key_id": "AKIAEXAMPLE"}
    items = _check(_stack(tmp_path, fake, backup=target), tmp_path)
    assert items["last backup"].verdict == PASS
    assert items["last backup"].detail == "2 h ago (2026-12-06 09:00 UTC)"  # 2 h 59 min
    assert items["free space: backups"].exempt
    assert items["free space: backups"].detail == "exempt: a s3 target: its server's to watch"


# --- the mail round trip, the security fixes, the blocklists in the whole check ----------------


def test_a_failed_round_trip_fails_with_the_probes_words(tmp_path: Path) -> None:
    def refused(stack: Stack, executor: object) -> probe.ProbeResult:
        raise MailstackError(
            "the probe message to mailstack-probe@example.test did not arrive within 8 s"
        )

    items = _check(_stack(tmp_path, FakeContainers(by_marker=_answers())), tmp_path, refused)
    item = items["mail round trip"]
    assert item.verdict == FAIL and item.detail.endswith("did not arrive within 8 s")
    assert "dovecot" in item.fix and "rspamd" in item.fix


def test_the_round_trip_is_given_the_bounded_executor(tmp_path: Path) -> None:
    seen: list[object] = []

    def recording(stack: Stack, executor: object) -> probe.ProbeResult:
        seen.append(executor)
        return _delivered(stack, executor)

    _check(_stack(tmp_path, FakeContainers(by_marker=_answers())), tmp_path, recording)
    assert getattr(seen[0], "seconds", None) == healthprobes.PROBE_SECONDS


PENDING = PendingFix("libssl3", "3.0.11-1~deb12u1", "3.0.15-1~deb12u1", ("bookworm-security",),
                     True, ("CVE-2024-5535", "CVE-2024-9143"), "2024-11-01")  # fmt: skip
OTHER = PendingFix("tzdata", "2024a-0+deb12u1", "2025b-0+deb12u1", ("bookworm-updates",), False)


def _security_report(hours_ago: float, *fixes: PendingFix) -> UpdatesReport:
    checked = (NOW - datetime.timedelta(hours=hours_ago)).isoformat(timespec="seconds")
    return UpdatesReport(
        checked, (ImageUpdates("postfix", "mailstack/postfix:aa", ("postfix",), fixes),)
    )


def test_pending_security_fixes_warn_with_the_count_and_the_command(tmp_path: Path) -> None:
    fake = FakeContainers(by_marker=_answers())
    stack = _stack(tmp_path, fake)
    securitycheck.save(stack.dir.root, _security_report(3, PENDING, OTHER))
    item = _check(stack, tmp_path)["security fixes"]
    assert item.verdict == WARN
    assert item.detail == "1 pending in postfix (CVE-2024-5535, CVE-2024-9143), checked 3 h ago"
    assert "`mailstack update --security`" in item.fix


@pytest.mark.parametrize(
    ("mode", "hours", "verdict"),
    [("production", 20, PASS), ("production", 49, PASS), ("production", 51, WARN),
     ("sandbox", 500, PASS)],  # sandbox: no daily run is expected
)  # fmt: skip
def test_the_security_check_warns_when_the_daily_run_has_not_run(
    mode: str, hours: float, verdict: str
) -> None:
    item = health.judge_security(_security_report(hours, OTHER), "", mode == "production", NOW)
    assert item.verdict == verdict
    assert item.detail.endswith("ago") and item.detail.startswith(
        "none pending, " if verdict == PASS else "none pending, but checked "
    )


def test_a_failed_daily_security_run_warns() -> None:
    item = health.judge_security(_security_report(2), "failed: the build failed", True, NOW)
    assert (
        item.verdict == WARN
        and item.detail == "the last daily security run failed: the build failed"
    )


def test_no_security_check_yet_warns_in_production_and_is_exempt_in_sandbox(
    tmp_path: Path,
) -> None:
    fake = FakeContainers(by_marker=_answers())
    items = _check(_stack(tmp_path, fake, mode="production"), tmp_path)
    assert items["security fixes"].verdict == WARN
    assert items["security fixes"].detail == "the images were never checked"
    assert "`mailstack check updates`" in items["security fixes"].fix
    sandbox = health.judge_security(None, "", False, NOW)
    assert sandbox.exempt and sandbox.verdict == PASS


def test_a_damaged_security_state_warns_with_its_remedy(tmp_path: Path) -> None:
    fake = FakeContainers(by_marker=_answers())
    stack = _stack(tmp_path, fake)
    (stack.dir.root / ".mailstack" / securitycheck.STATE_FILE).write_text("{not json")
    item = _check(stack, tmp_path)["security fixes"]
    assert item.verdict == WARN and "is damaged" in item.detail and "delete it" in item.fix


def _drill(name: str, rcode: str, *records: str) -> str:
    lines = [f";; ->>HEADER<<- opcode: QUERY, rcode: {rcode}, id: 4242",
             ";; flags: qr rd ra ; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 0",
             ";; QUESTION SECTION:", f";; {name}.\tIN\tA", "", ";; ANSWER SECTION:",
             *(f"{name}.\t2100\tIN\tA\t{record}" for record in records),
             "", ";; Query time: 41 msec"]  # fmt: skip
    return "\n".join(f"{name} {line}" for line in lines)


def _production(tmp_path: Path, fake: FakeContainers, public: dict[str, str]) -> Stack:
    return _stack(tmp_path, fake, mode="production", dns=public)


def test_production_asks_each_blocklist_about_the_public_address_through_the_resolver(
    tmp_path: Path,
) -> None:
    spamhaus, spamcop = "2.0.0.127.zen.spamhaus.org", "2.0.0.127.bl.spamcop.net"
    barracuda = "2.0.0.127.b.barracudacentral.org"
    answer = "\n".join(
        [
            _drill(spamhaus, "NOERROR", "127.0.0.2", "127.0.0.10"),
            _drill(spamcop, "NXDOMAIN"),
            _drill(barracuda, "NOERROR", "127.255.255.254"),
        ]
    )
    fake = FakeContainers(by_marker=[("for q; do drill", _status(answer)), *_answers()])
    items = _check(_production(tmp_path, fake, {"public_ipv4": "127.0.0.2"}), tmp_path)
    (asked,) = fake.sent("for q; do drill")
    assert asked.service == "resolver" and asked.argv[-3:] == [spamhaus, spamcop, barracuda]
    item = items["dns blocklists"]
    assert item.verdict == FAIL
    assert (
        item.detail == "listed: 127.0.0.2 on Spamhaus ZEN (127.0.0.2: SBL, 127.0.0.10: PBL (ISP))"
    )
    assert "removal" in item.fix


def test_production_without_a_public_address_warns_with_the_key_to_set(tmp_path: Path) -> None:
    fake = FakeContainers(by_marker=_answers())
    items = _check(_production(tmp_path, fake, {}), tmp_path)
    assert items["dns blocklists"].verdict == WARN
    assert "dns.public_ipv4" in items["dns blocklists"].fix
    assert not fake.sent("for q; do drill")


def test_the_checks_own_round_trip_message_is_not_counted_in_the_queue(tmp_path: Path) -> None:
    def queued(sender: str, arrived: float, queue_id: str) -> str:
        return json.dumps({"queue_name": "active", "queue_id": queue_id, "arrival_time": int(arrived),
                           "message_size": 900, "sender": sender,
                           "recipients": [{"address": "mailstack-probe@example.test"}]})  # fmt: skip

    lines = [
        queued("mailstack-probe@example.test", EPOCH, "4F3A2B1C0D"),  # this check's own, in passing
        queued(
            "mailstack-probe@example.test", EPOCH - HOUR - 60, "5E4D3C2B1A"
        ),  # an earlier one, stuck
        queued("alice@example.test", EPOCH - 60, "6A5B4C3D2E"),
    ]
    fake = FakeContainers(by_marker=_answers({"postqueue -j": "\n".join(lines).encode()}))
    item = _check(_stack(tmp_path, fake), tmp_path)["mail queue"]
    assert item.detail == "2 messages, the oldest 61 min old" and item.verdict == WARN
