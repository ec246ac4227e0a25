"""The backups and dns host reports (backup.report, mailauth.dnsreport), the dkim.rotate host
job (runtime.jobs), and what the admin service makes of them (api.hostviews): each body as
the host makes it from a stack (FakeContainers for Compose and psql, FakeEngine for restic,
a zone for the resolver), the rotation's refusals of a target the database hands over, and
who sees which domain."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailstack.api import hostviews, reportview, webdirectory
from mailstack.api.operations import ApiError
from mailstack.backup import report as backup_report
from mailstack.backup import restic, verification
from mailstack.errors import MailstackError
from mailstack.identity.principal import ROOT, Principal
from mailstack.images import builder, imagerefs
from mailstack.mailauth import dkim, dnscheck, dnsreport
from mailstack.mailauth.dnsrecords import domain_records, mta_sts_policy, sandbox_zone
from mailstack.runtime import hostreports, jobs, reports
from mailstack.stack import stackfiles
from mailstack.stack.secrets import BACKUP_PASSWORD, SECRETS_DIR
from mailstack.stack.stackdir import Stack, StackDir
from tests.unit.fakes import Call, FakeContainers, FakeEngine
from tests.unit.test_dnsrecords import ZoneLookup

DOMAINS = "FROM domains d"
CLAIM = "FOR UPDATE SKIP LOCKED"
FINISH = "SET state = :'state'"
QUEUE = "INSERT INTO host_jobs"
READ = "FROM host_reports WHERE"
PUBLISH = "INSERT INTO host_reports"
BACKUP_IMAGE = "mailstack/backup:test"
HOSTED = b"example.test,t,1,2026-12-06T12:00:00Z\nshop.test,t,0,2026-12-06T12:00:00Z\n"
DOMAIN_ADMIN = Principal("admin:shopkeeper", "domain_admin", frozenset({"shop.test"}))


def _stack(tmp_path: Path, fake: FakeContainers, **settings: object) -> Stack:
    config = stackfiles.initial_config(
        "mail.example.test", "example.test", {"mode": "sandbox", **settings}
    )
    stackfiles.init_stack(tmp_path / "stack", config, check_ports=False)
    imagerefs.write(tmp_path / "stack", {"backup": BACKUP_IMAGE})
    stack_dir = StackDir(tmp_path / "stack")
    fake.running = fake.running or ("db", "dovecot", "rspamd", "resolver")
    return Stack(stack_dir, stack_dir.load_config(), fake)  # type: ignore[arg-type]


# --- the dns report -------------------------------------------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The stack's resolver as the sandbox zone of the stack's keys at the time it is asked;
    the MTA-STS policy as the front serves it. Yields the names asked for."""
    asked: list[str] = []

    class SandboxResolver(ZoneLookup):
        def __init__(self, nameserver: str, timeout: float = 5.0) -> None:
            self.stack: Stack = monkeypatch.stack  # type: ignore[attr-defined]
            config = self.stack.config
            zone = sandbox_zone(config, dkim.load_keys(self.stack.dir.root))
            super().__init__("".join(f"{n}. 300 IN {t} {d}\n" for n, t, d in zone))
            self.nameserver = nameserver

        def records(self, name: str, rtype: str) -> list[str]:
            asked.append(name)
            return super().records(name, rtype)

    def fetcher(cafile: Path | None) -> dnscheck.PolicyFetch:
        policy = mta_sts_policy(monkeypatch.stack.config).text  # type: ignore[attr-defined]
        return lambda host, address: (200, "text/plain", policy)

    monkeypatch.setattr(dnscheck, "Lookup", SandboxResolver)
    monkeypatch.setattr(dnscheck, "https_fetcher", fetcher)
    yield asked


def _dns_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Stack, FakeContainers]:
    fake = FakeContainers(by_marker=[(DOMAINS, HOSTED)])
    stack = _stack(tmp_path, fake)
    dkim.ensure_key(stack.dir.root, "shop.test")
    monkeypatch.stack = stack  # type: ignore[attr-defined]
    return stack, fake


