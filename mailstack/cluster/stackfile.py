"""The stack file `docker stack deploy` reads, derived from the single-host stack.

A cluster runs the same images and the same rendered daemon configs as one host: the stack
file is compose.yaml (with the operator's edits) translated for Swarm, never a second set of
templates. What Swarm cannot do the way Compose does is translated here and nowhere else:

| compose.yaml | stack file |
|---|---|
| `build`, `depends_on`, `pull_policy`, `restart` | dropped (entrypoints wait; Swarm restarts) |
| `mem_limit` | `deploy.resources.limits.memory` (a stack file has no pids limit) |
| `dns_opt` | `RES_OPTIONS` in the environment (glibc reads it; a stack file has no dns_opt) |
| a bind mount of a generated file or tree | one Swarm config per file (a key: a secret, 0400) |
| `secrets` from files | Swarm secrets |
| ports | published in host mode on each node that runs the task (the client's address survives) |
| bridge networks | overlay networks with the same subnets |
| `tmpfs` | tmpfs mounts of the same size; owners and modes set by the entrypoint |

Swarm objects are immutable, so every config and secret is named by its content: a changed
file is a new object, and `docker stack deploy` rolls the services that mount it. Secrets are
named by a digest keyed with a stack secret, so their names reveal nothing of them.

What the translation cannot carry yet (a fixed address, a tmpfs owner, a port bound to one
address) comes back as notes, not silently: docs/cluster.md lists the cluster's open steps.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mailstack import services
from mailstack.errors import MailstackError
from mailstack.images import imagerefs
from mailstack.services import Placement
from mailstack.stack.stackdir import atomic_write

if TYPE_CHECKING:
    from mailstack.stack.config import Config

STACK_FILE = "swarm/stack.yaml"
# The newest Compose file format Debian's docker CLI (20.10) deploys as a stack.
STACK_FILE_VERSION = "3.9"
# Where the stack file sits relative to the stack directory: its file: paths climb out of it.
_TO_ROOT = "../"
# The Docker network a service joins to run in the node's own network namespace.
HOST_NETWORK = "host"
_HOST_NETWORK_KEY = "node-host"

# Keys of a compose.yaml service the stack file keeps as they are.
_KEPT = (
    "command", "entrypoint", "environment", "healthcheck", "hostname", "user", "read_only",
    "cap_add", "cap_drop", "logging", "sysctls", "stop_grace_period", "init",
    "working_dir", "labels",
)  # fmt: skip
# Keys Swarm has no use for (it schedules, restarts and pulls itself).
_DROPPED = ("build", "depends_on", "pull_policy", "restart", "container_name", "shm_size")
# Files mounted as Swarm secrets (0400) rather than configs: private keys.
_PRIVATE = re.compile(r"(^|/)(dkim/[^/]+\.key|[^/]*key\.pem|[^/]+\.key)$")
_OBJECT_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_NAME_LIMIT = 64  # Swarm's limit for a config's or secret's name
_SIZE = re.compile(r"^(?P<number>[0-9]+)(?P<unit>[kmg]?)b?$", re.IGNORECASE)
_OWNER_OPTIONS = {"uid": r"[0-9]+", "gid": r"[0-9]+", "mode": r"[0-7]{3,4}"}
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


@dataclass(frozen=True)
class StackFile:
    document: dict[str, Any]
    # What compose.yaml asks that this translation cannot carry yet, one line each.
    notes: list[str] = field(default_factory=list)


@dataclass
class _Objects:
    """The configs and secrets the services mount, keyed as the stack file names them."""

    project: str
    secret_key: bytes
    configs: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)

    def add_file(self, path: str, content: bytes) -> tuple[str, bool]:
        """The stack file's key for a stack-directory file, and whether it is a secret."""
        private = bool(_PRIVATE.search(path))
        key = _OBJECT_NAME.sub("-", path.replace("/", "_"))
        table = self.secrets if private else self.configs
        table[key] = {"name": self._name(key, content, keyed=private), "file": _TO_ROOT + path}
        return key, private

    def add_secret(self, key: str, source: str, content: bytes) -> None:
        self.secrets[key] = {"name": self._name(key, content, keyed=True), "file": source}

    def _name(self, key: str, content: bytes, *, keyed: bool) -> str:
        if keyed:
            digest = hmac.new(self.secret_key, content, hashlib.sha256).hexdigest()
        else:
            digest = hashlib.sha256(content).hexdigest()
        stem = f"{self.project}_{key}"[: _NAME_LIMIT - 13]
        return f"{stem}_{digest[:12]}"


