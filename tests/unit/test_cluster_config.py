"""The cluster section of mailstack.yaml (docs/cluster.md): the swarm's nodes, how mailstack
reaches each engine, their roles; every bad value one line naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from mailstack import services
from mailstack.errors import ConfigError
from mailstack.stack.config import Config, validate_config
from tests.conftest import REFERENCE

THREE = [
    {"name": "node1", "engine": "ssh://root@node1.example.org", "roles": ["edge", "mailbox", "db"]},
    {"name": "node2", "engine": "ssh://admin@192.0.2.12:2222", "roles": ["edge", "mailbox"]},
    {"name": "node3", "engine": "ssh://[2001:db8::13]", "roles": ["db"]},
]


def config(nodes: list[dict[str, Any]]) -> Config:
    return validate_config({**REFERENCE, "cluster": {"nodes": nodes}})


def test_no_nodes_is_one_host() -> None:
    assert validate_config(REFERENCE).cluster.nodes == []


def test_three_nodes_with_every_role() -> None:
    nodes = config(THREE).cluster.nodes
    assert [node.name for node in nodes] == ["node1", "node2", "node3"]
    assert nodes[1].engine == "ssh://admin@192.0.2.12:2222"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({1: {"name": "node1"}}, "name 'node1' is listed twice"),
        ({1: {"engine": "ssh://root@node1.example.org"}}, "engine"),
        ({0: {"engine": "tcp://node1.example.org:2375"}}, "ssh://[user@]host[:port]"),
        ({0: {"engine": "unix://run/docker.sock"}}, "absolute"),
        ({0: {"engine": "ssh://root@node1\nexample.org"}}, "cluster.nodes.0.engine"),
        ({0: {"engine": "ssh://root@bad_host!"}}, "ssh://[user@]host[:port]"),
        ({0: {"name": "Node_1"}}, "is not a node name"),
        ({0: {"roles": ["edge", "edge"]}}, "lists a role twice"),
        ({0: {"roles": ["web"]}}, "cluster.nodes.0.roles.0"),
        ({0: {"roles": []}}, "cluster.nodes.0.roles"),
        ({2: {"roles": ["edge"]}, 0: {"roles": ["edge", "mailbox"]}}, "the role db"),
    ],
)
def test_a_bad_cluster_is_one_line_naming_the_key(
    change: dict[int, dict[str, Any]], named: str
) -> None:
    nodes = [{**node, **change.get(index, {})} for index, node in enumerate(THREE)]
    with pytest.raises(ConfigError) as refused:
        config(nodes)
    message = refused.value.message
    assert "\n" not in message and named in message, message


def test_a_node_mailstack_runs_on_is_reached_by_its_socket() -> None:
    local = {**THREE[0], "engine": "unix:///var/run/docker.sock"}
    assert config([local, *THREE[1:]]).cluster.nodes[0].engine == "unix:///var/run/docker.sock"


def test_more_than_two_database_nodes_are_refused() -> None:
    nodes = [
        {**node, "roles": [*node["roles"], "db"]} if "db" not in node["roles"] else node
        for node in THREE
    ]
    with pytest.raises(ConfigError) as refused:
        config(nodes)
    assert "3 nodes have the role db" in refused.value.message


def test_docker_gwbridge_must_stay_apart_from_the_stack_networks() -> None:
    assert config(THREE).cluster.node_resolver == "172.18.0.1"
    with pytest.raises(ConfigError) as refused:
        validate_config(
            {**REFERENCE, "cluster": {"nodes": THREE, "gwbridge_subnet": "172.29.0.0/16"}}
        )
    assert "cluster.gwbridge_subnet overlaps network.frontend_subnet" in refused.value.message


def test_the_links_pool_must_stay_apart_from_the_stack_networks() -> None:
    with pytest.raises(ConfigError) as refused:
        validate_config({**REFERENCE, "cluster": {"nodes": THREE, "link_subnet": "172.29.80.0/23"}})
    assert "cluster.link_subnet overlaps network.frontend_subnet" in refused.value.message


def test_a_link_subnet_without_room_for_every_link_is_refused() -> None:
    # Each link takes the next /27 (services.LINK_PREFIX); nine of them need a /23.
    with pytest.raises(ConfigError) as refused:
        validate_config({**REFERENCE, "cluster": {"nodes": THREE, "link_subnet": "172.29.96.0/24"}})
    assert refused.value.message == (
        "mailstack.yaml: cluster: link_subnet 172.29.96.0/24 is too small: the cluster's "
        f"{len(services.LINKS)} links take a /27 each; allowed: a /23 or larger"
    )
    validate_config({**REFERENCE, "cluster": {"nodes": THREE, "link_subnet": "172.29.96.0/23"}})
