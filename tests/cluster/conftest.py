"""The cluster tests share one swarm of three docker-in-docker nodes (tests/cluster/nodes.py):
formed once for the package, removed with everything of it at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.nodes import Node, form_swarm, remove_nodes, start_nodes


@pytest.fixture(scope="package")
def nodes() -> Iterator[list[Node]]:
    try:
        started = start_nodes(3)
        form_swarm(started)
        yield started
    finally:
        remove_nodes()
