"""The sections of mailstack.yaml that shape the stack itself: features, webmail, network and
ports, TLS, backup, update, images and mailboxes, with the rules that tie a section's keys
together. The mail policy sections are in config_policy.py, the whole file in config.py.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from mailstack import services
from mailstack.stack.config_types import (
    AbsolutePath,
    Address,
    BackupTarget,
    DailyTime,
    DailyTimeOrOff,
    Domain,
    EngineUrl,
    FeedUrl,
    IPv4,
    IPv6,
    MirrorUrl,
    NodeName,
    Port,
    Registry,
    S3KeyId,
    SshHostKey,
    Subnet,
    TimeWindow,
)
from mailstack.stack.config_values import reject_unsafe_text
from mailstack.units import MAX_QUOTA_BYTES, format_size, parse_size


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are not silently coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Features(Section):
    antivirus: bool = Field(
        default=False,
        description="ClamAV scanning through rspamd; init turns it on when the host has "
        "at least 3 GiB of RAM",
    )
    webmail: bool = Field(
        default=True,
        description="Roundcube webmail behind the front proxy (webmail.path); init turns it "
        "off when the host has less than 1 GiB of RAM",
    )
    admin: bool = Field(
        default=True,
        description="the admin service: the REST API at https://<hostname>/api/v1/ (API "
        "tokens from `mailstack api token create`); init turns it off when the host has "
        "less than 1 GiB of RAM",
    )
    spam_learning: bool = Field(
        default=True,
        description="users teach rspamd's Bayes filter: a message moved into Junk is learned "
        "as spam, one moved out of Junk (not to Trash) as ham (Dovecot's IMAPSieve)",
    )
    pop3: bool = Field(
        default=False,
        description="POP3 for clients that download and delete, on network.ports.pop3s "
        "(implicit TLS only); the same passwords, app passwords, MFA rules and bans as IMAP",
    )
    pop3_starttls: bool = Field(
        default=False,
        description="also POP3 on network.ports.pop3 (STARTTLS required before login), for "
        "old clients; needs pop3: true",
    )
    dav: bool = Field(
        default=True,
        description="calendars and contacts (CalDAV and CardDAV, Debian's Radicale) at "
        "https://<hostname>/dav/, signed in with the mail passwords (app passwords under MFA)",
    )
    search: bool = Field(
        default=False,
        description="full-text search in IMAP (Dovecot's fts-xapian): SEARCH BODY/TEXT from "
        "an index, Dovecot's indexes on a volume of their own, not backed up. Off by default: "
        "the index holds the words of every message in plaintext beside mail_crypt's "
        "encrypted mail (SECURITY.md)",
    )

    @model_validator(mode="after")
    def _starttls_needs_pop3(self) -> Features:
        if self.pop3_starttls and not self.pop3:
            raise ValueError("pop3_starttls: true needs pop3: true (POP3 itself on)")
        return self


class Antivirus(Section):
    """Where freshclam (production, features.antivirus) fetches ClamAV's signatures."""

    mirror: Domain = Field(
        default="database.clamav.net",
        description="freshclam's DatabaseMirror: ClamAV's update service, or a mirror that "
        "serves the same DNS-driven updates",
    )
    private_mirrors: list[MirrorUrl] = Field(
        default_factory=list,
        max_length=8,
        description="http(s) URLs of your own signature mirrors (e.g. one cvdupdate fills), "
        "tried in order; when set, freshclam fetches from them only (PrivateMirror)",
    )
    checks_per_day: int = Field(
        default=12,
        ge=1,
        le=24,
        description="how often freshclam looks for new signatures; ClamAV's service asks for "
        "no more than once an hour",
    )


def check_web_path(value: str) -> str:
    """A URL path for the webmail: "/" or "/name/…/" (letters, digits, - and _ per segment)."""
    reject_unsafe_text(value, limit=64)
    if not re.fullmatch(r"/([a-z0-9_-]+/)*", value):
        raise ValueError(
            'is not a URL path ("/" or segments of lower-case letters, digits, - and _ '
            "between slashes, e.g. /mail/)"
        )
    if value.startswith(("/.well-known/", "/autodiscover/")):
        raise ValueError("is a path the front already serves (.well-known, autodiscover)")
    return value