def stack_file(
    compose: Mapping[str, Any],
    files: Mapping[str, bytes],
    images: Mapping[str, str],
    *,
    project: str,
    secret_key: bytes,
    node_resolver: str = "172.18.0.1",
    db_nodes: int = 1,
    role_nodes: Mapping[str, list[str]] | None = None,
) -> StackFile:
    """The stack file for compose.yaml (parsed), given every file under the paths it mounts
    ({stack-relative path: content}) and the images recorded by the last build. Tasks send
    their DNS queries to node_resolver: the resolver on their own node (docs/cluster.md).
    role_nodes names each role's nodes, for the services placed per node."""
    objects = _Objects(project, secret_key)
    notes: list[str] = []
    for key, secret in sorted((compose.get("secrets") or {}).items()):
        source = str(secret.get("file", ""))
        relative = source.removeprefix("./")
        if relative not in files:
            raise MailstackError(f"secret {key}: {source} is missing from the stack directory")
        objects.add_secret(key, _TO_ROOT + relative, files[relative])
    translated: dict[str, Any] = {}
    for name, service in (compose.get("services") or {}).items():
        one = _service(name, service, files, images, objects, notes, node_resolver)
        record = services.BY_NAME.get(name)
        if record and record.placement.per_node:
            for node in (role_nodes or {}).get(record.placement.role, []):
                translated[f"{name}-{node}"] = _on_node(name, one, node)
        else:
            translated[name] = one
    networks: dict[str, Any] = {
        name: _network(network) for name, network in (compose.get("networks") or {}).items()
    }
    if any(_HOST_NETWORK_KEY in service.get("networks", {}) for service in translated.values()):
        networks[_HOST_NETWORK_KEY] = {"external": True, "name": HOST_NETWORK}
    limited = sorted(
        name for name, service in compose["services"].items() if "pids_limit" in service
    )
    if limited:
        notes.append(f"{', '.join(limited)}: their pids limits (a stack file has none)")
    if db_nodes > 1:
        notes.append("db: the standby on the second db node is not deployed yet (cluster db)")
    document: dict[str, Any] = {
        "version": STACK_FILE_VERSION,
        "services": translated,
        "networks": networks,
        "volumes": {name: {} for name in (compose.get("volumes") or {})},
        "configs": dict(sorted(objects.configs.items())),
        "secrets": dict(sorted(objects.secrets.items())),
    }
    return StackFile(document, notes)


def _service(
    name: str,
    service: Mapping[str, Any],
    files: Mapping[str, bytes],
    images: Mapping[str, str],
    objects: _Objects,
    notes: list[str],
    node_resolver: str,
) -> dict[str, Any]:
    record = services.BY_NAME.get(name)
    placement = record.placement if record else Placement("edge", on_each=False)
    translated: dict[str, Any] = {"image": _image(name, str(service["image"]), images)}
    translated.update({key: service[key] for key in _KEPT if key in service})
    on_host = placement.role == "every"
    if on_host:
        translated["networks"] = {_HOST_NETWORK_KEY: {}}
    else:
        translated["networks"] = _service_networks(name, service.get("networks"), notes)
    if "dns" in service:
        translated["dns"] = [node_resolver]
    if "dns_opt" in service:  # a stack file has no dns_opt; glibc reads RES_OPTIONS too
        _set_environment(translated, "RES_OPTIONS", " ".join(service["dns_opt"]))
    if "ports" in service:
        translated["ports"] = _ports(name, service["ports"], notes)
    mounts, mounted_configs, mounted_secrets = _mounts(name, service, files, objects, notes)
    tmpfs = [_tmpfs(name, str(entry), notes) for entry in service.get("tmpfs") or []]
    mounts += [mount for mount, _owner in tmpfs]
    if mounts:
        translated["volumes"] = mounts
    if mounted_configs:
        translated["configs"] = mounted_configs
    secrets = [*_service_secrets(service.get("secrets") or []), *mounted_secrets]
    if secrets:
        translated["secrets"] = secrets
    _own_tmpfs(name, service, [owner for _mount, owner in tmpfs], translated, notes)
    translated["deploy"] = _deploy(service, placement)
    return translated


