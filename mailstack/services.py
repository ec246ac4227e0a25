"""The stack's services, each described once: what every other part of mailstack knows about
a service (its image, whether the operator's file turns it on, its fixed address, its config
checker, how it takes a new certificate, what a backup does to it, its override point) is
read from its record here. Adding a service is its record, its templates and its build
context (compose/<image>/); docs/architecture.md shows how.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # the registry is data every layer reads; it needs Config only as a type
    from mailstack.stack.config import Config

# A service with a config checker ships it here (a mode of compose/<image>/entrypoint).
CHECKER = "/usr/local/bin/check-config"


# Where a service runs on a Docker Swarm cluster (docs/cluster.md): the nodes with this role
# (mailstack.yaml's cluster.nodes; "every": each node), one task on each of them (global) or one
# in all. "db" means the database's primary node.
ClusterRole = Literal["edge", "mailbox", "db", "every"]


@dataclass(frozen=True)
class Placement:
    role: ClusterRole = "edge"
    on_each: bool = True  # global on the role's nodes, else one replica
    # How Swarm replaces a task on update: start the new one first where two may run side by
    # side (no host port, no volume two daemons must not share), else stop the old one first.
    start_first: bool = False
    # A service of its own on each of the role's nodes (<name>-<node>), one replica pinned
    # there: others must reach one node's task by name, which a global service's lack.
    per_node: bool = False


@dataclass(frozen=True)
class Service:
    name: str  # the Compose service
    image: str  # the image it runs: mailstack/<image>, built from compose/<image>/
    # Whether this stack runs it (None: always); its config/<name>/ tree is rendered only then.
    runs_when: Callable[[Config], bool] | None = None
    # A fixed address, network address + this, on each network it joins (others: Docker's).
    fixed_host: int | None = None
    # `check config`: check-config's arguments (the entrypoint's mode); None: no checker.
    checker: tuple[str, ...] | None = ()
    # How it takes a new certificate without a restart; None: it serves no TLS.
    tls_reload: tuple[str, ...] | None = None
    # How it takes a changed config/<name>/ tree without a restart; None: it is restarted.
    config_reload: tuple[str, ...] | None = None
    # Trusts the stack's CA through a single-file mount: restarted when the CA changes.
    holds_ca: bool = False
    # Frozen (docker pause) while a backup copies its volume, for a consistent copy.
    paused_for_backup: bool = False
    # Where the operator's own settings go, never written by mailstack.
    override_point: str | None = None
    # The Linux capabilities it gets back after dropping all (compose.yaml's cap_add);
    # SECURITY.md says why for each, and a test holds the running containers to this.
    capabilities: tuple[str, ...] = ()
    # Where it runs on a cluster, and how Swarm updates it.
    placement: Placement = Placement()

    def runs_in(self, config: Config) -> bool:
        return self.runs_when is None or self.runs_when(config)


# Read secrets or keys as root (Compose hands them over root-owned, 0600), then run as the
# service's own user.
_DROP_TO_USER = ("SETGID", "SETUID")

# Chown its socket directory and a fresh volume; drop to the postgres user.
DB = Service(
    "db", "db", capabilities=("CHOWN", "SETGID", "SETUID"), placement=Placement("db", on_each=False)
)
REDIS = Service(
    "redis",
    "redis",
    override_point="overrides/redis/redis.conf (included last)",
    capabilities=_DROP_TO_USER,
    placement=Placement("db", on_each=False),
)
RESOLVER = Service(
    "resolver",
    "resolver",
    fixed_host=53,  # the stack's DNS server on both networks (containers' `dns:`)
    override_point="overrides/resolver/*.conf (included last)",
    capabilities=_DROP_TO_USER,
    # On each node's host network, answering that node's tasks (docs/cluster.md).
    placement=Placement("every"),
)
# clamd and freshclam run as the clamav user from the start: no capability at all.
CLAMAV = Service("clamav", "clamav", runs_when=lambda config: config.features.antivirus)
RSPAMD = Service(
    "rspamd",
    "rspamd",
    override_point="overrides/rspamd/ (rspamd's override.d)",
    capabilities=_DROP_TO_USER,
    placement=Placement("edge", start_first=True),
)
BANS = Service(
    "bans",
    "bans",
    runs_when=lambda config: config.policy.bans.enabled,
    override_point="overrides/bans/bans.conf (read last)",
    capabilities=_DROP_TO_USER,
)
DOVECOT = Service(
    "dovecot",
    "dovecot",
    # Postfix's internal listener (10587) relays what Dovecot sends itself for this address.
    fixed_host=24,
    tls_reload=("doveadm", "reload"),
    paused_for_backup=True,
    override_point="overrides/dovecot/*.conf (included last)",
    # The master hands sockets to service users, drops privileges per process, signals its
    # children and chroots the login processes.
    capabilities=("CHOWN", "SETGID", "SETUID", "KILL", "SYS_CHROOT"),
    # On a cluster the edge proxy (IMAP, POP3, ManageSieve, LMTP and auth for every edge
    # node), each user's mail on the back end of their home node (MAILBOX, docs/cluster.md).
    placement=Placement("edge"),
)
# A cluster's mailbox back ends: Dovecot (config/dovecot/ rendered again for the role into
# config/mailbox/) on each mailbox node, with the mail of the users whose home that node is;
# reached by the edge proxy alone. One host has none: Dovecot holds every mailbox itself.
MAILBOX = Service(
    "mailbox",
    "dovecot",
    runs_when=lambda config: bool(config.cluster.nodes),
    tls_reload=("doveadm", "reload"),
    # Backups run on one host (Compose pauses what it names); a cluster's are an open step.
    paused_for_backup=False,
    override_point="overrides/dovecot/*.conf (included last)",
    capabilities=DOVECOT.capabilities,
    placement=Placement("mailbox", on_each=False, per_node=True),
)
# Each back end's doveadm server, on the proxy's link: `mailbox move` runs dsync between two.
MAILBOX_DOVEADM_PORT = 12347
# The master reaches postfix-owned queue directories and signals its children.
_POSTFIX_MASTER = ("CHOWN", "DAC_OVERRIDE", "SETGID", "SETUID", "KILL")
POSTFIX = Service(
    "postfix",
    "postfix",
    tls_reload=("postfix", "reload"),
    override_point="overrides/postfix/main.cf and overrides/postfix/master.cf (appended last)",
    capabilities=_POSTFIX_MASTER,
)
SINK = Service(
    "sink",
    "postfix",
    runs_when=lambda config: config.mode == "sandbox",
    checker=("sink",),
    capabilities=_POSTFIX_MASTER,
    placement=Placement("edge", on_each=False),
)
_NGINX_RELOAD = ("nginx", "-s", "reload", "-c", "/etc/mailstack/front/nginx.conf")
FRONT = Service(
    "front",
    "front",
    fixed_host=80,  # in sandbox mode the host's "public" address (the sandbox zone says so)
    tls_reload=_NGINX_RELOAD,
    config_reload=_NGINX_RELOAD,
    override_point="overrides/front/*.conf (included in the server block)",
    capabilities=_DROP_TO_USER,
)
# The MTA-STS policy resolver runs as the mtasts user from the start: no capability at all.
MTA_STS = Service(
    "mta-sts", "mta-sts", holds_ca=True, placement=Placement("edge", start_first=True)
)
WEBMAIL = Service(
    "webmail",
    "webmail",
    runs_when=lambda config: config.features.webmail,
    # PHP-FPM admits only the front, PostgreSQL only this container, Dovecot believes its
    # x-originating-ip only from here.
    fixed_host=81,
    holds_ca=True,
    override_point="overrides/webmail/*.inc.php (Roundcube settings, read last)",
    # Reads the webmail's secrets as root; the PHP-FPM master starts its workers as www-data.
    capabilities=_DROP_TO_USER,
    placement=Placement("edge", start_first=True),
)
ADMIN = Service(
    "admin",
    "admin",
    runs_when=lambda config: config.features.admin,
    # Reached only by the front (frontend), and PostgreSQL admits its role only from here.
    fixed_host=82,
    checker=None,  # no config of its own: the compose file's environment is all it reads
    # Reads its database password as root, then runs the API as its own user.
    capabilities=_DROP_TO_USER,
    placement=Placement("edge", start_first=True),
)
# Calendars and contacts (features.dav): Radicale, reached only by the front (at a fixed address,
# as nginx resolves no name); it signs users in through Dovecot's auth socket on a volume of
# their own. Runs as the radicale user from the start: no capability at all.
DAV = Service(
    "dav",
    "dav",
    runs_when=lambda config: config.features.dav,
    fixed_host=84,
    checker=None,  # Radicale has no config checker; a bad setting stops its start, with the line
    override_point="overrides/dav/radicale.conf (read last)",
    # Beside Dovecot, whose auth socket it shares on a volume.
    placement=Placement("mailbox", on_each=False),
)

# monitoring.metrics: collects the daemons' own metrics on the back-end network and serves
# them, behind a bearer token, on a port of its own network published on the host's loopback.
METRICS = Service(
    "metrics",
    "metrics",
    runs_when=lambda config: config.monitoring.metrics,
    # On its own network (monitoring.metrics_subnet), where its port is published; on the
    # back end PostgreSQL admits its monitoring login only from this address.
    fixed_host=83,
    checker=None,  # no config of its own: its command line is all it reads
    # Reads the token and rspamd's read-only password as root, then runs as its own user.
    capabilities=_DROP_TO_USER,
    placement=Placement("edge", on_each=False, start_first=True),
)


@dataclass(frozen=True)
class Link:
    """A listener that admits one client by its address (SECURITY.md): on one host the
    client's fixed back-end address, on a cluster a network of the two alone, where the
    client reaches the server by an alias only that network resolves (docs/cluster.md).
    A client without a fixed address has a way of its own on one host (Postfix: sockets)."""

    client: str
    server: str
    # How the client names the server on one host; None: by the server's fixed address.
    host_name: str | None
    # The network whose fixed addresses the link stands for on one host.
    over: Literal["backend", "frontend"] = "backend"
    # Who plays the client on a cluster, when another service than on one host does.
    cluster_client: str | None = None
    # A link of a cluster alone: one host has no such pair.
    cluster_only: bool = False

    @property
    def network(self) -> str:
        return f"{self.client}-to-{self.server}"

    @property
    def alias(self) -> str:
        return f"{self.server}-for-{self.client}"

    def node_alias(self, node: str) -> str:
        """The alias of the server's copy on one node (Placement.per_node) on this link."""
        return f"{self.server}-{node}-for-{self.client}"

    @property
    def joined_by(self) -> str:
        """The service that joins the link's network as its client on a cluster."""
        return self.cluster_client or self.client