WebPath = Annotated[str, AfterValidator(check_web_path)]


class Webmail(Section):
    path: WebPath = Field(
        default="/",
        description='where the webmail answers on https://<hostname>: "/" (the landing page '
        "makes way for it) or e.g. /mail/",
    )


class Ports(Section):
    smtp: Port = Field(default=25, description="inbound mail (MX), postscreen, STARTTLS")
    submissions: Port = Field(default=465, description="mail submission, implicit TLS")
    submission: Port = Field(default=587, description="mail submission, STARTTLS required")
    imap: Port = Field(default=143, description="IMAP, STARTTLS required before login")
    imaps: Port = Field(default=993, description="IMAP, implicit TLS")
    http: Port = Field(default=80, description="HTTP (redirects to HTTPS, ACME challenges)")
    https: Port = Field(default=443, description="HTTPS front")
    managesieve: Port = Field(
        default=4190, description="ManageSieve (users' own filters), STARTTLS required before login"
    )
    pop3s: Port = Field(default=995, description="POP3, implicit TLS (features.pop3)")
    pop3: Port = Field(
        default=110, description="POP3, STARTTLS required before login (features.pop3_starttls)"
    )

    @model_validator(mode="after")
    def _distinct(self) -> Ports:
        seen: dict[int, str] = {}
        for name, port in self.model_dump().items():
            if port in seen:
                raise ValueError(f"port {port} is used twice ({seen[port]} and {name})")
            seen[port] = name
        return self


class Network(Section):
    bind_ipv4: IPv4 = Field(default="0.0.0.0", description="address the published ports bind to")  # noqa: S104  # a mail server listens publicly by design
    ipv6: bool = Field(
        default=False,
        description="also publish the ports on bind_ipv6; not supported yet (must be false)",
    )
    bind_ipv6: IPv6 = Field(
        default="::", description="IPv6 address the ports would bind to (with network.ipv6)"
    )
    frontend_subnet: Subnet = Field(
        default="172.29.80.0/24",
        description="network of the services that publish ports; private IPv4, /24 or larger "
        "(fixed addresses .53, .80, .81; Docker picks the rest from .128-.255)",
    )
    backend_subnet: Subnet = Field(
        default="172.29.81.0/24",
        description="internal network (db, redis, rspamd); no egress; private IPv4, /24 or "
        "larger (fixed addresses .24, .53, .81; Docker picks the rest from .128-.255)",
    )
    ports: Ports = Field(default_factory=Ports)

    @field_validator("ipv6")
    @classmethod
    def _ipv4_only(cls, value: bool) -> bool:
        # Docker's userland proxy would hand every IPv6 client to the stack as one IPv4
        # address (the gateway's): one client could ban all IPv6 users, exhaust every IPv6
        # sender's rate limit, and SPF would judge the wrong address. SECURITY.md: IPv6.
        if value:
            raise ValueError(
                "is not supported yet: Docker would show every IPv6 client to the stack "
                "as one IPv4 address, so bans, rate limits and SPF would judge the wrong "
                "client; allowed: false (SECURITY.md, IPv6)"
            )
        return value

    @model_validator(mode="after")
    def _no_overlap(self) -> Network:
        front = ipaddress.ip_network(self.frontend_subnet)
        back = ipaddress.ip_network(self.backend_subnet)
        if front.overlaps(back):
            raise ValueError("frontend_subnet and backend_subnet overlap")
        return self


def check_acme_url(value: str) -> str:
    reject_unsafe_text(value, limit=500)
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme != "https" or not parsed.hostname:
        raise ValueError("is not an https:// URL of an ACME directory")
    return value


AcmeUrl = Annotated[str, AfterValidator(check_acme_url)]
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


