"""Driving the stack on a swarm (docs/cluster.md): the nodes' labels follow mailstack.yaml's
roles, the stack file is deployed through a manager, and its state read back. Swarm
schedules, restarts and rolls back; mailstack only says what should run where."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mailstack import services
from mailstack.accounts import directory, homes, migrations
from mailstack.adapters.psql import Executor
from mailstack.adapters.swarm import Engine, SwarmExecutor, SwarmNode
from mailstack.cluster import stackfile
from mailstack.errors import ExternalCommandFailed, MailstackError
from mailstack.images import imagerefs
from mailstack.stack.config import Config
from mailstack.stack.config_sections import ClusterNode
from mailstack.stack.stackdir import Stack

_LABEL_PREFIX = "mailstack."
# How long `cluster up` waits for the database's task to turn healthy (its image is on the
# node; a first start initialises the cluster's directory).
DB_READY_SECONDS = 240


def wanted_labels(config: Config) -> dict[str, dict[str, str]]:
    """{node: its mailstack.* labels} for the roles mailstack.yaml gives it; the first db
    node is the database's primary, a second its standby."""
    db_nodes = [node.name for node in config.cluster.nodes if "db" in node.roles]
    return {
        node.name: stackfile.node_labels(
            list(node.roles), db_nodes.index(node.name) if node.name in db_nodes else None
        )
        for node in config.cluster.nodes
    }


def manager(config: Config) -> Engine:
    """The first listed node whose engine answers as a swarm manager."""
    tried = []
    for node in config.cluster.nodes:
        engine = Engine(node.engine)
        if engine.is_manager():
            return engine
        tried.append(f"{node.name} ({node.engine})")
    if not tried:
        raise MailstackError(
            "mailstack.yaml lists no cluster.nodes", hint="docs/cluster.md: the cluster section"
        )
    raise MailstackError(
        f"no swarm manager answers: tried {', '.join(tried)}",
        hint="check that each engine runs, is in the swarm as a manager, and that this host "
        "reaches it (ssh keys, known_hosts)",
    )


@dataclass(frozen=True)
class LabelChange:
    node: str
    added: dict[str, str]
    removed: list[str]


def label_nodes(engine: Engine, config: Config) -> list[LabelChange]:
    """Bring every listed node's mailstack.* labels to its roles; a listed node missing from
    the swarm stops it before anything changes."""
    present = {node.hostname: node for node in engine.nodes()}
    wanted = wanted_labels(config)
    missing = sorted(set(wanted) - set(present))
    if missing:
        raise MailstackError(
            f"cluster.nodes: {', '.join(missing)} not in the swarm (its nodes: "
            f"{', '.join(sorted(present)) or 'none'})",
            hint="join the node to the swarm (`docker swarm join`), or fix its name",
        )
    changes = []
    for name, labels in wanted.items():
        current = {
            key: value
            for key, value in present[name].labels.items()
            if key.startswith(_LABEL_PREFIX)
        }
        added = {key: value for key, value in labels.items() if current.get(key) != value}
        removed = sorted(set(current) - set(labels))
        if added or removed:
            engine.set_labels(name, added, removed)
            changes.append(LabelChange(name, added, removed))
    return changes


@dataclass(frozen=True)
class Deployment:
    labels: list[LabelChange]
    notes: list[str]
    migrations: list[str]  # the directory's migrations this deploy applied
    images: list[ImageDelivery] = field(default_factory=list)


@dataclass(frozen=True)
class ImageDelivery:
    """What one node was given of the stack's images (without images.registry)."""

    node: str
    loaded: list[str]  # the images it lacked, now loaded
    error: str = ""  # why it got none: its engine did not answer, or the load failed


def images_for(node: ClusterNode, config: Config, references: Mapping[str, str]) -> list[str]:
    """The images of the services this stack runs that Swarm may place on the node."""
    return sorted({
        references[service.image]
        for service in services.SERVICES
        if service.runs_in(config)
        and (service.placement.role == "every" or service.placement.role in node.roles)
    })  # fmt: skip


def deliver_images(root: Path, config: Config) -> list[ImageDelivery]:
    """Without images.registry, each node gets the images it lacks from the engine mailstack
    runs on (which built them): no registry to run or trust, and it works air-gapped. A node
    whose engine does not answer is said, not fatal: it runs nothing until it has them."""
    references = imagerefs.read(root)
    deliveries = []
    for node in config.cluster.nodes:
        engine = Engine(node.engine)
        try:
            present = engine.images()
            missing = [image for image in images_for(node, config, references)
                       if image not in present]  # fmt: skip
            if missing:
                engine.load_from_local(missing)
        except ExternalCommandFailed as failed:
            deliveries.append(ImageDelivery(node.name, [], failed.message))
            continue
        deliveries.append(ImageDelivery(node.name, missing))
    return deliveries