def test_the_dns_reports_are_each_domains_own_and_an_index_of_their_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: list[str]
) -> None:
    stack, fake = _dns_stack(tmp_path, monkeypatch)
    made = dnsreport.dns_reports(stack)
    assert list(made) == ["dns", "dns:example.test", "dns:shop.test"]
    index, first, shop = made["dns"], made["dns:example.test"], made["dns:shop.test"]
    assert [line["domain"] for line in index["domains"]] == ["example.test", "shop.test"]
    assert (index["count"], index["left_out"]) == (2, [])
    # The records are `dns records`' own, zone lines included.
    keys = dkim.load_keys(stack.dir.root)
    expected = [record.zone_line for record in domain_records(stack.config, "shop.test", keys)]
    assert [record["zone_line"] for record in shop["records"]] == expected
    (key,) = shop["keys"]
    assert key["state"] == "active" and key["record_name"].endswith("._domainkey.shop.test")
    assert (shop["domain"], shop["hostname"]) == ("shop.test", "mail.example.test")
    # The sandbox zone serves the first domain whole, and only the DKIM key of the others.
    assert first["verdict"] == "pass" and first["unchecked"] == ""
    verdicts = {check["kind"]: check["verdict"] for check in shop["checks"]}
    assert (verdicts["DKIM"], verdicts["MX"], shop["verdict"]) == ("pass", "FAIL", "FAIL")
    mx = next(check for check in shop["checks"] if check["kind"] == "MX")
    assert mx["fix"] == "publish: shop.test. 3600 IN MX 10 mail.example.test."
    # The index: each domain's verdict and how many checks gave each; the server's records.
    shop_line = index["domains"][1]
    found = [check["verdict"] for check in shop["checks"]]
    counted = {verdict: found.count(verdict) for verdict in ("pass", "warn", "FAIL")}
    assert shop_line == {"domain": "shop.test", "verdict": "FAIL", "counts": counted,
                         "unchecked": ""}  # fmt: skip
    assert index["server"]["checks"] and index["server"]["records"][0]["kind"] == "A"
    # DANE's records of the served key are judged with the server's (check health sees them).
    tlsa = [c for c in index["server"]["checks"] if c["kind"] == "TLSA"]
    assert [c["verdict"] for c in tlsa] == ["pass"]  # the sandbox zone is not signed
    assert "TLSA" in {record["kind"] for record in index["server"]["records"]}
    # As `check dns` does: the resolver's cache is flushed for the names before asking.
    flushed = [command[-1] for command in fake.commands if "flush_zone" in command]
    assert flushed == ["mail.example.test", "example.test", "shop.test"]
    sizes = {topic: len(json.dumps(body, separators=(",", ":"))) for topic, body in made.items()}
    assert max(sizes.values()) < hostreports.MAX_REPORT_BYTES
    print(f"\ndns reports: {sizes} bytes")


def test_sixty_domains_each_get_their_report_and_the_index_lists_all_sixty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: list[str]
) -> None:
    hosted = ["example.test"] + [f"d{number:02}.example.test" for number in range(59)]
    rows = "".join(f"{name},t,0,2026-12-06T12:00:00Z\n" for name in hosted)
    fake = FakeContainers(by_marker=[(DOMAINS, rows.encode())])
    stack = _stack(tmp_path, fake)
    for name in hosted:  # each its own key (the costly 6 KB of a report)
        dkim.ensure_key(stack.dir.root, name)
    monkeypatch.stack = stack  # type: ignore[attr-defined]
    published = reports.publish_one(stack, reports.PRODUCERS[hostreports.DNS])
    assert str(published) == "dns report published, and its 60 dns:… parts"
    sent = {c.variables()["topic"]: json.loads(c.variables()["body"]) for c in fake.sent(PUBLISH)}
    assert [topic for topic in sent if topic.startswith("dns:")] == [f"dns:{n}" for n in hosted]
    assert all(sent[f"dns:{name}"]["domain"] == name for name in hosted)
    assert all(sent[f"dns:{name}"]["records"] for name in hosted)
    index = sent["dns"]
    assert [line["domain"] for line in index["domains"]] == hosted
    assert (index["count"], index["left_out"]) == (60, [])
    sizes = [len(fake_call.variables()["body"]) for fake_call in fake.sent(PUBLISH)]
    assert max(sizes) < hostreports.MAX_REPORT_BYTES
    # The reports of domains no longer hosted go: every dns:<domain> but these sixty.
    (pruned,) = fake.sent("DELETE FROM host_reports")
    assert pruned.variables()["prefix"] == "dns:"
    assert json.loads(pruned.variables()["keep"]) == [f"dns:{name}" for name in hosted]
    print(f"\n60 domains: index {len(json.dumps(index))} bytes, largest report {max(sizes)}")