class Tls(Section):
    mode: Literal["selfsigned", "acme", "manual"] = Field(
        default="selfsigned",
        description="selfsigned: a certificate from the stack's own CA; acme: obtained and "
        "renewed automatically (HTTP-01 through the front, `mailstack tls renew`); manual: "
        "cert_file and key_file below",
    )
    acme_email: Address | None = Field(
        default=None,
        description="mode acme: contact for the ACME account (expiry warnings from the CA)",
    )
    acme_server: AcmeUrl = Field(
        default=LETS_ENCRYPT, description="mode acme: the ACME directory URL (Let's Encrypt)"
    )
    renew_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="mode acme: renew when the certificate expires in fewer days than this",
    )
    ca_file: AbsolutePath | None = Field(
        default=None,
        description="modes acme and manual: a PEM bundle of extra CAs the stack trusts for its "
        "own certificate and the ACME server (a private CA); default: the system's CAs",
    )
    cert_file: AbsolutePath | None = Field(
        default=None, description="mode manual: PEM chain (certificate first)"
    )
    key_file: AbsolutePath | None = Field(default=None, description="mode manual: PEM key")

    @model_validator(mode="after")
    def _manual_needs_files(self) -> Tls:
        if self.mode == "manual" and not (self.cert_file and self.key_file):
            raise ValueError("mode manual needs cert_file and key_file")
        return self


RelayUsername = Annotated[str, Field(pattern=r"^[A-Za-z0-9@._+=-]{1,256}$")]
IMPLICIT_TLS_PORT = 465


class SenderRelay(Section):
    """One sender domain's own relay: mail whose envelope sender is in `domain` goes
    through it instead of relay.host (or each domain's MX)."""

    domain: Domain = Field(
        description="the sender domain (a hosted domain: `mailstack domain list`) whose mail "
        "this relay takes"
    )
    host: Domain = Field(
        description="the relay's host name; its certificate must be valid for it (verified "
        "like relay.host's)"
    )
    port: Port = Field(default=587, description="587 (or 25): STARTTLS, required")
    username: RelayUsername | None = Field(
        default=None,
        description="the SASL user name at this relay; its password is "
        "secrets/relay_password.<domain> (`mailstack relay password --domain <domain>`); "
        "unset: no authentication",
    )

    @property
    def implicit_tls(self) -> bool:
        return self.port == IMPLICIT_TLS_PORT


class Relay(Section):
    """A relay host (smarthost): every outbound message goes through it instead of each
    domain's MX, for providers that block outbound port 25."""

    host: Domain | None = Field(
        default=None,
        description="the relay's host name; unset: mail goes straight to each domain's MX. "
        "Its certificate must be valid for this name: TLS is required and verified",
    )
    port: Port = Field(
        default=587,
        description="587 (or 25): STARTTLS, required; 465: implicit TLS",
    )
    username: RelayUsername | None = Field(
        default=None,
        description="the SASL user name at the relay; its password is secrets/relay_password "
        "(`mailstack relay password`); unset: no authentication (the relay knows this "
        "server by its address)",
    )
    ca_file: AbsolutePath | None = Field(
        default=None,
        description="a PEM bundle of the CAs that verify the relay's certificate, in place "
        "of the system's (a private relay); read at `mailstack up`. It verifies the "
        "by_sender_domain relays too",
    )
    by_sender_domain: list[SenderRelay] = Field(
        default=[],
        max_length=100,
        description="relays chosen by the envelope sender's domain, each {domain, host, port, "
        "username}: that domain's mail goes through its relay, all other mail through "
        "relay.host (or to each MX); docs/relay.md",
    )

    @model_validator(mode="after")
    def _needs_host(self) -> Relay:
        if self.host is None and (self.username is not None or self.ca_file is not None):
            raise ValueError("username and ca_file need host: the relay's name")
        return self

    @model_validator(mode="after")
    def _sender_relays_fit(self) -> Relay:
        seen: set[str] = set()
        for index, entry in enumerate(self.by_sender_domain):
            key = f"by_sender_domain[{index}]"
            if entry.domain in seen:
                raise ValueError(f"{key}.domain: {entry.domain} is listed twice")
            seen.add(entry.domain)
            # Postfix 3.7 turns implicit TLS on for every relay at once (smtp_tls_wrappermode)
            # and has no per-destination switch: a sender relay must use the default's kind.
            if entry.implicit_tls != self.implicit_tls:
                raise ValueError(
                    f"{key}.port: {entry.port} cannot be used while relay.port is "
                    f"{self.port if self.host else 'unset'}: Postfix sets implicit TLS (port "
                    f"{IMPLICIT_TLS_PORT}) for all relays at once, so a sender relay uses port "
                    f"{IMPLICIT_TLS_PORT} exactly when relay.host does"
                )
        return self

    @property
    def implicit_tls(self) -> bool:
        return self.host is not None and self.port == IMPLICIT_TLS_PORT

    def sender_relay(self, domain: str) -> SenderRelay | None:
        """The relay of a sender domain's own, if it has one."""
        return next((e for e in self.by_sender_domain if e.domain == domain.lower()), None)


