"""The cluster test's ground (docs/cluster.md): three docker-in-docker nodes form a swarm of
three managers, take images without a registry, and run a global service whose port is
published in host mode on every node (how the edge's mail ports are published: the
client's own address reaches the daemon), each node answering for itself."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.cluster.nodes import Node, form_swarm, load_images, remove_nodes, start_nodes

pytestmark = pytest.mark.e2e

PROBE_IMAGE = "mailstack/debian:bookworm"  # the base every mailstack image starts from
PROBE_PORT = 8080
# Answers each connection with the name of the node its task runs on (perl-base is in
# Debian's minimal base).
PROBE = (
    "use IO::Socket::INET; my $s = IO::Socket::INET->new(Listen => 5, LocalPort => "
    f"{PROBE_PORT}, ReuseAddr => 1) or die $!; while (my $c = $s->accept) "
    "{ print $c `hostname`; close $c }"
)


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[Node]]:
    try:
        started = start_nodes(3)
        form_swarm(started)
        yield started
    finally:
        remove_nodes()


def test_three_managers_form_a_swarm_with_one_leader(nodes: list[Node]) -> None:
    listed = (
        nodes[0]
        .docker("node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}")
        .split("\n")
    )
    rows = sorted(line.split() for line in listed if line)
    assert [row[0] for row in rows] == [node.name for node in nodes]
    assert all(row[1] == "Ready" for row in rows), rows
    statuses = sorted(row[2] for row in rows)
    assert statuses == ["Leader", "Reachable", "Reachable"], rows


def test_a_global_service_answers_on_every_node_in_host_mode(nodes: list[Node]) -> None:
    load_images(nodes, [PROBE_IMAGE])
    nodes[0].docker(
        "service", "create", "--detach", "--name", "probe", "--mode", "global",
        "--hostname", "{{.Node.Hostname}}",
        "--publish", f"mode=host,target={PROBE_PORT},published={PROBE_PORT}",
        PROBE_IMAGE, "perl", "-e", PROBE,
    )  # fmt: skip
    answers = {node.name: _answer(node.address) for node in nodes}
    assert answers == {node.name: node.name for node in nodes}


def _answer(address: str, timeout: float = 180) -> str:
    """The probe's answer on a node's own address, once its task runs there."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, PROBE_PORT), timeout=5) as connection:
                answer = connection.recv(256).decode().strip()
                if answer:
                    return answer
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no probe answer on {address}:{PROBE_PORT} in {timeout} s")
        time.sleep(1)