HOSTILE_TOPICS = [
    "dns:../../etc/passwd",
    "dns:shop.test'; DELETE FROM host_reports; --",
    "dns:Shop.test",
    "dns:shop.test\nqueue",
    "dns:shop.test ",
    "dns:localhost",
    "dns:-shop.test",
    "dns:shop_1.test",
    "dns:" + "a" * 64 + ".test",
    "dns:" + ".".join(["a" * 63] * 4) + ".test",
    "dns:",
    "queue:shop.test",
    "dnsx",
]


@pytest.mark.parametrize("topic", HOSTILE_TOPICS)
def test_a_hostile_domain_name_cannot_become_a_topic(topic: str) -> None:
    assert not hostreports.is_topic(topic) and hostreports.topic_domain(topic) is None
    fake = FakeContainers()
    with pytest.raises(ValueError, match="not a host report topic"):
        hostreports.publish(fake, topic, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a host report topic"):
        hostreports.read(fake, topic)  # type: ignore[arg-type]
    if topic.startswith("dns:"):
        with pytest.raises(MailstackError, match=r"^DOMAIN: "):
            hostreports.domain_dns_topic(topic.removeprefix("dns:"))
    assert not fake.calls


def test_a_domain_name_the_database_hands_over_becomes_no_topic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: list[str]
) -> None:
    hostile = b'"shop.test\'; DROP TABLE host_reports; --",t,0,2026-12-06T12:00:00Z\n'
    stack, _ = _dns_stack(tmp_path, monkeypatch)
    stack.compose.by_marker[0] = (DOMAINS, HOSTED + hostile)  # type: ignore[attr-defined]
    made = dnsreport.dns_reports(stack)
    assert list(made) == ["dns", "dns:example.test", "dns:shop.test"]
    line = made["dns"]["domains"][-1]
    assert line["verdict"] is None and line["unchecked"].startswith("DOMAIN: ")


def test_the_migration_allows_the_same_topics(tmp_path: Path) -> None:
    """0016's CHECK and hostreports' rule agree (the database's regular expression, in
    Python's words: the same characters, labels and length)."""
    sql = Path(dnsreport.__file__).parents[1] / "migrations" / "0016_dns_reports_per_domain.sql"
    text = sql.read_text()
    pattern = text.split("topic ~ '", 1)[1].split("'", 1)[0]
    bound = int(text.split("char_length(topic) <= 4 + ", 1)[1].split()[0].rstrip(")"))
    import re

    def database(topic: str) -> bool:
        fixed = topic in hostreports.TOPICS
        return fixed or (len(topic) <= 4 + bound and re.search(pattern, topic) is not None)

    for topic in [*HOSTILE_TOPICS, "dns", "health", "dns:shop.test", "dns:xn--bcher-kva.test"]:
        if "\n" in topic:  # Python's $ also matches before a final newline; PostgreSQL's not
            continue
        assert database(topic) == hostreports.is_topic(topic), topic


def test_a_rotation_under_way_shows_the_new_key_as_pending_and_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: list[str]
) -> None:
    stack, _ = _dns_stack(tmp_path, monkeypatch)
    new = dkim.create_rotation_key(stack.dir.root, "shop.test")
    shop = dnsreport.dns_reports(stack)["dns:shop.test"]
    states = {key["selector"]: key["state"] for key in shop["keys"]}
    assert states[new.selector] == "pending" and sorted(states.values()) == ["active", "pending"]
    published = [r["name"] for r in shop["records"] if r["kind"] == "DKIM"]
    assert new.record_name in published and len(published) == 2