class Backup(Section):
    target: BackupTarget = Field(
        default="/var/backups/mailstack",
        description="the restic repository: a local path outside the stack directory (e.g. "
        "a mounted disk), sftp://user@host[:port]/path, or s3://host[:port]/bucket[/prefix] "
        "(S3-compatible; s3+http:// only for an endpoint on a trusted network)",
    )
    ssh_host_key: SshHostKey | None = Field(
        default=None,
        description='sftp targets: the server\'s public host key ("ssh-ed25519 AAAA…", as in '
        "its /etc/ssh/ssh_host_ed25519_key.pub); required, nothing is trusted on first use",
    )
    s3_access_key_id: S3KeyId | None = Field(
        default=None,
        description="s3 targets: the access key id; the secret key goes in "
        "secrets/backup_s3_secret_access_key (one line, mode 0600)",
    )
    keep_daily: int = Field(default=7, ge=0, le=366, description="daily snapshots kept")
    keep_weekly: int = Field(default=4, ge=0, le=520, description="weekly snapshots kept")
    keep_monthly: int = Field(default=12, ge=0, le=1200, description="monthly snapshots kept")
    verify_read_percent: int = Field(
        default=5,
        ge=1,
        le=100,
        description="share of the repository's data that `backup verify` reads back and checks",
    )
    schedule_time: DailyTime = Field(
        default="03:30",
        description="local time (HH:MM) of the daily backup once `mailstack backup schedule "
        "on` has installed the timer",
    )
    verify_schedule: Literal["off", "daily", "weekly", "monthly"] = Field(
        default="weekly",
        description="how often `backup verify` (a trial restore of a sample into scratch "
        "space) runs, three hours after the backup (weekly: Sundays; monthly: the 1st), once "
        "`backup schedule on` has installed the timers; a failure mails the postmaster",
    )

    @model_validator(mode="after")
    def _target_credentials(self) -> Backup:
        if self.target.startswith("sftp://") and self.ssh_host_key is None:
            raise ValueError("an sftp target needs ssh_host_key (the server's public host key)")
        if self.target.startswith(("s3://", "s3+http://")) and self.s3_access_key_id is None:
            raise ValueError("an s3 target needs s3_access_key_id")
        return self


class Update(Section):
    channel: Literal["stable", "fast", "beta"] = Field(
        default="stable",
        description="stable: tested feature releases; fast: fixes only; beta: early",
    )
    feed_url: FeedUrl | None = Field(
        default=None,
        description="the release feed `update --check` reads (JSON, docs/release-feed.md); "
        "https, or http on the loopback address",
    )
    security: Literal["auto", "notify", "off"] = Field(
        default="auto",
        description="Debian security fixes in the images (docs/update.md): auto applies them "
        "unattended inside the window (health-gated, rolled back on failure) and mails the "
        "postmaster what it did; notify only mails what is pending and the command to run; "
        "off: only `mailstack check updates` and `status` tell",
    )
    window: TimeWindow = Field(
        default="04:00-06:00",
        description="local time (HH:MM-HH:MM, may cross midnight) in which security: auto may "
        "restart a service; the daily check runs at its start",
    )