def stack_executor(stack: Stack) -> Executor:
    """Where the accounts commands reach the stack's containers: Compose on one host; on a
    cluster each service's running task, found through the first manager that answers."""
    if not stack.config.cluster.nodes:
        return stack.compose
    return executor(manager(stack.config), stack.config)


def mailbox_executor(stack: Stack, address: str) -> Executor:
    """Where the accounts commands reach one mailbox's mail: the stack's Dovecot on one host;
    on a cluster the mailbox's home back end (a missing mailbox: NotFound)."""
    run = stack_executor(stack)
    nodes = stack.config.cluster.mailbox_nodes
    if not nodes:
        return run
    return homes.HomeRouted(run, homes.home_of(run, address.lower(), nodes[0]))


def executor(engine: Engine, config: Config) -> SwarmExecutor:
    """Runs commands in the stack's tasks (psql in db, doveadm in dovecot) as Compose's exec
    does on one host: the accounts commands' way into a cluster."""
    engines = {node.name: Engine(node.engine) for node in config.cluster.nodes}
    return SwarmExecutor(engine, config.project, engines)


def deploy(root: Path, config: Config, *, wait: bool = True) -> Deployment:
    """Label the nodes, write the stack file from the rendered stack and deploy it; then, as
    `up` does on one host, bring the mail directory's schema up to date once the database
    runs, and make mailstack.yaml's first domain a mail domain."""
    engine = manager(config)
    written = stackfile.write_stack_file(root, config)
    changes = label_nodes(engine, config)
    delivered = [] if config.images.registry else deliver_images(root, config)
    engine.deploy(
        root / stackfile.STACK_FILE, config.project, resolve_images=bool(config.images.registry)
    )
    if not wait:
        return Deployment(changes, written.notes, [], delivered)
    await_running(engine, config.project, "db", DB_READY_SECONDS)
    tasks = executor(engine, config)
    applied = migrations.migrate(tasks)
    if config.domain not in {domain.name for domain in directory.list_domains(tasks)}:
        directory.add_domain(tasks, config.domain)
    return Deployment(changes, written.notes, applied, delivered)


def await_running(engine: Engine, project: str, service: str, seconds: float) -> None:
    """Until a task of the service runs (Swarm says running once its healthcheck passes)."""
    name = f"{project}_{service}"
    deadline = time.monotonic() + seconds
    while engine.running_task(name) is None:
        if time.monotonic() > deadline:
            errors = [
                str(task["Error"])
                for task in engine.tasks(project)
                if task.get("Error") and str(task.get("Name", "")).startswith(f"{name}.")
            ]
            raise MailstackError(
                f"{service} did not turn healthy within {seconds:.0f}s"
                + (f" (its last task: {errors[0]})" if errors else ""),
                hint="`mailstack cluster status` shows every service's state",
            )
        time.sleep(2)


@dataclass(frozen=True)
class ServiceState:
    name: str
    mode: str
    replicas: str  # running/wanted, as Swarm counts them
    # The latest error of a task Swarm wanted running, if any: the first thing to read.
    error: str = ""

    @property
    def converged(self) -> bool:
        running, _, wanted = self.replicas.partition("/")
        return running == wanted.split(" ", 1)[0] and wanted != "0"


@dataclass(frozen=True)
class ClusterStatus:
    nodes: list[SwarmNode]
    services: list[ServiceState] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": [asdict(node) for node in self.nodes],
            "services": [{**asdict(service), "converged": service.converged}
                         for service in self.services],
        }  # fmt: skip


def status(config: Config) -> ClusterStatus:
    engine = manager(config)
    tasks = engine.tasks(config.project)
    errors: dict[str, str] = {}
    for task in tasks:  # newest first, as docker stack ps lists them
        service = str(task.get("Name", "")).split(".", 1)[0]  # project_service.slot
        if task.get("Error") and service not in errors:
            errors[service] = str(task["Error"])
    services = [
        ServiceState(
            name=str(entry["Name"]).removeprefix(f"{config.project}_"),
            mode=str(entry.get("Mode", "")),
            replicas=str(entry.get("Replicas", "")),
            error=errors.get(str(entry["Name"]), ""),
        )
        for entry in engine.services(config.project)
    ]
    return ClusterStatus(engine.nodes(), sorted(services, key=lambda service: service.name))


def remove(config: Config) -> None:
    """`docker stack rm`: the services go; volumes, configs' data on disk and labels stay."""
    manager(config).remove(config.project)