def _on_node(name: str, translated: dict[str, Any], node: str) -> dict[str, Any]:
    """A per-node service's copy for one node (services.Placement.per_node): pinned there,
    and named on each link it serves by that node's alias (services.Link.node_alias)."""
    networks: dict[str, Any] = {}
    for network, settings in translated["networks"].items():
        aliases = [
            link.node_alias(node)
            for link in services.LINKS
            if link.server == name and link.network == network
        ]
        networks[network] = {**settings, "aliases": aliases} if aliases else settings
    deploy = {**translated["deploy"], "placement": {"constraints": [f"node.hostname == {node}"]}}
    return {**translated, "networks": networks, "deploy": deploy}


def _own_tmpfs(
    name: str,
    service: Mapping[str, Any],
    given: list[_TmpfsOwner],
    translated: dict[str, Any],
    notes: list[str],
) -> None:
    """Hand the owners and modes of the service's tmpfs mounts to its entrypoint
    (compose/base/mailstack-tmpfs), with CAP_CHOWN where one has an owner."""
    # Mode 1777 and root's is what Docker gives a tmpfs anyway.
    owners = [owner for owner in given if owner.uid or owner.gid or owner.mode not in ("", "1777")]
    if not owners:
        return
    if "user" in service:  # started as its user, its entrypoint could chown nothing
        notes.append(
            f"{name}: the owners of its tmpfs mounts (it starts as user {service['user']})"
        )
        return
    _set_environment(translated, "MAILSTACK_TMPFS", " ".join(owner.spec for owner in owners))
    capabilities = list(translated.get("cap_add") or [])
    if any(owner.uid or owner.gid for owner in owners) and "CHOWN" not in capabilities:
        translated["cap_add"] = [*capabilities, "CHOWN"]


def _set_environment(translated: dict[str, Any], key: str, value: str) -> None:
    environment = translated.get("environment") or {}
    if isinstance(environment, list):  # Compose's KEY=VALUE form
        environment = dict(str(item).partition("=")[::2] for item in environment)
    translated["environment"] = {**environment, key: value}


def _image(name: str, reference: str, images: Mapping[str, str]) -> str:
    """compose.yaml's ${MAILSTACK_IMAGE_X:-…} resolved to the image the last build made."""
    match = re.fullmatch(r"\$\{MAILSTACK_IMAGE_[A-Z0-9_]+:-(?P<fallback>[^}]+)\}", reference)
    if not match:
        return reference  # an operator's own reference, used as written
    image = match["fallback"].rsplit("/", 1)[-1].split(":", 1)[0]
    if image not in images:
        raise MailstackError(
            f"{name}: image {image} is not built yet", hint="run `mailstack build` first"
        )
    return images[image]


def _service_networks(name: str, networks: Any, notes: list[str]) -> dict[str, Any]:
    joined: dict[str, Any] = {}
    for network, given in (networks or {}).items():
        settings = dict(given or {})
        address = settings.pop("ipv4_address", None)
        if address:
            notes.append(
                f"{name}: its fixed address {address} on {network} (Swarm gives tasks none: "
                "what admits or reaches it by that address and is not a link yet fails)"
            )
        joined[network] = {key: settings[key] for key in ("aliases",) if key in settings}
    return joined


def _network(network: Mapping[str, Any] | None) -> dict[str, Any]:
    network = network or {}
    translated: dict[str, Any] = {"driver": "overlay"}
    if network.get("internal"):
        translated["internal"] = True
    subnets = [entry["subnet"] for entry in (network.get("ipam") or {}).get("config", [])]
    if subnets:
        translated["ipam"] = {"config": [{"subnet": subnet} for subnet in subnets]}
    return translated


