"""Host reports (runtime.hostreports, runtime.reports): what the host writes for the admin
service's pages after each `jobs run`: a report when it is due or asked for, a report that
cannot be made published as its one-line error, the body as one psql variable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailstack.errors import MailstackError
from mailstack.runtime import hostreports, jobqueue, jobs, reports
from mailstack.stack import stackfiles
from mailstack.stack.stackdir import Stack, StackDir
from tests.unit.fakes import Call, FakeContainers

PUBLISH = "INSERT INTO host_reports"
AGES = "FROM host_reports;"
CLAIM = "FOR UPDATE SKIP LOCKED"


def _stack(tmp_path: Path, fake: FakeContainers) -> Stack:
    config = stackfiles.initial_config("mail.example.test", "example.test", {"mode": "sandbox"})
    stackfiles.init_stack(tmp_path / "stack", config, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    fake.running = fake.running or ("db", "dovecot", "rspamd")
    return Stack(stack_dir, stack_dir.load_config(), fake)  # type: ignore[arg-type]


def _published(fake: FakeContainers) -> dict[str, object]:
    return {
        call.variables()["topic"]: json.loads(call.variables()["body"])
        for call in fake.sent(PUBLISH)
    }


def test_a_report_is_due_when_never_made_old_enough_or_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        reports,
        "PRODUCERS",
        {
            "health": reports.Producer("health", 60, lambda stack: {}),
            "backups": reports.Producer("backups", 900, lambda stack: {}),
            "dns": reports.Producer("dns", 3600, lambda stack: {}),
        },
    )
    # The minute timer's jitter: 55 s old is due for a 60 s report.
    assert reports.due_topics({"health": 55, "backups": 100, "dns": 100}, ()) == ["health"]
    assert reports.due_topics({"health": 5, "backups": 100}, ()) == ["dns"]
    assert reports.due_topics({"health": 5, "backups": 100, "dns": 1}, ["backups"]) == ["backups"]


def test_the_health_report_is_the_services_states(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reports, "PRODUCERS", {"health": reports.PRODUCERS["health"]})
    fake = FakeContainers(running=("db", "postfix"))
    published = reports.publish_due(_stack(tmp_path, fake))
    assert "health report published" in [str(line) for line in published]  # among the others
    body = _published(fake)["health"]
    assert isinstance(body, dict) and body["healthy"] is True
    assert [service["service"] for service in body["services"]] == ["db", "postfix"]


def test_a_report_that_cannot_be_made_is_published_as_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(stack: Stack) -> object:
        raise MailstackError("restic: the repository cannot be opened\nmore detail")

    monkeypatch.setattr(reports, "PRODUCERS", {"backups": reports.Producer("backups", 900, broken)})
    fake = FakeContainers()
    (published,) = reports.publish_due(_stack(tmp_path, fake))
    assert str(published) == (
        "backups report: could not be made: restic: the repository cannot be opened"
    )
    assert _published(fake) == {"backups": {"error": published.error}}


def test_a_report_travels_as_one_variable_and_an_oversized_one_is_refused() -> None:
    fake = FakeContainers()
    hostreports.publish(fake, "queue", {"messages": ["x'); DROP TABLE host_reports; --"]})  # type: ignore[arg-type]
    (call,) = fake.sent(PUBLISH)
    assert "DROP TABLE" not in call.text and "DROP TABLE" in call.variables()["body"]
    with pytest.raises(MailstackError, match="over 100000"):
        hostreports.publish(fake, "queue", {"messages": ["x" * 100_001]})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a host report topic"):
        hostreports.publish(fake, "secrets", {})  # type: ignore[arg-type]


def test_reading_a_report_gives_its_body_and_age() -> None:
    row = b'health,"{""healthy"": true}",2026-12-06T19:00:00Z,42\n'
    fake = FakeContainers(by_marker=[("FROM host_reports WHERE", row)])
    report = hostreports.read(fake, "health")  # type: ignore[arg-type]
    assert report == hostreports.HostReport("health", {"healthy": True}, "2026-12-06T19:00:00Z", 42)
    assert hostreports.read(FakeContainers(), "health") is None  # type: ignore[arg-type]


def test_a_refresh_job_makes_its_report_in_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    monkeypatch.setattr(
        reports,
        "PRODUCERS",
        {"dns": reports.Producer("dns", 3600, lambda stack: made.append("dns") or {})},
    )
    claims = [b"7,report.refresh,dns\n", b"8,report.refresh,secrets\n"]

    def claim(call: Call) -> bytes:
        return claims.pop(0) if claims else b""

    fake = FakeContainers(by_marker=[(CLAIM, claim), (AGES, b"dns,5\n")])
    result = jobs.run_jobs(_stack(tmp_path, fake))
    lines = str(result).splitlines()
    assert lines[0] == "#7 report.refresh dns: done: the dns report is made in this run"
    assert lines[1].startswith("#8 report.refresh secrets: failed: TOPIC: 'secrets' is not")
    assert lines[2] == "dns report published" and made == ["dns"]


def test_the_page_actions_are_host_jobs_the_table_accepts() -> None:
    sql = (Path(jobqueue.__file__).parents[1] / "migrations" / "0011_host_reports.sql").read_text()
    for kind in jobqueue.KINDS:
        assert f"'{kind}'" in sql
    for topic in hostreports.TOPICS:
        assert f"'{topic}'" in sql
