"""The mail queue (runtime.mailqueue, api.mailqueue, `mailstack queue`): `postqueue -j` read
field by field with strangers' text bounded and cleaned, the queue id's strict rule before
anything reaches argv, the commands each action runs in the postfix container, the host
report and the host jobs (a target from the database checked again), and the admin
service's operations: administrators only, deletion after the password typed again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailstack.api import mailqueue as api
from mailstack.api import reportview, signin
from mailstack.api.operations import ApiError
from mailstack.errors import MailstackError, NotFound, UsageError
from mailstack.identity.principal import ADMIN, DOMAIN_ADMIN, Principal
from mailstack.identity.sessions import FULL, Session
from mailstack.runtime import hostreports, jobs, mailqueue, reports
from mailstack.stack import stackfiles
from mailstack.stack.stackdir import Stack, StackDir
from tests.unit.clirun import invoke, one_error_line
from tests.unit.fakes import Call, FakeContainers

LONG_ID = "4XbQ2D1kKzz3Qy"
SHORT_ID = "3F1A2B4C5D"
ALICE = Principal("admin:alice", ADMIN, None)
DANA = Principal("admin:dana", DOMAIN_ADMIN, frozenset({"a.test"}))
JOB = "INSERT INTO host_jobs"
CLAIM = "FOR UPDATE SKIP LOCKED"
FINISH = "SET state = :'state'"
PUBLISH = "INSERT INTO host_reports"


def _line(**fields: Any) -> bytes:
    item = {
        "queue_name": "deferred",
        "queue_id": LONG_ID,
        "arrival_time": 1_765_000_000,
        "message_size": 1234,
        "forced_expire": False,
        "sender": "alice@example.test",
        "recipients": [
            {"address": "bob@far.test", "delay_reason": "connect to sink[172.30.9.5]:25: refused"}
        ],
    }
    return json.dumps({**item, **fields}).encode() + b"\n"


def _stack(tmp_path: Path, fake: FakeContainers) -> Stack:
    config = stackfiles.initial_config("mail.example.test", "example.test", {"mode": "sandbox"})
    stackfiles.init_stack(tmp_path / "stack", config, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    fake.running = fake.running or ("db", "postfix")
    return Stack(stack_dir, stack_dir.load_config(), fake)  # type: ignore[arg-type]


def _postfix_argv(fake: FakeContainers) -> list[list[str]]:
    return [call.argv for call in fake.calls if call.service == "postfix"]


# --- postqueue -j ------------------------------------------------------------------------------


def test_postqueue_json_lines_become_messages_oldest_first() -> None:
    output = _line(queue_id=SHORT_ID, arrival_time=1_765_000_500, queue_name="hold") + _line()
    first, second = mailqueue.parse_postqueue_json(output)
    assert first == mailqueue.QueuedMessage(
        queue_id=LONG_ID,
        queue_name="deferred",
        arrival_time=1_765_000_000,
        message_size=1234,
        sender="alice@example.test",
        recipients=(
            mailqueue.Recipient("bob@far.test", "connect to sink[172.30.9.5]:25: refused"),
        ),
    )
    assert (second.queue_id, second.queue_name) == (SHORT_ID, "hold")
    assert str(first) == (
        f"{LONG_ID}  deferred  2025-12-06T05:46:40Z  1234 bytes  from alice@example.test to "
        "bob@far.test (connect to sink[172.30.9.5]:25: refused)"
    )
    assert mailqueue.parse_postqueue_json(b"") == ()
    assert str(mailqueue.MailQueue(())) == "the mail queue is empty"


def test_hostile_fields_are_cleaned_bounded_and_typed() -> None:
    hostile = _line(
        sender="\x1b]0;pwned\x07evil@x.test\r\nX-Injected: 1",
        queue_name="<script>",
        arrival_time=True,
        message_size=-5,
        recipients=[
            {
                "address": "a" * 5000 + "@x.test",
                "delay_reason": "550 \x1b[31mred\x1b[0m " + "r" * 900,
            },
            "not an object",
            {"address": 42, "delay_reason": None},
            *({"address": f"r{n}@x.test"} for n in range(30)),
        ],
    )
    (message,) = mailqueue.parse_postqueue_json(hostile)
    assert (
        "\x1b" not in message.sender and "\n" not in message.sender and "\x07" not in message.sender
    )
    assert message.sender == "]0;pwned evil@x.test X-Injected: 1"
    assert message.queue_name == "unknown"
    assert (message.arrival_time, message.message_size) == (0, 0)
    long_one, not_text, *_ = message.recipients
    assert len(long_one.address) == mailqueue.MAX_ADDRESS and long_one.address.endswith("…")
    assert (
        len(long_one.delay_reason) == mailqueue.MAX_REASON and "\x1b" not in long_one.delay_reason
    )
    assert not_text == mailqueue.Recipient("", "")  # a non-string field is empty, not a crash
    assert len(message.recipients) == mailqueue.MAX_RECIPIENTS
    assert message.recipients_left_out == 32 - mailqueue.MAX_RECIPIENTS


def test_a_line_that_is_not_a_message_is_refused_whole() -> None:
    with pytest.raises(MailstackError, match="line 2 that is not JSON"):
        mailqueue.parse_postqueue_json(_line() + b"postqueue: fatal: Connection refused\n")
    with pytest.raises(MailstackError, match="not an object"):
        mailqueue.parse_postqueue_json(b"[1, 2]\n")
    # A queue id postqueue never writes (an argv trick) is not taken into a listing.
    with pytest.raises(MailstackError, match="without a queue id: '-d ALL'"):
        mailqueue.parse_postqueue_json(_line(queue_id="-d ALL"))


# --- the queue id's rule -----------------------------------------------------------------------


@pytest.mark.parametrize("good", [SHORT_ID, "D1E2F3", LONG_ID, "4VnTqz3Y5Nz9vJ", " 3F1A2B4C5D "])
def test_postfix_short_and_long_queue_ids_are_accepted(good: str) -> None:
    assert mailqueue.queue_id(good) == good.strip()


@pytest.mark.parametrize(
    "bad",
    ["", "-d", "-f", "3F1A2", "3f1a2b4c5d", "ALL ", "all", "3F1A2B4C5D;id", "3F1A 2B4C5D",
     "../../etc", "4XbQ2D1kKzz3Qy\n-d", "aeiouAEIOUxyz", "3F1A2B4C5D" * 3, "ＡＢＣＤＥＦ"],
)  # fmt: skip
def test_anything_else_is_refused_with_a_line_naming_the_argument(bad: str) -> None:
    with pytest.raises(UsageError) as refused:
        mailqueue.queue_id(bad)
    assert refused.value.message.startswith("ID: ") and "is not a Postfix queue id" in str(
        refused.value.message
    )


def test_all_is_a_retry_target_but_never_a_deletion() -> None:
    assert mailqueue.queue_id("ALL", allow_all=True) == mailqueue.ALL
    with pytest.raises(UsageError, match="ALL is refused here: delete messages one by one"):
        mailqueue.queue_id("ALL")


# --- the commands in the postfix container ----------------------------------------------------


def test_listing_retrying_and_deleting_run_postfixs_own_commands() -> None:
    fake = FakeContainers(answers=[_line(), _line(), b"", b"", _line(), b"", b""])
    assert mailqueue.list_queue(fake).messages[0].queue_id == LONG_ID
    assert (
        str(mailqueue.retry(fake, LONG_ID))
        == f"queued message {LONG_ID}: asked to be delivered now"
    )
    assert str(mailqueue.retry(fake, "ALL")) == "every queued message: asked to be delivered now"
    assert str(mailqueue.delete(fake, LONG_ID)) == f"queued message {LONG_ID}: deleted"
    assert _postfix_argv(fake) == [
        ["postqueue", "-j"],
        ["postqueue", "-j"],  # it is there,
        ["postqueue", "-i", LONG_ID],
        ["postqueue", "-f"],
        ["postqueue", "-j"],  # it is there,
        ["postsuper", "-d", LONG_ID],
        ["postqueue", "-j"],  # and then it is not
    ]
    assert {call.user for call in fake.calls} == {None}


def test_retrying_or_deleting_a_message_not_queued_is_not_found_and_runs_nothing_else() -> None:
    for action in (mailqueue.retry, mailqueue.delete):
        fake = FakeContainers(answers=[_line(queue_id=SHORT_ID)])
        with pytest.raises(NotFound, match=f"ID: {LONG_ID} is not in the mail queue"):
            action(fake, LONG_ID)
        assert _postfix_argv(fake) == [["postqueue", "-j"]]


def test_a_message_still_queued_after_postsuper_is_a_failure() -> None:
    fake = FakeContainers(answers=[_line(), b"", _line()])
    with pytest.raises(MailstackError, match="still in the queue"):
        mailqueue.delete(fake, LONG_ID)


def test_a_bad_id_reaches_no_container() -> None:
    fake = FakeContainers()
    for action in (mailqueue.retry, mailqueue.delete):
        with pytest.raises(UsageError):
            action(fake, "-d ALL")
    assert fake.calls == []


# --- the host report ---------------------------------------------------------------------------


def test_the_report_has_the_count_the_oldest_age_and_at_most_200_messages() -> None:
    many = mailqueue.MailQueue(
        tuple(
            mailqueue.QueuedMessage(f"{n:010X}", "deferred", 1000 + n, 10, "a@x.test", ())
            for n in range(250)
        )
    )
    body = mailqueue.report_body(many, now=1600)
    assert (body["total"], body["oldest_seconds"], body["left_out"]) == (250, 600, 50)
    assert len(body["messages"]) == mailqueue.REPORT_MESSAGES
    assert body["messages"][0]["arrival_time"] == "1970-01-01T00:16:40Z"  # the oldest first
    assert mailqueue.report_body(mailqueue.MailQueue(()), now=1600) == {
        "total": 0, "oldest_seconds": None, "left_out": 0, "messages": [],
    }  # fmt: skip


def test_the_report_stays_under_the_size_a_psql_argument_may_have() -> None:
    wide = tuple(
        mailqueue.QueuedMessage(
            f"{n:010X}", "deferred", 1000, 10, "s" * 300,
            tuple(mailqueue.Recipient("r" * 300, "x" * 300) for _ in range(20)),
        )
        for n in range(200)
    )  # fmt: skip
    body = mailqueue.report_body(mailqueue.MailQueue(wide), now=2000)
    assert len(json.dumps(body)) < hostreports.MAX_REPORT_BYTES
    assert body["left_out"] == 200 - len(body["messages"]) > 0


def test_jobs_run_publishes_the_queue_report_and_an_error_line_when_postfix_is_down(
    tmp_path: Path,
) -> None:
    fake = FakeContainers(by_marker=[("postqueue -j", _line())])
    stack = _stack(tmp_path, fake)
    published = reports.publish_one(stack, reports.PRODUCERS[hostreports.QUEUE])
    assert str(published) == "queue report published"
    (call,) = fake.sent(PUBLISH)
    body = json.loads(call.variables()["body"])
    assert body["total"] == 1 and body["messages"][0]["queue_id"] == LONG_ID
    down = FakeContainers(
        by_marker=[("postqueue -j", MailstackError("the postfix service is not running"))]
    )
    published = reports.publish_one(_stack(tmp_path / "2", down), reports.PRODUCERS["queue"])
    assert published.error == "the postfix service is not running"
    (call,) = down.sent(PUBLISH)
    assert json.loads(call.variables()["body"]) == {"error": "the postfix service is not running"}


# --- the host jobs -----------------------------------------------------------------------------


def _job_run(tmp_path: Path, kind: str, target: str, *answers: bytes) -> tuple[Any, FakeContainers]:
    claims = [f"7,{kind},{target}\n".encode()]

    def claim(call: Call) -> bytes:
        return claims.pop(0) if claims else b""

    fake = FakeContainers(
        by_marker=[(CLAIM, claim), ("FROM host_reports;", b"queue,1\nhealth,1\n")]
    )
    fake.answers = list(answers)
    result = jobs.run_jobs(_stack(tmp_path, fake))
    return result, fake


@pytest.mark.parametrize(
    ("kind", "target"),
    [("queue.delete", "ALL"), ("queue.delete", "-d ALL"), ("queue.retry", "-f"),
     ("queue.retry", "3F1A2B4C5D;rm")],
)  # fmt: skip
def test_a_jobs_target_from_the_database_is_checked_again_before_argv(
    tmp_path: Path, kind: str, target: str
) -> None:
    result, fake = _job_run(tmp_path, kind, target)
    (outcome,) = result.outcomes
    assert outcome.state == "failed"
    assert outcome.reason.startswith(f"target: {target!r} is not a Postfix queue id")
    assert _postfix_argv(fake) == []


def test_a_delete_job_deletes_and_the_report_is_made_again_in_the_same_run(tmp_path: Path) -> None:
    result, fake = _job_run(tmp_path, "queue.delete", LONG_ID, _line(), b"", b"", b"")
    (outcome,) = result.outcomes
    assert (outcome.state, outcome.reason) == ("done", f"queued message {LONG_ID}: deleted")
    assert ["postsuper", "-d", LONG_ID] in _postfix_argv(fake)
    assert "queue report published" in [str(line) for line in result.published]


def test_a_retry_job_for_a_message_gone_fails_with_its_line(tmp_path: Path) -> None:
    result, fake = _job_run(tmp_path, "queue.retry", LONG_ID)
    (outcome,) = result.outcomes
    assert outcome.state == "failed" and "is not in the mail queue" in outcome.reason
    assert ["postqueue", "-i", LONG_ID] not in _postfix_argv(fake)


def test_a_retry_all_job_flushes_the_queue(tmp_path: Path) -> None:
    result, fake = _job_run(tmp_path, "queue.retry", "ALL")
    assert result.outcomes[0].state == "done"
    assert _postfix_argv(fake)[0] == ["postqueue", "-f"]


# --- the admin service's operations ------------------------------------------------------------


def _report_row(body: object) -> bytes:
    text = json.dumps(json.dumps(body))[1:-1].replace('\\"', '""')
    return f'queue,"{text}",2026-12-06T12:00:00Z,42\n'.encode()


def test_an_administrator_reads_the_report_with_its_age() -> None:
    body = mailqueue.report_body(
        mailqueue.MailQueue(mailqueue.parse_postqueue_json(_line())), 1_765_000_060
    )
    fake = FakeContainers(by_marker=[("FROM host_reports WHERE", _report_row(body))])
    found = api.queue_report(fake, ALICE)
    assert (found["taken"], found["age_seconds"], found["error"]) == (
        "2026-12-06T12:00:00Z",
        42,
        "",
    )
    assert (found["total"], found["oldest_seconds"]) == (1, 60)
    assert found["messages"][0]["recipients"][0]["address"] == "bob@far.test"


def test_no_report_yet_and_a_failed_report_are_said_not_hidden() -> None:
    assert api.queue_report(FakeContainers(), ALICE)["error"] == reportview.NOT_YET
    fake = FakeContainers(by_marker=[("FROM host_reports WHERE", _report_row({"error": "down"}))])
    found = api.queue_report(fake, ALICE)
    assert (found["error"], found["messages"], found["total"]) == ("down", [], 0)


def test_a_domain_administrator_gets_403_before_the_database_is_asked() -> None:
    for call in (
        lambda fake: api.queue_report(fake, DANA),
        lambda fake: api.retry(fake, DANA, LONG_ID),
        lambda fake: api.delete(fake, DANA, LONG_ID),
        lambda fake: reportview.refresh(fake, DANA, "queue"),
    ):
        fake = FakeContainers()
        with pytest.raises(ApiError) as refused:
            call(fake)
        assert (refused.value.status, refused.value.message) == (
            403,
            "only an administrator may do this",
        )
        assert fake.calls == []


def test_retry_and_delete_queue_host_jobs_after_the_ids_rule() -> None:
    fake = FakeContainers(by_marker=[(JOB, b"12\n")])
    assert api.retry(fake, ALICE, "ALL")["job"] == 12
    assert api.delete(fake, ALICE, LONG_ID) == {
        "job": 12, "kind": "queue.delete", "target": LONG_ID, "note": api.QUEUED_NOTE,
    }  # fmt: skip
    assert [(c.variables()["kind"], c.variables()["target"]) for c in fake.sent(JOB)] == [
        ("queue.retry", "ALL"),
        ("queue.delete", LONG_ID),
    ]
    for hostile in ("ALL", "-d ALL", "x'; DROP TABLE host_jobs; --"):
        with pytest.raises(ApiError) as refused:
            api.delete(fake, ALICE, hostile)
        assert refused.value.status == 400 and refused.value.message.startswith("ID: ")
    assert len(fake.sent(JOB)) == 2  # nothing more queued


def test_deleting_from_the_page_needs_the_password_typed_again() -> None:
    fake = FakeContainers(by_marker=[(JOB, b"13\n")])
    stale = Session("s" * 43, "alice", None, FULL, reauthenticated=False)
    with pytest.raises(signin.ReauthNeeded):
        api.delete_from_page(fake, ALICE, stale, LONG_ID)
    assert fake.calls == []
    fresh = Session("s" * 43, "alice", None, FULL, reauthenticated=True)
    assert api.delete_from_page(fake, ALICE, fresh, LONG_ID)["job"] == 13


def test_the_admin_side_loads_without_pydantic_typer_or_rich() -> None:
    code = (
        "import sys, mailstack.api.mailqueue, mailstack.runtime.mailqueue\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'pydantic', 'typer', 'rich', 'click', 'jinja2', 'yaml'}))\n"
    )
    result = subprocess.run(  # our own interpreter, a constant script
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --- the CLI -----------------------------------------------------------------------------------


def test_the_cli_refuses_a_bad_id_and_delete_all_in_one_line(tmp_path: Path) -> None:
    code, text = invoke("queue", "delete", SHORT_ID, "ALL", "--dir", str(tmp_path))
    assert code == 2
    assert one_error_line(text).startswith("ID: 'ALL' is not a Postfix queue id")
    code, text = invoke("queue", "retry", "--all", SHORT_ID, "--dir", str(tmp_path))
    assert (code, one_error_line(text)) == (
        2,
        "ID: give one queued message's id, or --all (not both)",
    )
    code, text = invoke("queue", "retry", "--dir", str(tmp_path), "--", "-f")
    assert code == 2 and "is not a Postfix queue id" in one_error_line(text)
