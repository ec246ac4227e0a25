"""`mailbox move` on a cluster (mailstack.accounts.homes): the copy, the switch, the sessions
ended, the copy again; a failure before the switch switches nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mailstack.accounts import homes
from mailstack.cluster import deployment
from mailstack.errors import ExternalCommandFailed
from mailstack.stack.stackdir import Stack
from tests.unit.clirun import invoke
from tests.unit.fakes import FakeContainers

NODES = ["node-a", "node-b"]
ADDRESS = "alice@example.test"
SYNC_FROM_A = "doveadm sync -u alice@example.test tcp:mailbox-node-a-for-dovecot:12347"


@pytest.fixture(autouse=True)
def no_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(homes, "settle", lambda seconds: None)


def cluster(home: str = "node-a", **answers: object) -> FakeContainers:
    return FakeContainers(
        by_marker=[
            ("SELECT coalesce(back_end", f"{home}\n".encode()),
            ("UPDATE mailboxes SET back_end", b"alice@example.test\n"),
            *answers.items(),  # type: ignore[list-item]
        ]
    )


def steps(run: FakeContainers) -> list[tuple[str, str]]:
    return [(call.service, call.text.split()[0] if call.service == "db" else " ".join(call.argv))
            for call in run.calls]  # fmt: skip


def test_a_move_copies_switches_ends_the_sessions_and_copies_again() -> None:
    run = cluster()
    move = homes.move_mailbox(run, ADDRESS, "node-b", NODES)
    assert move.moved and (move.source, move.target) == ("node-a", "node-b")
    assert steps(run) == [
        ("db", "SELECT"),
        ("mailbox-node-b", SYNC_FROM_A),  # the new back end pulls, over the proxy's link
        ("db", "UPDATE"),
        ("mailbox-node-a", "doveadm kick alice@example.test"),
        ("mailbox-node-b", SYNC_FROM_A),  # what reached the old one before the switch
    ]
    update = run.sent("UPDATE mailboxes")[0]
    assert update.variables().items() >= {"address": ADDRESS, "target": "node-b"}.items()
    assert "kept" in str(move) and "node-a" in str(move)


def test_a_mailbox_without_a_home_is_the_first_nodes() -> None:
    run = cluster()
    homes.move_mailbox(run, ADDRESS, "node-b", NODES)
    assert run.sent("SELECT coalesce(back_end")[0].variables()["first"] == "node-a"


def test_a_mailbox_already_there_is_left_alone() -> None:
    run = cluster(home="node-b")
    move = homes.move_mailbox(run, ADDRESS, "node-b", NODES)
    assert not move.moved and "nothing moved" in str(move)
    assert steps(run) == [("db", "SELECT")]


def test_a_sync_that_saw_changes_runs_again() -> None:
    passes: list[str] = []

    def changed_once(_call: object) -> bytes | Exception:
        passes.append("sync")
        if len(passes) == 1:
            return ExternalCommandFailed("docker exec (exit 2)", "changes during sync")
        return b""

    run = cluster(**{"doveadm sync": changed_once})
    assert homes.move_mailbox(run, ADDRESS, "node-b", NODES).moved
    assert len(passes) == 3  # two for the first copy, one after the switch


def test_a_copy_that_fails_switches_nothing() -> None:
    failed = ExternalCommandFailed("docker exec (exit 75)", "dsync(alice): Error: remote down")
    run = cluster(**{"doveadm sync": failed})
    with pytest.raises(ExternalCommandFailed) as raised:
        homes.move_mailbox(run, ADDRESS, "node-b", NODES)
    assert "remote down" in str(raised.value)
    assert raised.value.hint == "nothing was switched: the mailbox stays on node-a"
    assert not run.sent("UPDATE mailboxes") and not run.sent("doveadm kick")


def test_from_copies_what_stayed_behind_without_a_switch() -> None:
    run = cluster(home="node-b")
    move = homes.move_mailbox(run, ADDRESS, "node-b", NODES, source="node-a")
    assert move.moved and not run.sent("UPDATE mailboxes")
    assert [service for service, _ in steps(run)].count("mailbox-node-b") == 2


# --- the command: bad input in one line, nothing touched ---------------------------------------


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> FakeContainers:
    run = cluster()
    config = SimpleNamespace(cluster=SimpleNamespace(nodes=["x"], mailbox_nodes=NODES))
    monkeypatch.setattr(Stack, "load", lambda root: SimpleNamespace(compose=run, config=config))
    monkeypatch.setattr("mailstack.cli.accounts.executor", lambda stack: run)
    return run


def test_move_through_the_command(stack: FakeContainers) -> None:
    code, text = invoke("mailbox", "move", ADDRESS, "--to", "node-b")
    assert code == 0, text
    assert text.startswith("moved mailbox alice@example.test from node-a to node-b")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--to", "node-c"], "--to node-c: not a mailbox node of this cluster; allowed: "
                             "node-a, node-b"),
        (["--to", "node-b", "--from", "x;y"], "--from x;y: not a mailbox node of this cluster"),
    ],
)  # fmt: skip
def test_a_node_that_is_no_mailbox_node_is_refused(
    stack: FakeContainers, args: list[str], said: str
) -> None:
    code, text = invoke("mailbox", "move", ADDRESS, *args)
    assert code == 2 and said in text and len(text.strip().splitlines()) == 1
    assert not stack.calls


def test_one_host_has_nowhere_to_move_to(monkeypatch: pytest.MonkeyPatch) -> None:
    config = SimpleNamespace(cluster=SimpleNamespace(nodes=[], mailbox_nodes=[]))
    monkeypatch.setattr(Stack, "load", lambda root: SimpleNamespace(compose=None, config=config))
    code, text = invoke("mailbox", "move", ADDRESS, "--to", "node-b")
    assert code == 2 and "this stack runs on one host" in text


# --- the accounts commands that reach one mailbox's mail: its home back end -----------------


def test_what_goes_to_dovecot_runs_on_the_mailboxs_back_end() -> None:
    run = FakeContainers()
    routed = homes.HomeRouted(run, "node-b")
    routed.exec("dovecot", ["doveadm", "kick", ADDRESS])
    routed.exec("db", ["psql"], input=b"SELECT 1;")
    routed.exec("dav", ["ls"])
    assert [call.service for call in run.calls] == ["mailbox-node-b", "db", "dav"]


def test_a_cluster_mailbox_executor_asks_the_home_first(monkeypatch: pytest.MonkeyPatch) -> None:
    run = cluster(home="node-b")
    config = SimpleNamespace(cluster=SimpleNamespace(nodes=["x"], mailbox_nodes=NODES))
    stack = SimpleNamespace(compose=None, config=config)
    monkeypatch.setattr(deployment, "stack_executor", lambda stack: run)
    routed = deployment.mailbox_executor(stack, "Alice@example.test")  # type: ignore[arg-type]
    assert routed == homes.HomeRouted(run, "node-b")
    assert run.sent("SELECT coalesce(back_end")[0].variables()["address"] == ADDRESS


def test_one_host_mailbox_executor_is_compose_itself() -> None:
    compose = FakeContainers()
    config = SimpleNamespace(cluster=SimpleNamespace(nodes=[], mailbox_nodes=[]))
    stack = SimpleNamespace(compose=compose, config=config)
    assert deployment.mailbox_executor(stack, ADDRESS) is compose  # type: ignore[arg-type]
    assert not compose.calls


def test_reindex_all_is_refused_on_a_cluster(stack: FakeContainers) -> None:
    config = Stack.load(None).config  # type: ignore[arg-type]
    config.features = SimpleNamespace(search=True)
    code, text = invoke("mailbox", "reindex", "--all")
    assert code == 2 and "--all: not on a cluster yet" in text
    assert not stack.calls


def test_a_domain_purge_is_refused_on_a_cluster(stack: FakeContainers) -> None:
    config = Stack.load(None).config  # type: ignore[arg-type]
    config.domain = "example.test"
    code, text = invoke("domain", "remove", "other.test", "--force", "--purge", "--yes")
    assert code == 2 and "--purge: not for a whole domain on a cluster yet" in text
    assert not stack.calls