# Dovecot sends vacation replies and Sieve redirects through Postfix's internal port (10587),
# which rspamd then treats as local mail; Dovecot's rspamd-learn posts to rspamd's controller.
# PHP-FPM admits the front alone; PostgreSQL admits Roundcube's role from the webmail alone;
# Dovecot believes the browser's address (IMAP ID) from the webmail alone.
# New links go at the end: a cluster gives each the next /27 in this order.
# On a cluster the mailbox back ends send the replies and learn spam; the edge proxy is the
# `dovecot` the webmail, Postfix and Radicale reach.
LINKS: tuple[Link, ...] = (
    Link("dovecot", "postfix", host_name="postfix-backend", cluster_client="mailbox"),
    Link("dovecot", "rspamd", host_name="rspamd", cluster_client="mailbox"),
    Link("front", "webmail", host_name=None, over="frontend"),
    Link("webmail", "db", host_name="db"),
    Link("webmail", "dovecot", host_name="dovecot"),
    # One host: Postfix reaches Dovecot's LMTP, SASL and quota policy by Unix sockets on a
    # volume of the two; a cluster: over this link, from every edge node.
    Link("postfix", "dovecot", host_name=None),
    # The admin service: proxied to by the front alone (which it believes about the client's
    # address), asked by the webmail about second factors, its role admitted by PostgreSQL.
    Link("front", "admin", host_name=None, over="frontend"),
    Link("webmail", "admin", host_name=None, over="frontend"),
    Link("admin", "db", host_name="db"),
    # Radicale (features.dav): proxied to by the front alone; its sign-ins asked of Dovecot's
    # auth (one host: a socket on a volume of the two).
    Link("front", "dav", host_name=None, over="frontend"),
    Link("dav", "dovecot", host_name=None, over="frontend"),
    # A cluster: the edge proxy to the users' home back ends (each back end's alias here is
    # mailbox-<node>-for-dovecot: per_node).
    Link("dovecot", "mailbox", host_name=None, cluster_only=True),
)

