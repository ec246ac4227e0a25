"""Service health and bans for the admin service (api.hoststatus, runtime.bans' report and
the ban.clear host job): the `bans` report is what bansd lists, cut to fit one report; a
ban.clear job's target is checked by the CLI's rule before bansd hears of it; the API's
operations are for administrators only and queue nothing for anyone else or for a hostile
address."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from mailstack.api import hoststatus, reportview
from mailstack.api.operations import ApiError
from mailstack.errors import UsageError
from mailstack.identity.principal import ADMIN, DOMAIN_ADMIN, ROOT, Principal
from mailstack.runtime import bans, hostreports, jobs, reports
from mailstack.stack import stackfiles
from mailstack.stack.stackdir import Stack, StackDir
from tests.unit.fakes import Call, FakeContainers

CLAIM = "FOR UPDATE SKIP LOCKED"
FINISH = "SET state = :'state'"
PUBLISH = "INSERT INTO host_reports"
AGES = "FROM host_reports;"
READ = "FROM host_reports WHERE"
QUEUE = "INSERT INTO host_jobs"
LIST = "bansd list"
CLEAR = "bansd clear"

ALICE = Principal("admin:alice", ADMIN, None)
DANA = Principal("admin:dana", DOMAIN_ADMIN, frozenset({"a.test"}))


def _ban(address: str, logins: list[str] | None = None) -> dict[str, Any]:
    return {
        "address": address,
        "since": "2026-12-06T19:00:00Z",
        "until": "2026-12-06T20:00:00Z",
        "seconds_left": 3000,
        "failures": 10,
        "protocols": ["imap", "smtp"],
        "logins": logins if logins is not None else ["alice@example.test"],
    }


def _listing(bans_: list[dict[str, Any]], delayed: list[dict[str, Any]] | None = None) -> bytes:
    return json.dumps(
        {
            "bans": bans_,
            "delayed": delayed or [],
            "settings": {
                "max_failures": 10,
                "window": 600,
                "ban_time": 3600,
                "max_delay": 15,
                "exempt": ["172.29.90.1/32"],
            },
        }
    ).encode()


def _stack(tmp_path: Path, fake: FakeContainers, **policy: object) -> Stack:
    extra = {"policy": {"bans": policy}} if policy else {}
    config = stackfiles.initial_config(
        "mail.example.test", "example.test", {"mode": "sandbox", **extra}
    )
    stackfiles.init_stack(tmp_path / "stack", config, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    fake.running = fake.running or ("db", "bans", "dovecot")
    return Stack(stack_dir, stack_dir.load_config(), fake)  # type: ignore[arg-type]


def _published(fake: FakeContainers) -> dict[str, Any]:
    return {
        call.variables()["topic"]: json.loads(call.variables()["body"])
        for call in fake.sent(PUBLISH)
    }


def _claims(*rows: tuple[int, str, str]) -> Any:
    """What successive claims answer (psql's CSV rows), then nothing."""
    answers = []
    for row in rows:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(row)
        answers.append(out.getvalue().encode())

    def answer(call: Call) -> bytes:
        return answers.pop(0) if answers else b""

    return answer


# --- the bans report -----------------------------------------------------------------------


def test_the_bans_report_is_every_ban_and_delayed_address_with_the_policy(tmp_path: Path) -> None:
    delayed = [{"address": "198.51.100.7", "failures": 2, "delay": 1, "protocols": ["imap"]}]
    fake = FakeContainers(by_marker=[(LIST, _listing([_ban("192.0.2.10")], delayed))])
    published = reports.publish_one(_stack(tmp_path, fake), reports.PRODUCERS["bans"])
    assert str(published) == "bans report published"
    assert [call.argv for call in fake.calls if call.service == "bans"] == [[bans.PROGRAM, "list"]]
    assert _published(fake)["bans"] == {
        "bans": [_ban("192.0.2.10")],
        "bans_left_out": 0,
        "delayed": [{"address": "198.51.100.7", "failures": 2, "delay": 1}],
        "delayed_left_out": 0,
        "settings": {
            "max_failures": 10,
            "window": 600,
            "ban_time": 3600,
            "exempt": ["172.29.90.1/32"],
        },
    }


def test_the_bans_report_is_made_every_minute() -> None:
    assert reports.PRODUCERS[hostreports.BANS].every_seconds == 60
    due = reports.due_topics({"health": 5, "bans": 55, "queue": 5}, ())
    assert "bans" in due and "health" not in due and "queue" not in due


def test_a_full_ban_table_of_the_longest_logins_fits_one_report_and_says_what_it_left_out(
    tmp_path: Path,
) -> None:
    # bansd's worst case: 5,000 bans, each with five 64-character logins that JSON escapes.
    longest = ["\u00e9" * 64] * 5
    many = [_ban(f"10.0.{n // 250}.{n % 250}", longest) for n in range(5000)]
    delayed = [{"address": "198.51.100.7", "failures": 2, "delay": 1}]
    fake = FakeContainers(by_marker=[(LIST, _listing(many, delayed))])
    body = bans.bans_report(_stack(tmp_path, fake))
    assert 0 < len(body["bans"]) < 5000
    assert len(body["bans"]) + body["bans_left_out"] == 5000
    assert len(body["delayed"]) + body["delayed_left_out"] == 1
    hostreports.publish(fake, "bans", body)  # type: ignore[arg-type]  # under the limit


def test_the_bans_report_of_a_stack_without_bans_is_the_line_that_says_so(tmp_path: Path) -> None:
    fake = FakeContainers()
    published = reports.publish_one(
        _stack(tmp_path, fake, enabled=False), reports.PRODUCERS["bans"]
    )
    assert published.error.startswith("brute-force bans are off")
    assert _published(fake)["bans"] == {"error": published.error}


# --- the ban.clear host job ------------------------------------------------------------------


def test_a_ban_clear_job_lifts_the_ban_through_bansd_and_remakes_the_report(
    tmp_path: Path,
) -> None:
    fake = FakeContainers(
        by_marker=[
            (CLAIM, _claims((12, "ban.clear", "192.0.2.10"))),
            (CLEAR, b'{"cleared": true, "address": "192.0.2.10"}'),
            (AGES, b"bans,5\nhealth,5\nqueue,5\nbackups,5\ndns,5\n"),
            (LIST, _listing([])),
        ]
    )
    result = jobs.run_jobs(_stack(tmp_path, fake))
    assert str(result).splitlines() == [
        "#12 ban.clear 192.0.2.10: done: cleared 192.0.2.10: it may log in again",
        "bans report published",
    ]
    assert [call.argv for call in fake.sent(CLEAR)] == [[bans.PROGRAM, "clear", "192.0.2.10"]]
    assert _published(fake)["bans"]["bans"] == []


@pytest.mark.parametrize(
    ("target", "line"),
    [
        ("--help", "ADDRESS: '--help' is not an IP address"),
        ("clear-all", "ADDRESS: 'clear-all' is not an IP address"),
        ("0.0.0.0/0", "ADDRESS: '0.0.0.0/0' is not accepted: give one address"),
        ("2001:db8::/32", "ADDRESS: '2001:db8::/32' is not accepted: give one address"),
        ("192.0.2.10; rm -rf /", "ADDRESS: '192.0.2.10; rm -rf /' is not an IP address"),
        ("fe80::1%--help", "ADDRESS: 'fe80::1%--help' is not accepted: give it without the %zone"),
        ("192.0.2.10\nclear-all", "ADDRESS: '192.0.2.10\\nclear-all' is not an IP address"),
    ],
)
def test_a_hostile_ban_clear_target_fails_its_job_with_one_line_and_clears_nothing(
    tmp_path: Path, target: str, line: str
) -> None:
    fake = FakeContainers(by_marker=[(CLAIM, _claims((13, "ban.clear", target)))])
    result = jobs.run_jobs(_stack(tmp_path, fake))
    (finished,) = fake.sent(FINISH)
    assert finished.variables()["state"] == "failed"
    assert finished.variables()["reason"].startswith(line)
    assert "\n" not in finished.variables()["reason"]
    assert result.failed
    # bansd was asked for its list (the due report), never to clear anything.
    assert [call.argv[1] for call in fake.calls if call.service == "bans"] == ["list"]


def test_a_ban_already_gone_is_a_done_job_that_says_so(tmp_path: Path) -> None:
    fake = FakeContainers(
        by_marker=[
            (CLAIM, _claims((14, "ban.clear", "2001:db8::/64"))),
            (CLEAR, b'{"cleared": false, "address": "2001:db8::/64"}'),
        ]
    )
    result = jobs.run_jobs(_stack(tmp_path, fake))
    assert str(result).splitlines()[0] == (
        "#14 ban.clear 2001:db8::/64: done: 2001:db8::/64 was not banned (nothing to clear)"
    )


# --- the API's operations --------------------------------------------------------------------


def _report_row(topic: str, body: object, age: int = 42) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(
        [topic, json.dumps(body), "2026-12-06T19:00:07Z", str(age)]
    )
    return out.getvalue().encode()


def _refusal(call: Any) -> ApiError:
    with pytest.raises(ApiError) as refused:
        call()
    return refused.value


def test_a_domain_administrator_may_neither_read_nor_clear_bans_nor_read_health() -> None:
    fake = FakeContainers(by_marker=[(READ, _report_row("bans", {"bans": []}))])
    executor: Any = fake
    for call in (
        lambda: hoststatus.list_bans(executor, DANA),
        lambda: hoststatus.health(executor, DANA),
        lambda: hoststatus.clear_ban(executor, DANA, "192.0.2.10"),
        lambda: reportview.refresh(executor, DANA, "bans"),
    ):
        refused = _refusal(call)
        assert (refused.status, refused.message) == (403, "only an administrator may do this")
    assert fake.calls == []  # nothing read, nothing queued


def test_clearing_a_ban_queues_a_host_job_for_the_normalised_address() -> None:
    fake = FakeContainers(by_marker=[(QUEUE, b"17\n")])
    queued = hoststatus.clear_ban(fake, ALICE, " 2001:DB8::5 ")  # type: ignore[arg-type]
    assert queued == {"address": "2001:db8::5", "job": 17, "note": hoststatus.CLEAR_NOTE}
    assert fake.variables()["kind"] == "ban.clear"
    assert fake.variables()["target"] == "2001:db8::5"
    assert hoststatus.clear_ban(fake, ROOT, "192.0.2.10")["job"] == 17  # type: ignore[arg-type]


@pytest.mark.parametrize("address", ["--help", "10.0.0.0/8", "x'); DELETE FROM host_jobs; --"])
def test_a_hostile_address_to_clear_is_the_clis_line_and_queues_nothing(address: str) -> None:
    fake = FakeContainers(by_marker=[(QUEUE, b"17\n")])
    refused = _refusal(lambda: hoststatus.clear_ban(fake, ALICE, address))  # type: ignore[arg-type]
    assert refused.status == 400 and refused.message.startswith(f"ADDRESS: {address!r}")
    with pytest.raises(UsageError, match="ADDRESS") as cli:
        bans.client_address(address)
    assert refused.message == cli.value.message
    assert fake.calls == []


def test_a_report_shows_its_age_and_an_old_one_is_said_to_be_stale() -> None:
    fake = FakeContainers(by_marker=[(READ, _report_row("bans", {"bans": [], "x": 1}, 42))])
    shown = hoststatus.list_bans(fake, ALICE)  # type: ignore[arg-type]
    assert shown.as_of == "as of 19:00:07 UTC, 42 s ago" and not shown.stale
    assert shown.fields() == {
        "taken": "2026-12-06T19:00:07Z",
        "age_seconds": 42,
        "stale": False,
        "error": None,
        "bans": [],
        "x": 1,
    }
    old = FakeContainers(by_marker=[(READ, _report_row("bans", {"bans": []}, 600))])
    shown = hoststatus.list_bans(old, ALICE)  # type: ignore[arg-type]
    assert shown.stale and shown.as_of == "as of 19:00:07 UTC, 10 min ago"


def test_no_report_yet_or_one_the_host_could_not_make_is_its_line() -> None:
    never = hoststatus.health(FakeContainers(), ALICE)  # type: ignore[arg-type]
    assert never.error == reportview.NOT_YET and never.as_of == "" and never.body == {}
    failed = FakeContainers(by_marker=[(READ, _report_row("bans", {"error": "bans are off"}))])
    shown = hoststatus.list_bans(failed, ALICE)  # type: ignore[arg-type]
    assert (shown.error, shown.body, shown.age_seconds) == ("bans are off", {}, 42)


def test_refresh_queues_a_report_refresh_of_that_topic() -> None:
    fake = FakeContainers(by_marker=[(QUEUE, b"21\n")])
    assert reportview.refresh(fake, ALICE, "health")["job"] == 21  # type: ignore[arg-type]
    assert (fake.variables()["kind"], fake.variables()["target"]) == ("report.refresh", "health")


def _health(*services: dict[str, Any], healthy: bool = True) -> reportview.ReportView:
    return reportview.ReportView("health", {"healthy": healthy, "services": list(services)},
                                 None, "2026-12-06T19:00:07Z", 12)  # fmt: skip


def _service(name: str, health: str = "healthy", failing: int = 0) -> dict[str, Any]:
    return {"service": name, "state": "running", "health": health, "failing_checks": failing}


def test_the_dashboards_health_line_names_the_services_that_need_attention() -> None:
    summary = hoststatus.health_summary(_health(_service("db"), _service("front", "")))
    assert summary == hoststatus.HealthSummary(
        True, "All 2 services are healthy (as of 19:00:07 UTC, 12 s ago)."
    )
    summary = hoststatus.health_summary(
        _health(_service("db"), _service("postfix", failing=2), _service("rspamd", "starting"),
                healthy=False)
    )  # fmt: skip
    assert summary.healthy is False
    assert summary.line.startswith("2 of 3 services need attention: postfix, rspamd (as of")
    unknown = hoststatus.health_summary(reportview.view(None, "health"))
    assert unknown.healthy is None and reportview.NOT_YET in unknown.line


def test_an_ipv6_zone_is_not_a_client_address() -> None:
    with pytest.raises(UsageError, match="without the %zone"):
        bans.client_address("fe80::1%eth0")
    assert bans.client_address("2001:db8::/64") == "2001:db8::"