def test_one_domains_report_is_remade_with_its_line_of_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: list[str]
) -> None:
    stack, fake = _dns_stack(tmp_path, monkeypatch)
    whole = dnsreport.dns_reports(stack)
    stale = {**whole["dns"], "domains": [
        {**line, "verdict": "pass"} for line in whole["dns"]["domains"]]}  # fmt: skip
    out = io.StringIO()
    csv.writer(out).writerow(["dns", json.dumps(stale), "2026-12-06T19:00:00Z", 60])
    fake.by_marker.append((READ, out.getvalue().encode()))
    served.clear()
    made = dnsreport.domain_reports(stack, "dns:shop.test")
    assert (
        list(made) == ["dns:shop.test", "dns"] and made["dns:shop.test"] == whole["dns:shop.test"]
    )
    assert [line["verdict"] for line in made["dns"]["domains"]] == ["pass", "FAIL"]
    assert "example.test" not in served  # only the one domain asked about
    for other in ("dns:elsewhere.test", "dns:../x", "dns"):
        with pytest.raises(MailstackError, match=r"^TOPIC: "):
            dnsreport.domain_reports(stack, other)


def test_the_dns_checks_stop_when_their_time_is_up_and_the_records_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: list[str]
) -> None:
    stack, _ = _dns_stack(tmp_path, monkeypatch)
    ticks = iter([0.0, 1.0, dnsreport.CHECK_SECONDS + 1])  # start, first domain, second
    made = dnsreport.dns_reports(stack, clock=lambda: next(ticks))
    first, shop = made["dns:example.test"], made["dns:shop.test"]
    assert first["checks"] and shop["checks"] is None and shop["verdict"] is None
    assert shop["unchecked"].startswith("not checked in this run: its 120 s")
    assert shop["records"] and "shop.test" not in served
    assert made["dns"]["domains"][1]["unchecked"] == shop["unchecked"]


def test_an_index_too_large_names_the_domains_it_leaves_out_and_their_reports_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: list[str]
) -> None:
    stack, _ = _dns_stack(tmp_path, monkeypatch)
    whole = dnsreport.dns_reports(stack)
    first = len(json.dumps(whole["dns"]["domains"][0], separators=(",", ":")))
    monkeypatch.setattr(dnsreport, "_INDEX_BUDGET", first + 10)
    made = dnsreport.dns_reports(stack)
    assert [line["domain"] for line in made["dns"]["domains"]] == ["example.test"]
    assert (made["dns"]["count"], made["dns"]["left_out"]) == (2, ["shop.test"])
    assert made["dns:shop.test"]["records"]


def test_a_resolver_that_does_not_answer_leaves_the_records_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: list[str]
) -> None:
    stack, _ = _dns_stack(tmp_path, monkeypatch)

    def silent(self: object, name: str, rtype: str) -> list[str]:
        raise dnscheck.DnsLookupFailed(f"the resolver 172.1.2.53 does not answer ({name} {rtype})")

    monkeypatch.setattr(dnscheck.Lookup, "records", silent)
    made = dnsreport.dns_reports(stack)
    server = made["dns"]["server"]
    assert server["checks"] is None
    assert server["unchecked"].startswith("not checked: the resolver 172.1.2.53")
    parts = [made["dns:example.test"], made["dns:shop.test"]]
    assert all(entry["checks"] is None and entry["records"] for entry in parts)


# --- the backups report ---------------------------------------------------------------------


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    fake = FakeEngine(images={BACKUP_IMAGE: "sha256:backup"})
    # The image builder too: it would otherwise ask the real engine for the backup image and
    # build it (debootstrap) when that engine has none.
    for module in (restic, verification, builder):
        monkeypatch.setattr(module, "DOCKER", fake)
    return fake


def _backed_up(tmp_path: Path) -> Stack:
    """A stack whose local repository exists (restic's config file) with its password."""
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / "config").write_bytes(b"restic")
    stack = _stack(tmp_path, FakeContainers(), backup={"target": str(repository)})
    (stack.dir.root / SECRETS_DIR / BACKUP_PASSWORD).write_text("x" * 43 + "\n")
    return stack


def test_a_stack_without_a_repository_is_reported_without_starting_restic(
    tmp_path: Path, engine: FakeEngine
) -> None:
    stack = _stack(tmp_path, FakeContainers(), backup={"target": str(tmp_path / "none")})
    body = backup_report.backups_report(stack)
    assert body["repository"] == "not made yet"
    assert (body["count"], body["snapshots"], body["last_verify"]) == (0, [], None)
    assert engine.ran == [] and engine.events == []