class Logs(Section):
    driver: Literal["json-file", "journald"] = Field(
        default="json-file",
        description="where Docker keeps the services' logs: json-file (rotated files beside "
        "the containers) or journald (the host's journal, which can forward to syslog; "
        "docs/logs.md); `mailstack logs` reads either",
    )
    max_size_mb: int = Field(
        default=10, ge=1, le=1024, description="json-file: size of one log file, in MB"
    )
    max_files: int = Field(
        default=3, ge=1, le=100, description="json-file: files kept per container, rotated"
    )


class Images(Section):
    registry: Registry | None = Field(
        default=None,
        description="pull images from this registry instead of building them locally",
    )
    apt_sources: AbsolutePath | None = Field(
        default=None,
        description="a file of apt sources (deb822 or one-line) images are built from, with "
        "the release, -updates and -security suites; default: the host's own apt sources",
    )

    @property
    def apt_sources_path(self) -> Path | None:
        return Path(self.apt_sources) if self.apt_sources else None


def check_size(value: str) -> str:
    """A size as operators write it (2G, 500M, 0 for none), checked with the CLI's parser."""
    reject_unsafe_text(value, limit=32)
    bytes_ = parse_size(value)  # ValueError names what is allowed
    if bytes_ > MAX_QUOTA_BYTES:
        raise ValueError(f"is too large (at most {format_size(MAX_QUOTA_BYTES)})")
    return value.strip()