# The edge proxy's link to the mailbox back ends (each back end's alias: Link.node_alias).
PROXY_TO_BACK_ENDS = next(link for link in LINKS if link.server == MAILBOX.name)

# A link's network on a cluster: 29 addresses for its two services' tasks on each node, one
# load-balancer endpoint per node and a rolling update's extra task (about nine nodes).
LINK_PREFIX = 27


def link_pool_prefix() -> int:
    """The longest prefix of a cluster.link_subnet that holds every link's network."""
    return LINK_PREFIX - (len(LINKS) - 1).bit_length()


# In the order an update recreates them: the back end first; the MTA last, so that senders'
# retries and its own queue cover its restart. (Compose's depends_on orders a start.)
SERVICES: tuple[Service, ...] = (
    DB, REDIS, RESOLVER, BANS, CLAMAV, RSPAMD, MAILBOX, DOVECOT, WEBMAIL, ADMIN, DAV, METRICS,
    FRONT, MTA_STS, SINK, POSTFIX,
)  # fmt: skip
# Images no service runs: one-shot jobs (`mailstack backup`, `mailstack tls renew`).
JOB_IMAGES = ("backup", "acme")
IMAGES: tuple[str, ...] = (*dict.fromkeys(service.image for service in SERVICES), *JOB_IMAGES)
BY_NAME = {service.name: service for service in SERVICES}


def named(name: str) -> Service:
    return BY_NAME[name]


def of_stack_service(name: str) -> Service:
    """The record a stack file's service comes from: its own, or for a per-node copy
    (<name>-<node>, Placement.per_node) its service's."""
    if name in BY_NAME:
        return BY_NAME[name]
    return next(
        service
        for service in SERVICES
        if service.placement.per_node and name.startswith(f"{service.name}-")
    )


def checked() -> tuple[Service, ...]:
    return tuple(service for service in SERVICES if service.checker is not None)


def with_fixed_address() -> frozenset[str]:
    return frozenset(service.name for service in SERVICES if service.fixed_host is not None)


def fixed_address(
    service: Service, subnet: str | ipaddress.IPv4Network | ipaddress.IPv6Network
) -> str:
    """A service's fixed address on one of the stack's networks (Service.fixed_host)."""
    if service.fixed_host is None:
        raise ValueError(f"{service.name} has no fixed address")
    network = ipaddress.ip_network(subnet) if isinstance(subnet, str) else subnet
    return str(network.network_address + service.fixed_host)