def test_the_backups_report_has_the_newest_fifty_snapshots_as_backup_list_has_them(
    tmp_path: Path, engine: FakeEngine
) -> None:
    listing = [
        {"id": f"{n:064x}", "short_id": f"{n:08x}", "time": f"2026-12-{1 + n // 24:02d}T"
         f"{n % 24:02d}:00:00Z", "hostname": "mailstack-backup", "tags": ["mailstack"]}
        for n in range(60)
    ]  # fmt: skip
    listing.append({**listing[-1], "id": "e" * 64, "tags": ["mailstack", "warm-pass"]})
    engine.jobs.append(("snapshots --json", json.dumps(listing).encode()))
    body = backup_report.backups_report(_backed_up(tmp_path))
    assert (body["repository"], body["count"], body["left_out"]) == ("present", 60, 10)
    assert [item["short_id"] for item in body["snapshots"]] == [f"{n:08x}" for n in range(10, 60)]
    assert body["snapshots"][0]["tags"] == ["mailstack"]


def test_a_verify_that_fails_is_recorded_and_reported_with_its_line(
    tmp_path: Path, engine: FakeEngine
) -> None:
    stack = _backed_up(tmp_path)
    listing = [{"id": "a" * 64, "short_id": "aaaaaaaa", "time": "2026-12-06T10:00:00Z"}]
    engine.jobs += [
        ("snapshots --json", json.dumps(listing).encode()),
        ("check", (1, b"", b"Fatal: pack 0123 is damaged\n")),
    ]
    with pytest.raises(MailstackError):
        verification.verify(stack)
    last = backup_report.backups_report(stack)["last_verify"]
    assert last["ok"] is False and last["error"].startswith("restic check (exit 1)")
    assert last["time"].endswith("Z") and last["checks"] == []


def test_the_last_verify_record_round_trips(tmp_path: Path) -> None:
    stack_dir = StackDir(tmp_path)
    result = verification.VerifyResult(
        "aaaaaaaa", (verification.Check("mail", True, "3 messages in 1 mailbox(es)"),), 12.34
    )
    verification.record_verify(stack_dir, result)
    last = verification.last_verify(stack_dir)
    assert last is not None and (last.ok, last.snapshot, last.seconds) == (True, "aaaaaaaa", 12.3)
    assert last.checks == result.checks and last.error == ""
    assert oct((stack_dir.state_dir / verification.VERIFY_RECORD).stat().st_mode)[-3:] == "600"
    (stack_dir.state_dir / verification.VERIFY_RECORD).write_text("{not json")
    assert verification.last_verify(stack_dir) is None


# --- dkim.rotate, the host job --------------------------------------------------------------


def _claims(*rows: bytes) -> Any:
    answers = list(rows)

    def answer(call: Call) -> bytes:
        return answers.pop(0) if answers else b""

    return answer


