"""Docker-in-docker nodes for the cluster test (docs/cluster.md, "Tests").

Swarm never runs on the host engine: putting an engine that runs Compose stacks into swarm
mode (or out of it) broke their embedded DNS. Each node is a container running Debian's own
engine (tests/cluster/node/), on a bridge network of its own; the nodes form a swarm among
themselves, and images reach them by `docker save | docker load` (no registry here).

The container flags are the ones verified on this kind of VM (DESIGN.md): no --privileged
(it needs CAP_SYS_RESOURCE, which the VM lacks), every other capability, no seccomp or
masked /proc paths, a private cgroup namespace, and a volume for the node's /var/lib/docker
(overlay2 works on it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

NODE_CONTEXT = Path(__file__).with_name("node")
# MAILSTACK_CLUSTER_SLOT=1..9 runs a second harness beside the first (CI uses 0), as the
# e2e tests' MAILSTACK_E2E_SLOT does: its own names, network and socket directory.
_SLOT = int(os.environ.get("MAILSTACK_CLUSTER_SLOT", "0"))
_NAME = "mailstack-cluster" + (str(_SLOT) if _SLOT else "")
NETWORK = _NAME
SUBNET = f"172.27.{200 + _SLOT}.0/24"
PREFIX = f"{_NAME}-node"
# Each node's engine socket, reachable from the host (tests/cluster/node/entrypoint).
SOCKETS = Path("/run") / _NAME
ENGINE_START_SECONDS = 120  # generous: the suite runs e2e stacks beside it
_NODE_FLAGS = (
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined",
    "--cgroupns", "private",
)  # fmt: skip


def docker(*args: str, stdin: bytes | None = None, timeout: float = 300) -> str:
    """The host's docker CLI; a failure raises with its output."""
    done = subprocess.run(
        ["docker", *args], input=stdin, capture_output=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args[:4])} exited {done.returncode}: "
            + (done.stderr + done.stdout).decode(errors="replace")[-2000:]
        )
    return done.stdout.decode()


@dataclass(frozen=True)
class Node:
    name: str  # the container's name and the node's hostname
    address: str  # on the cluster network

    @property
    def engine(self) -> str:
        """The node's engine as mailstack reaches it from the host (cluster.nodes' engine)."""
        return f"unix://{SOCKETS / self.name / 'docker.sock'}"

    def docker(self, *args: str, stdin: bytes | None = None, timeout: float = 300) -> str:
        """The node's own engine, through its CLI inside the container."""
        return docker("exec", "-i", self.name, "docker", *args, stdin=stdin, timeout=timeout)


def node_image() -> str:
    """The node image, tagged by its context's content (built once per change)."""
    digest = hashlib.sha256()
    for path in sorted(NODE_CONTEXT.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    tag = f"mailstack/cluster-node:{digest.hexdigest()[:16]}"
    if not docker("images", "--quiet", tag).strip():
        docker("build", "--quiet", "--tag", tag, str(NODE_CONTEXT), timeout=900)
    return tag


def start_nodes(count: int) -> list[Node]:
    """`count` fresh nodes with their engines answering (old ones of this harness removed)."""
    remove_nodes()
    image = node_image()
    docker("network", "create", "--subnet", SUBNET, NETWORK)
    nodes = []
    for number in range(1, count + 1):
        name = f"{PREFIX}{number}"
        docker(
            "run", "--detach", "--name", name, "--hostname", name, "--network", NETWORK,
            *_NODE_FLAGS, "--volume", f"{name}:/var/lib/docker",
            "--volume", f"{SOCKETS / name}:/run/host-engine", image,
        )  # fmt: skip
        address = docker(
            "inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}',
            name,
        ).strip()  # fmt: skip
        nodes.append(Node(name, address))
    for node in nodes:
        _wait_for_engine(node)
    return nodes


def _wait_for_engine(node: Node) -> None:
    deadline = time.monotonic() + ENGINE_START_SECONDS
    while True:
        try:
            node.docker("info", "--format", "{{.ServerVersion}}", timeout=20)
            return
        except (AssertionError, subprocess.TimeoutExpired):
            if time.monotonic() > deadline:
                logs = subprocess.run(
                    ["docker", "logs", "--tail", "30", node.name], capture_output=True, check=False
                )
                raise AssertionError(
                    f"{node.name}: the engine did not start:\n"
                    + (logs.stdout + logs.stderr).decode(errors="replace")
                ) from None
            time.sleep(1)


def form_swarm(nodes: Sequence[Node]) -> None:
    """The first node initialises the swarm; every other joins as a manager (three managers
    keep a quorum when one is lost)."""
    first, *others = nodes
    first.docker("swarm", "init", "--advertise-addr", first.address)
    token = first.docker("swarm", "join-token", "--quiet", "manager").strip()
    for node in others:
        node.docker("swarm", "join", "--token", token, f"{first.address}:2377")


def load_images(nodes: Iterable[Node], images: Sequence[str]) -> None:
    """The host's images into every node, as an operator without a registry would."""
    archive = subprocess.run(
        ["docker", "save", *images], capture_output=True, check=True, timeout=600
    ).stdout
    for node in nodes:
        node.docker("load", "--quiet", stdin=archive, timeout=600)


def remove_nodes() -> None:
    """Every node of this harness, its engine's volume and the cluster network."""
    names = docker("ps", "--all", "--quiet", "--filter", f"name=^{PREFIX}").split()
    if names:
        docker("rm", "--force", "--volumes", *names)
    volumes = docker("volume", "ls", "--quiet", "--filter", f"name=^{PREFIX}").split()
    if volumes:
        docker("volume", "rm", "--force", *volumes)
    if docker("network", "ls", "--quiet", "--filter", f"name=^{NETWORK}$").strip():
        docker("network", "rm", NETWORK)
    shutil.rmtree(SOCKETS, ignore_errors=True)
