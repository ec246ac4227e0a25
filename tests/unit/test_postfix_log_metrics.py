"""Postfix's log-based counters (monitoring.metrics): the postfix container's log tap (the real
Perl script, run here on the host's perl) copies Postfix's log to a bounded file without
changing Docker's log; metricsd follows that file across its renames and counts refusals by
reason; the render hands the copy over read-only and only with metrics on."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailstack.resources import build_contexts_dir
from tests.unit.test_metrics import compose, metricsd, with_monitoring

LOGTAP = build_contexts_dir() / "postfix" / "logtap"
COPY = "/var/log/mailstack/postfix.log"

# Lines as Postfix 3.7 logs them here (maillog_file = /dev/stdout).
RELAY_DENIED = (
    "Dec  7 10:01:02 mail postfix/smtpd[311]: NOQUEUE: reject: RCPT from unknown[172.16.0.1]: "
    "554 5.7.1 <x@far.example>: Relay access denied; from=<a@b.example> to=<x@far.example> "
    "proto=ESMTP helo=<client>"
)
UNKNOWN_USER = (
    "Dec  7 10:01:03 mail postfix/smtpd[311]: NOQUEUE: reject: RCPT from unknown[2001:db8::7]: "
    "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual "
    "mailbox table; from=<a@b.example> to=<nobody@example.com> proto=ESMTP helo=<client>"
)
SPOOFED = (
    "Dec  7 10:01:04 mail postfix/submission/smtpd[320]: NOQUEUE: reject: RCPT from "
    "unknown[172.16.0.1]: 553 5.7.1 <boss@example.com>: Sender address rejected: not owned by "
    "user alice@example.com; from=<boss@example.com> to=<x@far.example> proto=ESMTP helo=<c>"
)
LISTED = (
    "Dec  7 10:01:05 mail postfix/postscreen[12]: NOQUEUE: reject: RCPT from [198.51.100.9]:4711"
    ": 550 5.7.1 Service unavailable; client [198.51.100.9] blocked using zen.example; "
    "from=<a@b.example>, to=<c@example.com>, proto=ESMTP, helo=<x>"
)
SPAM = (
    "Dec  7 10:01:06 mail postfix/cleanup[330]: 4QxY1z2AbC: milter-reject: END-OF-MESSAGE from "
    "unknown[172.16.0.1]: 5.7.1 Spam message rejected; from=<a@b.example> to=<c@example.com> "
    "proto=ESMTP helo=<x>"
)
GREYLISTED = (
    "Dec  7 10:01:07 mail postfix/cleanup[330]: 4QxY1z2AbD: milter-reject: END-OF-MESSAGE from "
    "unknown[172.16.0.1]: 4.7.1 Try again later; from=<a@b.example> to=<c@example.com> "
    "proto=ESMTP helo=<x>"
)
SENT = (
    "Dec  7 10:01:08 mail postfix/lmtp[340]: 4QxY1z2AbE: to=<c@example.com>, relay=dovecot"
    "[private/lmtp], delay=0.1, delays=0.01/0/0/0.09, dsn=2.0.0, status=sent (250 2.0.0 Saved)"
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (RELAY_DENIED, ("smtpd", "relay_denied", "permanent")),
        (UNKNOWN_USER, ("smtpd", "unknown_recipient", "permanent")),
        (SPOOFED, ("submission/smtpd", "sender_login_mismatch", "permanent")),
        (LISTED, ("postscreen", "dnsbl", "permanent")),
        (SPAM, ("cleanup", "spam", "permanent")),
        (GREYLISTED, ("cleanup", "greylisted", "temporary")),
    ],
)
def test_a_refusal_is_counted_by_program_reason_and_status(
    line: str, expected: tuple[str, str, str]
) -> None:
    assert metricsd.reject_of(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (SENT, ("lmtp", "sent")),
        (
            SENT.replace("postfix/lmtp", "postfix/relay").replace("status=sent", "status=deferred"),
            ("relay", "deferred"),
        ),
        (
            SENT.replace("postfix/lmtp", "postfix/error").replace("status=sent", "status=bounced"),
            ("error", "bounced"),
        ),
    ],
)
def test_a_delivery_attempt_is_counted_by_transport_and_status(
    line: str, expected: tuple[str, str]
) -> None:
    assert metricsd.delivery_of(line) == expected
    assert metricsd.delivery_of(RELAY_DENIED) is None


def test_a_reply_no_phrase_names_is_other_and_a_delivery_is_no_refusal() -> None:
    odd = RELAY_DENIED.replace("Relay access denied", "Go away")
    assert metricsd.reject_of(odd) == ("smtpd", "other", "permanent")
    assert metricsd.reject_of(SENT) is None
    assert metricsd.reject_of("postfix/smtpd[1]: connect from unknown[172.16.0.1]") is None


def _append(path: Path, *lines: str) -> None:
    with path.open("a") as handle:
        handle.writelines(f"{line}\n" for line in lines)


def _counted(log: Any) -> dict[tuple[str, str, str], int]:
    log.poll()
    return dict(log.rejects)


def test_the_follower_starts_at_the_end_of_a_file_already_there(tmp_path: Path) -> None:
    path = tmp_path / "postfix.log"
    _append(path, RELAY_DENIED, RELAY_DENIED)  # before metricsd started: not counted
    log = metricsd.PostfixLog(str(path))
    assert _counted(log) == {}
    _append(path, RELAY_DENIED, SENT, SPAM)
    assert _counted(log) == {
        ("smtpd", "relay_denied", "permanent"): 1,
        ("cleanup", "spam", "permanent"): 1,
    }


def test_the_follower_reads_the_rest_of_a_renamed_file_then_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "postfix.log"
    path.touch()
    log = metricsd.PostfixLog(str(path))
    log.poll()
    _append(path, RELAY_DENIED)
    log.poll()
    _append(path, UNKNOWN_USER)  # written before the tap renames the file: still counted
    path.rename(tmp_path / "postfix.log.1")
    _append(path, LISTED)
    assert _counted(log) == {
        ("smtpd", "relay_denied", "permanent"): 1,
        ("smtpd", "unknown_recipient", "permanent"): 1,
        ("postscreen", "dnsbl", "permanent"): 1,
    }


def test_a_line_without_its_end_waits_for_it(tmp_path: Path) -> None:
    path = tmp_path / "postfix.log"
    path.touch()
    log = metricsd.PostfixLog(str(path))
    log.poll()
    with path.open("a") as handle:
        handle.write(SPOOFED[:60])
    assert _counted(log) == {}
    with path.open("a") as handle:
        handle.write(SPOOFED[60:] + "\n")
    assert _counted(log) == {("submission/smtpd", "sender_login_mismatch", "permanent"): 1}


def test_a_missing_copy_is_no_answer_and_one_that_appears_counts_from_its_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "postfix.log"
    log = metricsd.PostfixLog(str(path))
    log.poll()
    assert log.text() is None  # mailstack_metrics_source_up{source="postfix_log"} 0
    _append(path, GREYLISTED)
    log.poll()
    text = log.text()
    assert text is not None
    assert (
        'mailstack_postfix_rejects_total{program="cleanup",reason="greylisted",'
        'status="temporary"} 1' in text
    )
    assert "# TYPE mailstack_postfix_rejects_total counter" in text
    _append(path, SENT, SENT)
    log.poll()
    text = log.text()
    assert text is not None
    assert 'mailstack_postfix_deliveries_total{transport="lmtp",status="sent"} 2' in text


def test_without_the_log_copy_the_exporters_log_counters_are_not_served() -> None:
    exporter = (
        "# TYPE postfix_smtpd_messages_rejected_total counter\n"
        'postfix_smtpd_messages_rejected_total{code="554"} 0\n'
        "# TYPE postfix_up gauge\n"
        'postfix_up{path="/var/spool/postfix/public/showq"} 1\n'
    )
    queue_only = metricsd.union({"postfix": exporter}, metricsd.QUEUE_ONLY)
    assert "postfix_up" in queue_only and "rejected" not in queue_only  # zero, not quiet
    assert "postfix_smtpd_messages_rejected_total" in metricsd.union({"postfix": exporter})


# --- the tap (the real script, on the host's perl) ----------------------------------------


def _tap(copy: Path, script: str, **options: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["perl", str(LOGTAP), str(copy), sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


def test_the_tap_copies_each_line_and_leaves_the_log_unchanged(tmp_path: Path) -> None:
    copy = tmp_path / "postfix.log"
    script = f"import sys; print({RELAY_DENIED!r}); print({SENT!r}); sys.stderr.write('oops\\n')"
    out, err = _tap(copy, script).communicate(timeout=30)
    assert out == f"{RELAY_DENIED}\n{SENT}\n"
    assert err == "oops\n"  # the command's standard error is not taken
    assert copy.read_text() == out


def test_the_copy_leaves_out_the_mtas_own_health_probe(tmp_path: Path) -> None:
    # compose/postfix/healthcheck asks for a recipient that does not exist, every 5 s, from
    # the container's loopback: in the copy it would count as traffic and refusals.
    probe = (
        "Dec  7 10:01:09 mail postfix/smtpd[282]: NOQUEUE: reject: RCPT from localhost"
        "[127.0.0.1]: 550 5.1.1 <mailstack-healthcheck@example.test>: Recipient address "
        "rejected: User unknown in virtual mailbox table; from=<healthcheck@mailstack.invalid>"
    )
    screened = "Dec  7 10:01:09 mail postfix/postscreen[280]: CONNECT from [127.0.0.1]:44720 to [127.0.0.1]:25"
    copy = tmp_path / "postfix.log"
    script = f"print({probe!r}); print({screened!r}); print({RELAY_DENIED!r})"
    out, _ = _tap(copy, script).communicate(timeout=30)
    assert out == f"{probe}\n{screened}\n{RELAY_DENIED}\n"  # Docker's log: everything
    assert copy.read_text() == f"{RELAY_DENIED}\n"


def test_the_tap_exits_with_the_commands_status(tmp_path: Path) -> None:
    tap = _tap(tmp_path / "postfix.log", "raise SystemExit(7)")
    tap.communicate(timeout=30)
    assert tap.returncode == 7


def test_a_signal_reaches_the_command_and_the_tap_drains_its_last_lines(tmp_path: Path) -> None:
    script = (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        "    print('stopping', flush=True)\n"
        "    raise SystemExit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    tap = _tap(tmp_path / "postfix.log", script)
    assert tap.stdout is not None
    assert tap.stdout.readline() == "started\n"
    tap.send_signal(signal.SIGTERM)
    out, _ = tap.communicate(timeout=30)
    assert out == "stopping\n"
    assert tap.returncode == 0
    assert (tmp_path / "postfix.log").read_text() == "started\nstopping\n"


def test_the_copy_is_bounded_past_4_mib_it_becomes_dot_1(tmp_path: Path) -> None:
    copy = tmp_path / "postfix.log"
    script = "import sys\nfor n in range(100_000): sys.stdout.write('%099d\\n' % n)"  # 10 MB
    out, _ = _tap(copy, script).communicate(timeout=60)
    assert len(out) == 10_000_000  # Docker's log gets everything
    older = tmp_path / "postfix.log.1"
    assert older.stat().st_size < 4 * 1024 * 1024 + 100
    assert copy.stat().st_size < 4 * 1024 * 1024 + 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["postfix.log", "postfix.log.1"]
    last = copy.read_text().splitlines()
    assert last[-1] == f"{99_999:099d}"
    assert int(older.read_text().splitlines()[-1]) + 1 == int(last[0])  # nothing between


def test_a_copy_that_cannot_be_written_never_stops_the_log(tmp_path: Path) -> None:
    copy = tmp_path / "no-such-directory" / "postfix.log"
    out, err = _tap(copy, "print('still logged')").communicate(timeout=30)
    assert out == "still logged\n"
    assert err.count("\n") == 1 and "logtap: open" in err and str(copy) in err


def test_a_full_volume_drops_the_copy_not_the_log(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    out, err = _tap(Path("/dev/full"), "print('one'); print('two')").communicate(timeout=30)
    assert out == "one\ntwo\n"
    assert "logtap: write /dev/full" in err and err.count("\n") == 1


# --- the render ------------------------------------------------------------------------------


def test_the_log_copy_is_postfixs_to_write_and_the_metrics_services_to_read() -> None:
    stack = compose(with_monitoring(metrics=True))
    postfix, metrics = stack["services"]["postfix"], stack["services"]["metrics"]
    assert postfix["environment"]["MAILSTACK_LOG_COPY"] == COPY
    assert "postfix-log:/var/log/mailstack" in postfix["volumes"]
    assert "postfix-log:/var/log/mailstack:ro" in metrics["volumes"]
    assert f"--postfix-log={COPY}" in metrics["command"]
    assert metrics["depends_on"]["postfix"] == {"condition": "service_healthy"}
    users = [
        name
        for name, s in stack["services"].items()
        if any(str(v).startswith("postfix-log:") for v in s.get("volumes", []))
    ]
    assert sorted(users) == ["metrics", "postfix"]


def test_without_metrics_postfix_logs_straight_to_docker() -> None:
    stack = compose(with_monitoring(metrics=False))
    postfix = stack["services"]["postfix"]
    assert "MAILSTACK_LOG_COPY" not in postfix.get("environment", {})
    assert not any(str(v).startswith("postfix-log:") for v in postfix["volumes"])
    assert "postfix-log" not in (stack.get("volumes") or {})


def test_the_entrypoint_runs_the_tap_only_when_asked() -> None:
    entrypoint = (build_contexts_dir() / "postfix" / "entrypoint").read_text()
    assert 'exec /usr/local/bin/logtap "$MAILSTACK_LOG_COPY" postfix start-fg' in entrypoint
    assert entrypoint.rstrip().endswith("exec postfix start-fg")