def _ports(name: str, ports: list[Any], notes: list[str]) -> list[dict[str, Any]]:
    published: list[dict[str, Any]] = []
    for port in ports:
        address, host_port, target, protocol = _split_port(str(port))
        if address not in ("", "0.0.0.0", "::"):  # noqa: S104  # all addresses: compared, not bound
            notes.append(
                f"{name}: port {host_port} is published on {address} alone on one host; Swarm "
                "publishes on every address of a node, so the cluster leaves it unpublished"
            )
            continue
        published.append(
            {"target": target, "published": host_port, "protocol": protocol, "mode": "host"}
        )
    return published


def _split_port(port: str) -> tuple[str, int, int, str]:
    """'[address:]published:target[/protocol]' -> (address, published, target, protocol)."""
    port, _, protocol = port.partition("/")
    if port.startswith("["):  # [IPv6]:published:target
        address, _, port = port[1:].partition("]:")
        parts = [address, *port.split(":")]
    else:
        parts = port.split(":")
    if len(parts) < 3:
        parts = ["", *parts]
    address, published, target = parts[0], parts[-2] if len(parts) > 2 else parts[1], parts[-1]
    return address, int(published), int(target), protocol or "tcp"


def _mounts(
    name: str,
    service: Mapping[str, Any],
    files: Mapping[str, bytes],
    objects: _Objects,
    notes: list[str],
) -> tuple[list[Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, configs, secrets) of a service: named volumes stay mounts, each file under
    a bind-mounted stack path becomes a config or a secret."""
    volumes: list[Any] = []
    configs: list[dict[str, Any]] = []
    secrets: list[dict[str, Any]] = []
    for entry in service.get("volumes") or []:
        source, _, rest = str(entry).partition(":")
        target = rest.split(":", 1)[0]
        if not source.startswith("./"):
            volumes.append(entry)
            continue
        path = source.removeprefix("./").rstrip("/")
        inside = [each for each in sorted(files) if each == path or each.startswith(path + "/")]
        if not inside:
            # An empty directory (overrides/ without a file): Swarm mounts no empty config, but
            # a daemon's include of <dir>/*.conf wants the directory, so an empty read-only one.
            volumes.append(
                {"type": "tmpfs", "target": target, "read_only": True, "tmpfs": {"size": 4096}}
            )
        for relative in inside:
            if not files[relative]:
                notes.append(f"{name}: {relative} is empty (Swarm keeps no empty config)")
                continue
            key, private = objects.add_file(relative, files[relative])
            mounted = target + relative.removeprefix(path)
            if private:
                secrets.append({"source": key, "target": mounted, "mode": 0o400})
            else:
                configs.append({"source": key, "target": mounted, "mode": 0o444})
    return volumes, configs, secrets


@dataclass(frozen=True)
class _TmpfsOwner:
    """A tmpfs's owner and mode as Compose sets them; "" where it sets none."""

    path: str
    uid: str = ""
    gid: str = ""
    mode: str = ""

    @property
    def spec(self) -> str:  # one word of MAILSTACK_TMPFS (compose/base/mailstack-tmpfs)
        return f"{self.path}={self.uid}:{self.gid}:{self.mode}"


def _tmpfs(name: str, entry: str, notes: list[str]) -> tuple[dict[str, Any], _TmpfsOwner]:
    """A tmpfs mount of its size, and the owner and mode its entrypoint must give it: Swarm
    mounts a tmpfs root's, with the mode of the image's directory, and a stack file can set
    neither."""
    target, _, options = entry.partition(":")
    tmpfs: dict[str, int] = {}
    owner: dict[str, str] = {}
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key == "size":
            tmpfs["size"] = _bytes(value)
        elif re.fullmatch(_OWNER_OPTIONS.get(key, "(?!)"), value):
            owner[key] = value
        else:
            notes.append(f"{name}: tmpfs {target} option {option} (Swarm's tmpfs takes none)")
    return {"type": "tmpfs", "target": target, "tmpfs": tmpfs}, _TmpfsOwner(target, **owner)


def _bytes(size: str) -> int:
    match = _SIZE.match(size.strip())
    if not match:
        raise ValueError(f"not a size: {size!r}")
    return int(match["number"]) * _UNITS[match["unit"].lower()]


def _service_secrets(secrets: list[Any]) -> list[dict[str, Any]]:
    """Compose's secrets land in /run/secrets/<name> readable by root alone, as on one host."""
    return [
        {"source": str(secret), "target": str(secret), "mode": 0o400}
        if isinstance(secret, str)
        else {**secret, "mode": 0o400}
        for secret in secrets
    ]


def _deploy(service: Mapping[str, Any], placement: Placement) -> dict[str, Any]:
    order = "start-first" if placement.start_first else "stop-first"
    deploy: dict[str, Any] = {"endpoint_mode": "dnsrr"}
    if placement.on_each:
        deploy["mode"] = "global"
    else:
        deploy["mode"] = "replicated"
        deploy["replicas"] = 1
    constraint = _constraint(placement)
    if constraint:
        deploy["placement"] = {"constraints": [constraint]}
    limits: dict[str, Any] = {}
    if "mem_limit" in service:
        limits["memory"] = str(service["mem_limit"])
    if limits:
        deploy["resources"] = {"limits": limits}
    deploy["restart_policy"] = {"condition": "any", "delay": "5s"}
    # One task at a time; a new one that fails its health check within the monitor window
    # (or never turns healthy) makes Swarm roll the whole service back.
    deploy["update_config"] = {
        "parallelism": 1,
        "delay": "5s",
        "order": order,
        "failure_action": "rollback",
        "monitor": "30s",
    }
    deploy["rollback_config"] = {"parallelism": 1, "order": order}
    return deploy


def _constraint(placement: Placement) -> str | None:
    if placement.role == "every":
        return None
    if placement.role == "db":
        return "node.labels.mailstack.db == primary"
    return f"node.labels.mailstack.{placement.role} == true"


def node_labels(roles: list[str], db_rank: int | None) -> dict[str, str]:
    """The labels a node carries for its roles: edge/mailbox true, db primary or standby."""
    labels = {f"mailstack.{role}": "true" for role in roles if role != "db"}
    if "db" in roles:
        labels["mailstack.db"] = "primary" if db_rank == 0 else "standby"
    return labels


# The stack-directory trees compose.yaml mounts or names as secrets.
_MOUNTED_TREES = ("config", "overrides", "tls", "dkim", "secrets")
# Keys the stack file's secret names: a stack secret no container of a cluster reads twice.
_NAMES_KEY = "secrets/db_admin_password"
_HEADER = (
    "# Written by `mailstack render --target swarm` from compose.yaml and the files it mounts\n"
    "# (docs/cluster.md). Do not edit: edit those, or overrides/, and render again.\n"
)


def mounted_files(root: Path) -> dict[str, bytes]:
    """Every file the stack file may mount: {stack-relative path: content}; lock and other
    dot files are left out (no daemon reads them)."""
    found: dict[str, bytes] = {}
    for tree in _MOUNTED_TREES:
        for path in sorted((root / tree).rglob("*")):
            relative = path.relative_to(root)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                found[relative.as_posix()] = path.read_bytes()
    return found


def write_stack_file(root: Path, config: Config) -> StackFile:
    """Derive swarm/stack.yaml from the stack directory as it stands after a render."""
    compose = yaml.safe_load((root / "compose.yaml").read_text())
    files = mounted_files(root)
    if _NAMES_KEY not in files:
        raise MailstackError(f"{_NAMES_KEY} is missing: run `mailstack render` first")
    result = stack_file(
        compose,
        files,
        imagerefs.read(root),
        project=config.project,
        secret_key=files[_NAMES_KEY],
        node_resolver=config.cluster.node_resolver,
        db_nodes=sum("db" in node.roles for node in config.cluster.nodes),
        role_nodes={"mailbox": config.cluster.mailbox_nodes},
    )
    body = yaml.safe_dump(result.document, sort_keys=False, default_flow_style=False)
    atomic_write(root / STACK_FILE, (_HEADER + body).encode(), 0o644)
    return result