def _drill_answers(stack: Stack, *, visible: bool) -> Any:
    """The stack's resolver asked for a key's TXT record: the key on disk, or nothing."""

    def answer(call: Call) -> bytes:
        if not visible:
            return b""
        wanted = call.argv[2]
        keys = [key for key in dkim.load_keys(stack.dir.root) if key.record_name == wanted]
        return "".join(f"{wanted}. 300 IN TXT {key.zone_data}\n" for key in keys).encode()

    return answer


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The reports a run makes (only recorded here: their bodies are tested above)."""
    topics: list[str] = []
    monkeypatch.setattr(
        reports,
        "PRODUCERS",
        {
            topic: reports.Producer(
                topic,
                3600,
                lambda stack, t=topic: topics.append(t) or {},
                make_part=lambda stack, part: topics.append(part) or {},
            )
            for topic in hostreports.TOPICS
        },
    )
    return topics


def _finished(fake: FakeContainers) -> list[tuple[str, str]]:
    return [(c.variables()["state"], c.variables()["reason"]) for c in fake.sent(FINISH)]


def test_a_rotation_job_publishes_the_new_key_then_signs_with_it_and_remakes_the_dns_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: list[str]
) -> None:
    fake = FakeContainers(
        by_marker=[(CLAIM, _claims(b"9,dkim.rotate,shop.test\n")), (DOMAINS, HOSTED)]
    )
    stack = _stack(tmp_path, fake)
    old = dkim.ensure_key(stack.dir.root, "shop.test").key.selector
    fake.by_marker.append(("drill", _drill_answers(stack, visible=True)))
    monkeypatch.setattr(jobs.dkim_rotation.lifecycle, "wait_healthy", lambda *a, **k: None)
    made.clear()
    hostreports_ages = [(hostreports.DNS, 5)]
    fake.by_marker.append(("FROM host_reports;", _ages(hostreports_ages)))
    jobs.run_jobs(stack)
    (state, reason), *_ = _finished(fake)
    active = dkim.read_selectors(stack.dir.root)["shop.test"]
    assert state == "done" and active != old
    assert reason == (
        f"DKIM key {active} of shop.test published and signing now; the old key {old} "
        "stays published until `mailstack dkim retire shop.test`"
    )
    # The sandbox resolver restarted to serve the record, then rspamd to sign with it.
    assert [c for c in fake.commands if c[0] == "restart"] == [
        ["restart", "resolver"],
        ["restart", "rspamd"],
    ]
    # That domain's report made again in the same run, though an hour is not up; not all.
    assert "dns:shop.test" in made and hostreports.DNS not in made


def test_a_rotation_whose_record_is_not_visible_yet_keeps_signing_with_the_old_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: list[str]
) -> None:
    fake = FakeContainers(
        by_marker=[(CLAIM, _claims(b"9,dkim.rotate,shop.test\n")), (DOMAINS, HOSTED)]
    )
    stack = _stack(tmp_path, fake)
    old = dkim.ensure_key(stack.dir.root, "shop.test").key.selector
    fake.by_marker.append(("drill", _drill_answers(stack, visible=False)))
    monkeypatch.setattr(jobs.dkim_rotation.lifecycle, "wait_healthy", lambda *a, **k: None)
    jobs.run_jobs(stack)
    (state, reason), *_ = _finished(fake)
    assert state == "done" and dkim.read_selectors(stack.dir.root)["shop.test"] == old
    assert f"still signing with {old}" in reason and "is not visible" in reason
    assert [c for c in fake.commands if c[0] == "restart"] == [["restart", "resolver"]]


@pytest.mark.parametrize(
    ("target", "line"),
    [
        ("../../etc/passwd", "DOMAIN: "),
        ("shop.test\nother.test", "DOMAIN: "),
        ("elsewhere.test", "elsewhere.test is not a mail domain of this stack; no key rotated"),
    ],
)
def test_a_rotation_target_the_database_hands_over_is_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: list[str], target: str, line: str
) -> None:
    claim = ",".join(["9", "dkim.rotate", json.dumps(target)]).encode() + b"\n"
    fake = FakeContainers(by_marker=[(CLAIM, _claims(claim)), (DOMAINS, HOSTED)])
    stack = _stack(tmp_path, fake)
    before = sorted(path.name for path in (stack.dir.root / "dkim").iterdir())
    jobs.run_jobs(stack)
    ((state, reason),) = _finished(fake)
    assert state == "failed" and reason.startswith(line)
    assert sorted(path.name for path in (stack.dir.root / "dkim").iterdir()) == before
    assert not [c for c in fake.commands if c[0] == "restart"]


@pytest.mark.parametrize(
    ("target", "state", "reason"),
    [
        ("dns:shop.test", "done", "the dns:shop.test report is made in this run"),
        ("dns:elsewhere.test", "failed", "TOPIC: elsewhere.test is not a mail domain"),
        ("dns:../../etc", "failed", "TOPIC: 'dns:../../etc' is not a host report"),
        ("dns:Shop.test", "failed", "TOPIC: 'dns:Shop.test' is not a host report"),
    ],
)
def test_a_refresh_of_one_domains_report_is_checked_again_and_remakes_only_it(
    tmp_path: Path, made: list[str], target: str, state: str, reason: str
) -> None:
    claim = ",".join(["9", "report.refresh", json.dumps(target)]).encode() + b"\n"
    fake = FakeContainers(by_marker=[(CLAIM, _claims(claim)), (DOMAINS, HOSTED)])
    fake.by_marker.append(("FROM host_reports;", _ages([(t, 5) for t in hostreports.TOPICS])))
    stack = _stack(tmp_path, fake)
    jobs.run_jobs(stack)
    ((finished, why),) = _finished(fake)
    assert finished == state and why.startswith(reason), why
    assert made == ([target] if state == "done" else [])


def _ages(rows: list[tuple[str, int]]) -> bytes:
    return "".join(f"{topic},{age}\n" for topic, age in rows).encode()


# --- what the admin service shows, and to whom -------------------------------------------------


def _reported(topic: str, body: object, age: int = 42) -> FakeContainers:
    out = io.StringIO()
    csv.writer(out).writerow([topic, json.dumps(body), "2026-12-06T19:00:00Z", age])
    return FakeContainers(by_marker=[(READ, out.getvalue().encode()), (DOMAINS, HOSTED)])


DNS_INDEX = {
    "hostname": "mail.example.test",
    "resolver": "172.30.10.53",
    "server": {"records": [{"kind": "A"}], "checks": [], "unchecked": ""},
    "domains": [
        {"domain": "example.test", "verdict": "pass", "counts": {"pass": 9}, "unchecked": ""},
        {"domain": "shop.test", "verdict": "FAIL", "counts": {"FAIL": 2}, "unchecked": ""},
    ],
    "count": 3,
    "left_out": ["zz.test"],
}
SHOP_DNS = {
    "hostname": "mail.example.test",
    "resolver": "172.30.10.53",
    "domain": "shop.test",
    "records": [{"kind": "MX"}],
    "keys": [],
    "checks": [],
    "unchecked": "",
    "verdict": "pass",
}


def test_a_domain_administrator_sees_only_its_domains_and_not_the_servers_records() -> None:
    fake = _reported("dns", DNS_INDEX)
    shown = hostviews.dns(fake, DOMAIN_ADMIN)  # type: ignore[arg-type]
    assert [line["domain"] for line in shown["index"]] == ["shop.test"]
    assert shown["server"] is None and shown["left_out"] == [] and shown["domains"] == []
    assert shown["report"]["as_of"] == "as of 19:00:00 UTC, 42 s ago"
    assert fake.sent(READ)[0].variables()["topic"] == "dns"  # the index
    everything = hostviews.dns(_reported("dns", DNS_INDEX), ROOT)  # type: ignore[arg-type]
    assert [line["domain"] for line in everything["index"]] == ["example.test", "shop.test"]
    assert everything["server"] is not None and everything["left_out"] == ["zz.test"]


@pytest.mark.parametrize("other", ["example.test", "does-not-exist.test"])
def test_naming_another_domain_is_refused_with_one_line_whether_it_exists_or_not(
    other: str,
) -> None:
    fake = _reported("dns", DNS_INDEX)
    for ask in (hostviews.dns, hostviews.domain_dns, hostviews.rotate_dkim, hostviews.refresh_dns):
        with pytest.raises(ApiError) as refused:
            ask(fake, DOMAIN_ADMIN, other)  # type: ignore[arg-type]
        assert (refused.value.status, refused.value.message) == (
            403,
            f"{other} is not a domain you manage",
        )
    assert not fake.sent(QUEUE) and not fake.sent(READ)


def test_one_domains_dns_is_its_own_report_and_a_domain_without_one_is_not_found() -> None:
    fake = _reported("dns:shop.test", SHOP_DNS)
    found = hostviews.domain_dns(fake, DOMAIN_ADMIN, "SHOP.test")  # type: ignore[arg-type]
    assert found["domain"] == "shop.test" and found["report"]["age_seconds"] == 42
    assert "hostname" not in found and found["records"] == [{"kind": "MX"}]
    assert fake.sent(READ)[0].variables()["topic"] == "dns:shop.test"
    page = hostviews.dns(fake, DOMAIN_ADMIN, "shop.test")  # type: ignore[arg-type]
    assert page["domains"] == [SHOP_DNS] and page["index"] == [] and page["server"] is None
    with pytest.raises(ApiError) as missing:
        hostviews.domain_dns(FakeContainers(), ROOT, "zz.test")  # type: ignore[arg-type]
    assert missing.value.status == 404
    assert missing.value.message.startswith("the DNS report has no domain zz.test (the host has")
    with pytest.raises(ApiError) as hostile:
        hostviews.domain_dns(fake, ROOT, "x'; DROP TABLE domains; --")  # type: ignore[arg-type]
    assert hostile.value.status == 400 and hostile.value.message.startswith("DOMAIN: ")


def test_a_rotation_is_queued_for_a_hosted_domain_the_caller_manages() -> None:
    fake = _reported("dns", DNS_INDEX)
    fake.by_marker.insert(0, (QUEUE, b"17\n"))
    queued = hostviews.rotate_dkim(fake, DOMAIN_ADMIN, "shop.test")  # type: ignore[arg-type]
    assert queued == {
        "domain": "shop.test",
        "job": 17,
        "note": "queued as host job #17; the host does it within a minute",
    }
    assert (
        fake.sent(QUEUE)[0].variables().items()
        >= {"kind": "dkim.rotate", "target": "shop.test"}.items()
    )
    with pytest.raises(ApiError) as unknown:
        hostviews.rotate_dkim(fake, ROOT, "gone.test")  # type: ignore[arg-type]
    assert (unknown.value.status, unknown.value.message) == (404, "domain gone.test does not exist")
    assert len(fake.sent(QUEUE)) == 1


def test_backups_are_for_administrators_only() -> None:
    body = {"target": "/srv/b", "repository": "present", "count": 1, "left_out": 0,
            "snapshots": [{"short_id": "aaaaaaaa"}], "last_verify": None}  # fmt: skip
    fake = _reported("backups", body)
    with pytest.raises(ApiError) as refused:
        hostviews.backups(fake, DOMAIN_ADMIN)  # type: ignore[arg-type]
    assert (refused.value.status, refused.value.message) == (
        403,
        "only an administrator may do this",
    )
    assert not fake.sent(READ)
    shown = hostviews.backups(fake, ROOT)  # type: ignore[arg-type]
    assert shown["snapshots"] == [{"short_id": "aaaaaaaa"}] and shown["count"] == 1


def test_a_report_not_made_yet_or_made_as_an_error_says_so() -> None:
    empty = hostviews.backups(FakeContainers(), ROOT)  # type: ignore[arg-type]
    assert (
        empty["report"]["taken"] is None and "not made this report yet" in empty["report"]["as_of"]
    )
    failed = hostviews.backups(_reported("backups", {"error": "restic: wrong password"}), ROOT)  # type: ignore[arg-type]
    assert failed["report"]["error"] == "restic: wrong password" and failed["snapshots"] == []


def test_a_refresh_of_a_server_wide_report_is_for_administrators_the_dns_one_for_any() -> None:
    fake = FakeContainers(by_marker=[(QUEUE, b"5\n")])
    with pytest.raises(ApiError) as refused:
        reportview.refresh(fake, DOMAIN_ADMIN, "backups")  # type: ignore[arg-type]
    assert refused.value.status == 403 and not fake.sent(QUEUE)
    assert reportview.refresh(fake, DOMAIN_ADMIN, "dns")["job"] == 5  # type: ignore[arg-type]
    assert (
        fake.sent(QUEUE)[0].variables().items()
        >= {"kind": "report.refresh", "target": "dns"}.items()
    )
    # A domain's own report: whoever manages the domain (its page's "Refresh now").
    assert hostviews.refresh_dns(fake, DOMAIN_ADMIN, "Shop.Test")["topic"] == "dns:shop.test"  # type: ignore[arg-type]
    assert fake.sent(QUEUE)[1].variables()["target"] == "dns:shop.test"
    for topic, status in (("dns:example.test", 403), ("dns:../x", 404), ("dns:Shop.test", 404)):
        with pytest.raises(ApiError) as refused:
            reportview.refresh(fake, DOMAIN_ADMIN, topic)  # type: ignore[arg-type]
        assert refused.value.status == status, topic
    with pytest.raises(ApiError) as hostile:
        hostviews.refresh_dns(fake, ROOT, "../../x")  # type: ignore[arg-type]
    assert hostile.value.status == 400 and hostile.value.message.startswith("DOMAIN: ")
    assert len(fake.sent(QUEUE)) == 2


def test_the_password_confirmation_returns_to_the_dns_page_and_no_url_it_names() -> None:
    assert webdirectory.return_path("/admin/dns") == "/admin/dns"
    for requested in ("/admin/dns?domain=x", "//evil.test/admin/dns", "/admin/dns/rotate"):
        assert webdirectory.return_path(requested) == webdirectory.DEFAULT_RETURN
