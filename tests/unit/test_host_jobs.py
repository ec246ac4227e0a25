"""The host job queue (runtime.jobqueue) and `mailstack jobs run` (runtime.jobs): a queued
domain's DKIM key is made and published with the CLI's own code, a target from the database
is checked again before it names a file, each job ends done or failed with one line; and the
timer that runs them (runtime.schedule)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from mailstack.cli.main import app
from mailstack.runtime import jobqueue, jobs, schedule
from mailstack.stack import stackfiles
from mailstack.stack.config import Config
from mailstack.stack.stackdir import Stack, StackDir
from tests.unit.fakes import Call, FakeContainers

CLAIM = "FOR UPDATE SKIP LOCKED"
FINISH = "SET state = :'state'"
DOMAINS = "FROM domains d"


def _stack(tmp_path: Path, fake: FakeContainers, **extra: object) -> Stack:
    config = stackfiles.initial_config(
        "mail.example.test", "example.test", {"mode": "sandbox", **extra}
    )
    stackfiles.init_stack(tmp_path / "stack", config, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    fake.running = fake.running or ("db", "dovecot", "rspamd")
    return Stack(stack_dir, stack_dir.load_config(), fake)  # type: ignore[arg-type]


def _queue(*claims: bytes) -> list[bytes]:
    """What successive claims answer, then nothing."""
    return list(claims)


def _claims(answers: list[bytes]) -> object:
    def answer(call: Call) -> bytes:
        return answers.pop(0) if answers else b""

    return answer


def _finished(fake: FakeContainers) -> list[tuple[str, str, str]]:
    return [
        (call.variables()["ids"], call.variables()["state"], call.variables()["reason"])
        for call in fake.sent(FINISH)
    ]


def test_a_queued_domain_gets_its_key_made_and_rendered_and_the_job_is_done(
    tmp_path: Path,
) -> None:
    fake = FakeContainers(
        by_marker=[
            (
                CLAIM,
                _claims(_queue(b"4,domain.publish_key,new.test\n5,domain.publish_key,new.test\n")),
            ),  # type: ignore[list-item]
            (
                DOMAINS,
                b"example.test,t,0,2026-12-06T12:00:00Z\nnew.test,t,0,2026-12-06T12:00:00Z\n",
            ),
        ]
    )
    stack = _stack(tmp_path, fake)
    result = jobs.run_jobs(stack)
    assert list((stack.dir.root / "dkim").glob("new.test.*.key"))
    (outcome,) = result.outcomes
    assert (outcome.ids, outcome.state) == ((4, 5), "done")
    assert outcome.reason.startswith("DKIM key ") and "for new.test created" in outcome.reason
    assert _finished(fake) == [("4,5", "done", outcome.reason)]  # the same piece of work, once
    assert not result.failed


def test_domains_queued_together_are_published_by_one_restart_of_rspamd(tmp_path: Path) -> None:
    fake = FakeContainers(
        by_marker=[
            (
                CLAIM,
                _claims(  # type: ignore[list-item]
                    _queue(b"1,domain.publish_key,one.test\n", b"2,domain.publish_key,two.test\n")
                ),
            ),
            (DOMAINS, b"one.test,t,0,x\ntwo.test,t,0,x\n"),
        ]
    )
    stack = _stack(tmp_path, fake)
    result = jobs.run_jobs(stack)
    for domain in ("one.test", "two.test"):
        assert list((stack.dir.root / "dkim").glob(f"{domain}.*.key"))
    assert [outcome.state for outcome in result.outcomes] == ["done", "done"]
    restarts = [command for command in fake.commands if command[0] == "restart"]
    assert len(restarts) == 1 and "rspamd" in restarts[0]


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("../../etc", "DOMAIN: '../../etc' "),
        ("gone.test", "gone.test is no longer a mail domain of this stack; nothing made"),
    ],
)
def test_a_hostile_or_removed_domain_fails_its_job_with_one_line_and_makes_no_file(
    tmp_path: Path, target: str, reason: str
) -> None:
    fake = FakeContainers(
        by_marker=[
            (CLAIM, _claims(_queue(f"9,domain.publish_key,{target}\n".encode()))),  # type: ignore[list-item]
            (DOMAINS, b"example.test,t,0,2026-12-06T12:00:00Z\n"),
        ]
    )
    stack = _stack(tmp_path, fake)
    before = sorted(p.name for p in (stack.dir.root / "dkim").iterdir())
    result = jobs.run_jobs(stack)
    ((ids, state, recorded),) = _finished(fake)
    assert (ids, state) == ("9", "failed") and recorded.startswith(reason)
    assert "\n" not in recorded
    assert result.failed
    assert sorted(p.name for p in (stack.dir.root / "dkim").iterdir()) == before


def test_a_kick_job_ends_the_sessions_through_doveadm(tmp_path: Path) -> None:
    fake = FakeContainers(
        by_marker=[(CLAIM, _claims(_queue(b"3,sessions.kick,*@old.test\n")))]  # type: ignore[list-item]
    )
    jobs.run_jobs(_stack(tmp_path, fake))
    kicks = [call.argv for call in fake.calls if call.service == "dovecot"]
    assert kicks == [["doveadm", "kick", "*@old.test"]]
    assert _finished(fake)[0][1] == "done"


def test_nothing_queued_is_one_claim_then_the_due_reports(tmp_path: Path) -> None:
    fake = FakeContainers()
    result = jobs.run_jobs(_stack(tmp_path, fake))
    assert str(result).splitlines()[0] == "no pending host jobs"
    assert len(fake.sent(CLAIM)) == 1 and not fake.sent(FINISH)


def test_a_stopped_stack_is_not_an_error_every_minute(tmp_path: Path) -> None:
    fake = FakeContainers()
    stack = _stack(tmp_path, fake)
    fake.running = ("front",)
    result = jobs.run_jobs(stack)
    assert (result.failed, fake.calls) == (False, [])
    assert str(result) == "the database is not running: no host jobs looked at"


def test_retry_makes_failed_jobs_pending_first(tmp_path: Path) -> None:
    fake = FakeContainers(by_marker=[("WHERE state = 'failed'", b"1\n2\n")])
    result = jobs.run_jobs(_stack(tmp_path, fake), retry_failed=True)
    assert result.retried == 2
    assert "2 failed job(s) made pending again" in str(result)


def test_a_reason_is_one_bounded_line_without_control_characters() -> None:
    line = jobqueue.one_line("first\nsecond\x1b[31m" + "x" * 500)
    assert "\n" not in line and "\x1b" not in line and len(line) == jobqueue.MAX_REASON


def test_the_queue_sends_kind_and_target_as_variables_only() -> None:
    fake = FakeContainers(by_marker=[("INSERT INTO host_jobs", b"17\n")])
    assert jobqueue.queue(fake, jobqueue.PUBLISH_KEY, "a.test'; DROP TABLE x; --") == 17
    (call,) = fake.calls
    assert "DROP" not in call.stdin
    with pytest.raises(ValueError, match="not a host job"):
        jobqueue.queue(fake, "shell.run", "x")


# --- the timer -----------------------------------------------------------------------------------


def _config(mode: str = "sandbox") -> Config:
    return stackfiles.initial_config(
        "mail.example.test", "example.test", {"mode": mode, "features": {"admin": True}}
    )


def test_the_jobs_timer_runs_jobs_run_every_minute_on_this_stack(tmp_path: Path) -> None:
    timer = schedule.jobs_timer(tmp_path, _config())
    service = schedule.service_unit(timer)
    assert f'"jobs" "run" "--dir" "{tmp_path}"' in service
    assert "OnCalendar=*-*-* *:*:00" in schedule.timer_unit(timer)


def test_up_leaves_the_jobs_timer_out_in_sandbox_mode_and_says_how_to_run_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schedule, "installed", lambda timer, unit_dir=None: False)
    notes = schedule.keep_jobs_timer(tmp_path, _config())
    assert notes == ["host jobs are not scheduled in sandbox mode: run `mailstack jobs run`"]


def test_without_systemd_up_says_how_to_run_the_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schedule, "systemd_running", lambda: False)
    (note,) = schedule.keep_jobs_timer(tmp_path, _config("production"))
    assert "systemd is not running here" in note and "mailstack jobs run" in note


def test_with_systemd_up_installs_the_jobs_timer_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config("production")
    written: list[str] = []
    monkeypatch.setattr(schedule, "systemd_running", lambda: True)
    monkeypatch.setattr(schedule, "installed", lambda timer, unit_dir=None: bool(written))
    monkeypatch.setattr(
        schedule,
        "install",
        lambda timer, unit_dir=None: written.append(timer.name) or "installed",
    )
    schedule.keep_jobs_timer(tmp_path, config)
    assert schedule.keep_jobs_timer(tmp_path, config) == []
    assert written == [f"mailstack-jobs-{config.project}"]


# --- the commands --------------------------------------------------------------------------------


def test_jobs_run_exits_1_when_a_job_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    failed = jobs.JobsRun((jobs.JobOutcome((3,), jobqueue.PUBLISH_KEY, "x.test", "failed", "why"),))
    monkeypatch.setattr(Stack, "load", lambda root: object())
    monkeypatch.setattr(jobs, "run_jobs", lambda stack, retry_failed: failed)
    result = CliRunner().invoke(app, ["jobs", "run"])
    assert result.exit_code == 1
    assert "#3 domain.publish_key x.test: failed: why" in result.output


def test_a_token_for_an_administrator_names_it_checked_before_the_stack_is_touched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def load(root: Path) -> None:
        raise AssertionError("the stack was loaded: validation came too late")

    monkeypatch.setattr(Stack, "load", load)
    result = CliRunner().invoke(
        app, ["api", "token", "create", "ci", "--scope", "read", "--by", "dana'; --"]
    )
    assert result.exit_code == 2
    assert '--by: "dana\'; --" is not accepted' in result.output


def test_a_token_for_an_administrator_is_stored_with_its_creator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeContainers(
        by_marker=[("INSERT INTO api_tokens", b"creator,1\nname_taken,0\nadded,never\n")]
    )
    monkeypatch.setattr(Stack, "load", lambda root: SimpleNamespace(compose=fake))
    result = CliRunner().invoke(
        app, ["api", "token", "create", "ci", "--scope", "admin", "--by", "Dana"]
    )
    assert result.exit_code == 0, result.output
    assert fake.variables()["created_by"] == "dana"
