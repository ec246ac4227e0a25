"""Metrics, end to end (monitoring.metrics, on in the session stack): a scrape with the token
from the host's loopback finds the queue, delivery and sign-in series, each moved by real
mail and real IMAP sign-ins; without the token, or with a wrong one, 401; and a container
of the stack's networks does not reach the endpoint at all."""

from __future__ import annotations

import imaplib
import ipaddress
import json
import re
import smtplib
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.conftest import METRICS_PORT, METRICS_SUBNET, PORTS, SUBNETS, RunningStack
from tests.e2e.mail import fetch_by_subject, imaps, message, send_inbound, submit

pytestmark = pytest.mark.e2e

URL = f"http://127.0.0.1:{METRICS_PORT}/metrics"
FAR = "far-away.example"  # no such domain: in sandbox mode all outbound mail goes to the sink


def scrape(token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(URL, headers=headers)  # the stack's loopback port
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310  # as above
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def value(text: str, series: str) -> float:
    """The sum of every sample of a series (all its label sets); 0 when it is absent."""
    pattern = re.compile(rf"^{re.escape(series)}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(found) for found in pattern.findall(text))


def labelled(text: str, series: str, label: str) -> float:
    pattern = re.compile(rf"^{re.escape(series)}\{{[^}}]*{re.escape(label)}[^}}]*\}} (\S+)$", re.M)
    return sum(float(found) for found in pattern.findall(text))


@pytest.fixture(scope="module")
def token(stack: RunningStack) -> str:
    path = stack.root / "secrets" / "metrics_token"
    assert path.stat().st_mode & 0o777 == 0o600
    return path.read_text().strip()


def metrics(token: str) -> str:
    status, text = scrape(token)
    assert status == 200, text
    return text


def wait_for(token: str, check: str, condition: Callable[[str], bool]) -> str:
    """The scrape once the condition holds (Dovecot's stats arrive within a moment)."""
    deadline = time.monotonic() + 60
    while True:
        text = metrics(token)
        if condition(text):
            return text
        assert time.monotonic() < deadline, f"{check} not seen within 60 s:\n{text[-3000:]}"
        time.sleep(2)


def test_every_source_answers_a_scrape_with_the_token(token: str) -> None:
    text = metrics(token)
    for source in ("postfix", "dovecot", "rspamd", "redis", "postgres"):
        assert f'mailstack_metrics_source_up{{source="{source}"}} 1' in text, source
    assert "# TYPE dovecot_auth_success_total counter" in text
    assert "# EOF" not in text  # served as Prometheus text, not OpenMetrics
    assert value(text, "redis_up") == 1
    assert value(text, "pg_up") == 1  # its login works from the metrics service's address
    assert "go_goroutines" not in text  # the exporters' own runtime is left out


def test_sign_ins_and_failures_move_the_login_series(stack: RunningStack, token: str) -> None:
    before = metrics(token)
    address, password = stack.new_mailbox()
    with imaps(stack) as imap:
        imap.login(address, password)
        imap.logout()
    with imaps(stack) as imap, pytest.raises(imaplib.IMAP4.error):
        imap.login(address, "not-the-password")
    after = wait_for(
        token,
        "a sign-in and a failure",
        lambda text: (
            value(text, "dovecot_auth_success_total") > value(before, "dovecot_auth_success_total")
            and value(text, "dovecot_auth_failures_total")
            > value(before, "dovecot_auth_failures_total")
        ),
    )
    assert value(after, "dovecot_auth_success_total") >= 1


def scrape_before_a_delivery(stack: RunningStack, token: str) -> str:
    """A scrape, then a new mailbox (a mail-database transaction) receives one message from
    outside (scanned by rspamd, which asks Redis), read back over IMAP: the scrape before."""
    before = metrics(token)
    recipient, password = stack.new_mailbox()
    subject = f"e2e metrics {uuid.uuid4().hex}"
    send_inbound([recipient], subject)
    fetch_by_subject(stack, recipient, password, subject)
    return before


def test_a_delivery_moves_the_delivery_and_scan_series(stack: RunningStack, token: str) -> None:
    before = scrape_before_a_delivery(stack, token)
    after = wait_for(
        token,
        "a delivery",
        lambda text: (
            value(text, "dovecot_mail_delivery_total")
            > value(before, "dovecot_mail_delivery_total")
        ),
    )
    assert value(after, "rspamd_scanned_total") > value(before, "rspamd_scanned_total")


REJECTS = "mailstack_postfix_rejects_total"
DELIVERIES = "mailstack_postfix_deliveries_total"


def test_refusals_and_deliveries_in_postfixs_log_move_its_counters(
    stack: RunningStack, token: str
) -> None:
    # Counted from the copy of Postfix's log its container keeps (compose/postfix/logtap):
    # by reason here, by SMTP code in Debian's exporter; Docker's log keeps every line.
    before = metrics(token)
    recipient, password = stack.new_mailbox()
    victim = f"victim-{uuid.uuid4().hex[:10]}@foreign.example"
    nobody = f"nobody-{uuid.uuid4().hex[:10]}@{recipient.split('@')[1]}"
    with smtplib.SMTP("127.0.0.1", PORTS["smtp"], timeout=30) as smtp:
        smtp.ehlo("metrics-tester.example")
        smtp.mail("someone@elsewhere.example")
        assert smtp.rcpt(victim)[0] == 554  # relay access denied
        assert smtp.rcpt(nobody)[0] == 550  # no such mailbox here
    subject = f"e2e postfix log {uuid.uuid4().hex}"
    send_inbound([recipient], subject)
    fetch_by_subject(stack, recipient, password, subject)

    def moved(text: str, series: str, label: str) -> bool:
        return labelled(text, series, label) > labelled(before, series, label)

    after = wait_for(
        token,
        "the refusals and the delivery",
        lambda text: (
            moved(text, REJECTS, 'reason="relay_denied"')
            and moved(text, REJECTS, 'reason="unknown_recipient"')
            and moved(text, DELIVERIES, 'transport="lmtp",status="sent"')
            and moved(text, "postfix_smtpd_messages_rejected_total", 'code="554"')
        ),
    )
    assert 'mailstack_metrics_source_up{source="postfix_log"} 1' in after
    assert value(after, "postfix_smtpd_connects_total") > value(
        before, "postfix_smtpd_connects_total"
    )
    logged = stack.compose("logs", "--no-log-prefix", "postfix").stdout.decode()
    assert victim in logged and nobody in logged  # the tap copies; Docker's log keeps them


DEFERRED = "postfix_showq_message_age_seconds_count"


def sink_healthy(stack: RunningStack) -> None:
    deadline = time.monotonic() + 90
    while b"healthy" not in stack.compose("ps", "--format", "{{.Health}}", "sink").stdout:
        assert time.monotonic() < deadline, "the sink is not healthy again after 90 s"
        time.sleep(2)


@pytest.fixture
def deferred(stack: RunningStack, token: str) -> Iterator[float]:
    """A message from a mailbox to the outside that waits in the deferred queue (the sink is
    stopped meanwhile): yields how many were deferred before it; afterwards the sink runs
    again and the message is gone."""
    before = labelled(metrics(token), DEFERRED, 'queue="deferred"')
    sender, password = stack.new_mailbox()
    recipient = f"metrics-{uuid.uuid4().hex[:8]}@{FAR}"
    stack.compose("stop", "sink")
    try:
        submit(stack, sender, password, message(sender, recipient, f"e2e queue {recipient}"))
        yield before
    finally:
        stack.compose("start", "sink")
        sink_healthy(stack)
        for item in json.loads(stack.cli("queue", "list", "--json").stdout)["messages"]:
            if recipient in {r["address"] for r in item["recipients"]}:
                stack.cli("queue", "delete", item["queue_id"], check=False)


def test_a_waiting_message_shows_in_the_queue_series(token: str, deferred: float) -> None:
    text = wait_for(
        token,
        "a deferred message",
        lambda text: labelled(text, DEFERRED, 'queue="deferred"') > deferred,
    )
    assert 'postfix_up{path="/var/spool/postfix/public/showq"} 1' in text
    assert labelled(text, "postfix_showq_message_size_bytes_count", 'queue="deferred"') >= 1


@pytest.mark.parametrize("wrong", [None, "", "not-the-token"], ids=["none", "empty", "wrong"])
def test_a_scrape_without_the_token_is_refused(token: str, wrong: str | None) -> None:
    status, text = scrape(wrong)
    assert status == 401
    assert "dovecot_" not in text and "postfix_" not in text


def test_a_container_on_the_stacks_networks_does_not_reach_the_endpoint(
    stack: RunningStack,
) -> None:
    # The admin container is on the frontend and back-end networks: neither the metrics
    # service's own address, nor its name on the back-end network, nor the port the host
    # publishes (through the frontend gateway) answers it.
    metrics_ip = str(ipaddress.ip_network(METRICS_SUBNET).network_address + 83)
    gateway = str(ipaddress.ip_network(SUBNETS[0]).network_address + 1)
    targets = [(metrics_ip, 9154), ("metrics", 9154), (gateway, METRICS_PORT)]
    code = (
        "import socket\n"
        f"targets = {targets!r}\n"
        "for host, port in targets:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close()\n"
        "        print('reached', host, port)\n"
        "    except OSError as error:\n"
        "        print('blocked', host, port, error)\n"
    )
    result = stack.compose("exec", "-T", "admin", "python3", "-c", code, check=False)
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert "reached" not in output, output
    assert output.count("blocked") == len(targets), output


# Asks rspamd's controller from the metrics container, with the password it holds: prints
# the status of a read (/metrics) and of a privileged command (learning a message as spam).
_CONTROLLER = """
import urllib.error, urllib.request
password = open("/run/secrets/rspamd_metrics_password").read().strip()
def status(path, data=None):
    request = urllib.request.Request("http://rspamd:11334" + path, data=data,
                                     headers={"Password": password})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
print(status("/metrics"), status("/learnspam", b"Subject: x\\r\\n\\r\\nspam\\r\\n"))
"""


def test_the_metrics_services_rspamd_password_reads_but_cannot_learn(stack: RunningStack) -> None:
    # A foothold in the metrics service holds rspamd's read-only password: it may read the
    # counters, never teach the Bayes filter nor change a setting.
    result = stack.compose("exec", "-T", "metrics", "python3", "-c", _CONTROLLER, check=False)
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    read, learn = output.split()
    assert read == "200", output
    assert learn in ("401", "403"), output  # refused: the password is not the enable one


def test_a_delivery_moves_the_redis_and_postgres_series(stack: RunningStack, token: str) -> None:
    # rspamd looks keys up in Redis (rate limits, greylisting, statistics) for each scan.
    before = scrape_before_a_delivery(stack, token)
    lookups = ("redis_keyspace_hits_total", "redis_keyspace_misses_total")
    after = wait_for(
        token,
        "Redis lookups and a mail-database commit",
        lambda text: (
            sum(value(text, series) for series in lookups)
            > sum(value(before, series) for series in lookups)
            and labelled(text, "pg_stat_database_xact_commit", 'datname="mail"')
            > labelled(before, "pg_stat_database_xact_commit", 'datname="mail"')
        ),
    )
    assert labelled(after, "pg_database_size_bytes", 'datname="mail"') > 0
    assert value(after, "redis_memory_used_bytes") > 0


# Speaks RESP to Redis from the metrics container as its ACL user: prints each reply's first
# line (INFO answers with a bulk string, a refused command with -NOPERM).
_REDIS = """
import socket
password = open("/run/secrets/redis_metrics_password").read().strip()
def command(*words):
    data = b"*%d\\r\\n" % len(words)
    for word in words:
        data += b"$%d\\r\\n%s\\r\\n" % (len(word), word.encode())
    return data
with socket.create_connection(("redis", 6379), timeout=10) as redis:
    reader = redis.makefile("rb")
    for words in (("AUTH", "metrics", password), ("INFO", "server"), ("GET", "x"),
                  ("KEYS", "*"), ("CONFIG", "GET", "*"), ("SET", "x", "1")):
        redis.sendall(command(*words))
        line = reader.readline().decode().strip()
        if line.startswith("$"):
            reader.read(int(line[1:]) + 2)
        print(words[0], line.split()[0])
"""


def test_the_metrics_redis_user_may_read_info_but_no_key(stack: RunningStack) -> None:
    # A foothold in the metrics service holds the Redis password of its ACL user: INFO and
    # PING only, never a key (rspamd's statistics, rate limits) nor the config.
    result = stack.compose("exec", "-T", "metrics", "python3", "-c", _REDIS, check=False)
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    replies = dict(line.split() for line in output.splitlines())
    assert replies["AUTH"] == "+OK", output
    assert replies["INFO"].startswith("$"), output
    for refused in ("GET", "KEYS", "CONFIG", "SET"):
        assert replies[refused] == "-NOPERM", output


def _as_monitoring_login(stack: RunningStack, database: str) -> str:
    # From the db container (its own back-end address, not the metrics service's), with the
    # password on stdin, never in argv.
    password = (stack.root / "secrets" / "db_metrics_password").read_text().strip()
    script = (
        "read -r PGPASSWORD; export PGPASSWORD; "
        f"psql -X -h db -U mailstack_metrics -d {database} -tAc 'SELECT 1'"
    )
    result = stack.compose(
        "exec", "-T", "db", "bash", "-c", script, stdin=f"{password}\n".encode(), check=False
    )
    return result.stdout.decode() + result.stderr.decode()


def test_the_monitoring_login_reaches_statistics_only_from_the_metrics_service(
    stack: RunningStack,
) -> None:
    # pg_hba.conf admits it from the metrics service's address to `postgres` only: the same
    # password from another container, or to the mail directory, is refused.
    for database in ("postgres", "mail"):
        output = _as_monitoring_login(stack, database)
        assert "pg_hba.conf rejects connection" in output, output
    # And even where it signs in, it reads statistics, not the mail directory's tables.
    sql = "SET ROLE mailstack_metrics; SELECT count(*) FROM public.mailboxes"
    result = stack.compose(
        "exec", "-T", "db", "psql", "-X", "-h", "/run/postgresql", "-U", "postgres", "-d", "mail",
        "-tAc", sql, check=False,
    )  # fmt: skip
    output = result.stdout.decode() + result.stderr.decode()
    assert "permission denied for schema public" in output, output