def _size_as_text(value: object) -> object:
    """YAML reads `0` or `1024` as a number; a size may be written either way."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Size = Annotated[str, BeforeValidator(_size_as_text), AfterValidator(check_size)]
WarningPercent = Annotated[int, Field(ge=1, le=99)]


class Mailboxes(Section):
    default_quota: Size = Field(
        default="2G",
        description="storage quota of a new mailbox when `mailbox add` gets no --quota "
        "(e.g. 2G, 500M; 0 for none)",
    )
    quota_warnings: list[WarningPercent] = Field(
        default=[85, 95],
        max_length=5,
        description="a mailbox gets a warning message when its usage first crosses each of "
        "these percentages of its quota; [] for none",
    )

    @field_validator("quota_warnings")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("lists a percentage twice")
        return value


class Monitoring(Section):
    metrics: bool = Field(
        default=False,
        description="the metrics service: Prometheus metrics of Postfix, Dovecot and rspamd "
        "at http://<metrics_address>:<metrics_port>/metrics, with the bearer token in "
        "secrets/metrics_token (docs/metrics.md)",
    )
    metrics_address: IPv4 = Field(
        default="127.0.0.1",
        description="address the metrics port is published on: the host's loopback, or a "
        "private address your Prometheus reaches; never the public bind address by default",
    )
    metrics_port: Port = Field(default=9154, description="port the metrics are published on")
    metrics_subnet: Subnet = Field(
        default="172.29.82.0/24",
        description="the metrics service's own network, the only one its port is published "
        "from; private IPv4, /24 or larger (fixed address .83)",
    )
    schedule: Literal["off", "1min", "5min", "10min", "15min", "30min", "60min"] = Field(
        default="5min",
        description="how often a host timer runs `check health` (`mailstack alert health`) and "
        "mails the postmaster when the verdict or the set of failing items changes, "
        "resolved included, never twice for the same state; installed by `up` in production "
        "mode where systemd runs (docs/alerts.md)",
    )
    daily_summary: DailyTimeOrOff = Field(
        default="off",
        description="local time (HH:MM) of a daily mail to the postmaster with every `check "
        'health` item\'s verdict, or "off"; the change alerts of monitoring.schedule come '
        "either way",
    )

    @property
    def schedule_minutes(self) -> int | None:
        """monitoring.schedule in minutes; None when off."""
        return None if self.schedule == "off" else int(self.schedule.removesuffix("min"))

    @field_validator("metrics_address")
    @classmethod
    def _one_address(cls, value: str) -> str:
        # Every address would publish the metrics wherever the mail ports are: the public one.
        if ipaddress.ip_address(value).is_unspecified:
            raise ValueError(
                "is every address of the host, the public one too; allowed: 127.0.0.1 or one "
                "address your Prometheus reaches (a private or VPN address)"
            )
        return value


NodeRole = Literal["edge", "mailbox", "db"]


class ClusterNode(Section):
    name: NodeName = Field(description="the node's hostname, as `docker node ls` shows it")
    engine: EngineUrl = Field(
        description="how mailstack reaches its Docker engine: ssh://[user@]host[:port] (the "
        "docker CLI's SSH transport, with your ssh keys and known_hosts), or unix:///path to "
        "the engine's socket when mailstack runs on that node"
    )
    roles: list[NodeRole] = Field(
        min_length=1,
        max_length=3,
        description="edge (Postfix, rspamd, the front, Dovecot's proxy; its ports published "
        "on the node), mailbox (a back end holding users' mail), db (PostgreSQL: the first "
        "db node the primary, a second its standby)",
    )

    @field_validator("roles")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a role twice")
        return value


class Cluster(Section):
    """The nodes of a Docker Swarm cluster the stack spreads over (docs/cluster.md); none:
    one host, Docker Compose."""

    nodes: list[ClusterNode] = Field(
        default=[],
        max_length=64,
        description="the swarm's nodes, each {name, engine, roles}; empty: a single host",
    )
    gwbridge_subnet: Subnet = Field(
        default="172.18.0.0/16",
        description="docker_gwbridge's network on every node (Docker's default): the stack's "
        "resolver listens on its gateway, the first address, on each node's host network",
    )

    link_subnet: Subnet = Field(
        default="172.29.96.0/20",
        description="where the cluster's links come from: a /27 each, an overlay network "
        "that only a listener and its one client join (docs/cluster.md)",
    )

    @property
    def mailbox_nodes(self) -> list[str]:
        """The mailbox back ends, in the file's order: the first is home to mailboxes that
        name none (docs/cluster.md)."""
        return [node.name for node in self.nodes if "mailbox" in node.roles]

    @property
    def node_resolver(self) -> str:
        """Where every task's DNS queries go: the resolver on its own node (docs/cluster.md)."""
        return str(ipaddress.ip_network(self.gwbridge_subnet).network_address + 1)

    @model_validator(mode="after")
    def _a_cluster_that_carries_mail(self) -> Cluster:
        if not self.nodes:
            return self
        for key in ("name", "engine"):
            values = [getattr(node, key) for node in self.nodes]
            twice = sorted({value for value in values if values.count(value) > 1})
            if twice:
                raise ValueError(f"nodes: {key} {twice[0]!r} is listed twice")
        roles = ("edge", "mailbox", "db")
        counts = {role: sum(role in node.roles for node in self.nodes) for role in roles}
        for role in roles:
            if not counts[role]:
                raise ValueError(f"nodes: no node has the role {role} (each role needs one)")
        if counts["db"] > 2:
            raise ValueError(
                f"nodes: {counts['db']} nodes have the role db; allowed: 1 (a primary) or 2 "
                "(a primary and its standby)"
            )
        return self

    @model_validator(mode="after")
    def _room_for_every_link(self) -> Cluster:
        prefix = services.link_pool_prefix()
        if ipaddress.ip_network(self.link_subnet).prefixlen > prefix:
            raise ValueError(
                f"link_subnet {self.link_subnet} is too small: the cluster's "
                f"{len(services.LINKS)} links take a /{services.LINK_PREFIX} each; allowed: "
                f"a /{prefix} or larger"
            )
        return self
