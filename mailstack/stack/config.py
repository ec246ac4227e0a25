"""The operator's file, mailstack.yaml: typed model, defaults, and validation with clear errors.

Every value that can reach a generated file is checked here, so no input can inject a
line or a directive into a daemon's configuration.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mailstack.errors import ConfigError
from mailstack.mailauth.policy import MTA_STS_MAX_MAX_AGE, PolicySyntaxError, parse_spf
from mailstack.stack.config_values import (
    AbsolutePath,
    Address,
    BackupTarget,
    DailyTime,
    Domain,
    Extension,
    FeedUrl,
    IPv4,
    IPv6,
    Port,
    ProjectName,
    Registry,
    S3KeyId,
    Score,
    SshHostKey,
    Subnet,
    TimeWindow,
    TimeZone,
    normalize_address,
    reject_unsafe_text,
)
from mailstack.units import (
    MAX_QUOTA_BYTES,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

CONFIG_FILE = "mailstack.yaml"
MAX_CONFIG_BYTES = 64 * 1024

# Attachment types refused by default: executables, scripts, shortcuts, disk images and
# Office formats that carry macros; also when they are inside an archive.
DANGEROUS_EXTENSIONS = (
    "exe", "scr", "com", "pif", "bat", "cmd", "cpl", "dll", "msi", "msp", "msc", "reg",
    "js", "jse", "vbs", "vbe", "vb", "wsf", "wsh", "wsc", "hta", "ps1", "psm1", "jar",
    "lnk", "scf", "url", "inf", "chm", "iso", "img", "vhd", "vhdx", "appx", "msix",
    "docm", "dotm", "xlsm", "xltm", "xlam", "pptm", "potm", "ppsm", "ppam", "sldm",
)  # fmt: skip


# --- the model -------------------------------------------------------------------------------


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


class Spam(Section):
    junk_score: Score = Field(
        default=6.0,
        description="spam score at which inbound mail gets the header X-Spam: Yes (the "
        "mailbox filters it into Junk)",
    )
    reject_score: Score = Field(
        default=15.0,
        description="spam score at which mail is refused during the SMTP dialogue (5xx)",
    )
    greylisting: bool = Field(
        default=True,
        description="greylist doubtful inbound mail (score at least greylist_score): the "
        "first attempt gets a 4xx, a retry after 5 minutes is accepted; init --sandbox "
        "turns it off",
    )
    greylist_score: Score = Field(
        default=4.0, description="spam score from which greylisting applies"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Spam:
        if self.junk_score >= self.reject_score:
            raise ValueError("junk_score must be lower than reject_score")
        if self.greylisting and self.greylist_score >= self.junk_score:
            raise ValueError("greylist_score must be lower than junk_score")
        return self


class Attachments(Section):
    blocked_extensions: list[Extension] = Field(
        default=list(DANGEROUS_EXTENSIONS),
        description="attachments with these extensions are refused (5xx), also inside "
        "archives and when the content reveals the type",
    )
    allowed_extensions: list[Extension] = Field(
        default=[],
        description="your allowlist: extensions accepted even when blocked_extensions lists "
        "them (e.g. [iso])",
    )


class RateLimits(Section):
    sender_burst: int = Field(
        default=200,
        ge=0,
        le=1_000_000,
        description="recipients one authenticated sender (SMTP login) may send to at once "
        "before the limit applies (4xx, retried later); 0 turns this limit off",
    )
    sender_per_hour: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        description="recipients per hour a sender regains once the burst is used up",
    )
    client_ip_burst: int = Field(
        default=100,
        ge=0,
        le=1_000_000,
        description="messages one client address may send unauthenticated (inbound mail) "
        "at once before the limit applies (4xx); 0 turns this limit off",
    )
    client_ip_per_hour: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="messages per hour a client address regains once the burst is used up",
    )
    client_connections_per_minute: int = Field(
        default=60,
        ge=0,
        le=1_000_000,
        description="SMTP connections per minute one client address may open to a port before "
        "Postfix answers 421; 0 turns this limit off",
    )


def check_duration(value: str, low: int, high: int) -> str:
    """A duration as operators write it (90s, 10m, 1h, 2d), within [low, high] seconds."""
    reject_unsafe_text(value, limit=32)
    seconds = parse_duration(value)  # ValueError names what is allowed
    if not low <= seconds <= high:
        raise ValueError(f"is out of range ({format_duration(low)}–{format_duration(high)})")
    return value.strip().lower()


def _duration_as_text(value: object) -> object:
    """A plain number is seconds: `600` reads as "600s"."""
    return f"{value}s" if isinstance(value, int) and not isinstance(value, bool) else value


def _duration_within(low: int, high: int) -> AfterValidator:
    return AfterValidator(lambda value: check_duration(value, low, high))


BanWindow = Annotated[str, BeforeValidator(_duration_as_text), _duration_within(60, 86400)]
BanTime = Annotated[str, BeforeValidator(_duration_as_text), _duration_within(1, 30 * 86400)]
BanDelay = Annotated[str, BeforeValidator(_duration_as_text), _duration_within(0, 30)]


def check_client_network(value: str) -> str:
    """An IPv4 or IPv6 network in CIDR form, or one address (taken as /32 or /128)."""
    reject_unsafe_text(value, limit=64)
    try:
        network = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError:
        raise ValueError(
            "is not an address or a network in CIDR form without host bits "
            "(e.g. 192.0.2.10, 192.0.2.0/24 or 2001:db8::/48)"
        ) from None
    return str(network)


ClientNetwork = Annotated[str, AfterValidator(check_client_network)]


class Bans(Section):
    enabled: bool = Field(
        default=True,
        description="brute-force defence for IMAP and SMTP AUTH: failed logins from one "
        "client address slow down its next attempts and then ban it for a while",
    )
    max_failures: int = Field(
        default=10,
        ge=2,
        le=1000,
        description="failed logins (distinct login and password pairs: a client retrying one "
        "stale password counts once) within `window` after which the address is banned",
    )
    window: BanWindow = Field(
        default="10m",
        description="how long a failed login counts (1m–1d; e.g. 10m, 1h)",
    )
    ban_time: BanTime = Field(
        default="1h",
        description="how long a banned address is refused, even with the right password "
        "(1s–30d); `mailstack security bans --clear ADDRESS` lifts a ban early",
    )
    max_delay: BanDelay = Field(
        default="15s",
        description="longest delay before a login is checked; the delay doubles with each "
        "recent failure from the address (1s, 2s, 4s, …), 0s turns delays off",
    )
    exempt_networks: list[ClientNetwork] = Field(
        default=[],
        description="client addresses or networks never delayed or banned (e.g. your office "
        "or a webmail host); loopback is not exempt unless listed here (127.0.0.0/8, ::1)",
    )
    fail_closed: bool = Field(
        default=False,
        description="what a login does while the bans service does not answer within 2s "
        "(stopped, restarting, broken): false lets the password check decide alone, so mail "
        "keeps working but failed logins are neither delayed nor banned meanwhile; true "
        "refuses every IMAP, ManageSieve and SMTP AUTH login until it answers again. Dovecot "
        "logs each unanswered check either way",
    )


class Dkim(Section):
    ed25519: bool = Field(
        default=False,
        description="also sign with an Ed25519 key per domain (RFC 8463), beside the RSA "
        "signature that every verifier checks; publish its record too (dns records)",
    )


class Policy(Section):
    dkim: Dkim = Field(default_factory=Dkim)
    spam: Spam = Field(default_factory=Spam)
    attachments: Attachments = Field(default_factory=Attachments)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    bans: Bans = Field(default_factory=Bans)


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


def check_spf(value: str) -> str:
    """An SPF record as published (one TXT string), syntax checked."""
    reject_unsafe_text(value, limit=450)
    if any(ch in value for ch in "\"'\\"):
        raise ValueError("is not an SPF record (quotes and backslashes are not allowed)")
    try:
        parse_spf(value)
    except PolicySyntaxError as e:
        raise ValueError(f"is not an SPF record: it {e}") from None
    return " ".join(value.split())


def check_report_address(value: str) -> str:
    """A report address for DMARC/TLS-RPT: a plain mailto: target (no quotes, no '!' or ',')."""
    address = normalize_address(value)
    if not re.match(r"^[A-Za-z0-9._+-]+@", address):
        raise ValueError("is not a plain mail address (letters, digits and . _ + - before the @)")
    return address


Spf = Annotated[str, AfterValidator(check_spf)]
ReportAddress = Annotated[str, AfterValidator(check_report_address)]


class Dns(Section):
    public_ipv4: IPv4 | None = Field(
        default=None,
        description="the host's public IPv4 address: the hostname's A record, the mta-sts "
        "host and the PTR to ask your provider for (`dns records` prints a placeholder "
        "while unset)",
    )
    public_ipv6: IPv6 | None = Field(
        default=None, description="the host's public IPv6 address (AAAA records), if any"
    )
    spf: Spf = Field(
        default="v=spf1 mx -all",
        description="the SPF record every mail domain publishes (syntax and the 10-lookup "
        "limit are checked by `check dns`)",
    )
    dmarc_policy: Literal["none", "quarantine", "reject"] = Field(
        default="quarantine", description="DMARC p= of every mail domain"
    )
    dmarc_rua: ReportAddress | None = Field(
        default=None,
        description="where DMARC aggregate reports go (default: postmaster@ each domain)",
    )
    tls_rpt_rua: ReportAddress | None = Field(
        default=None,
        description="where TLS-RPT reports go (default: postmaster@ each domain)",
    )
    mta_sts_mode: Literal["enforce", "testing", "none"] = Field(
        default="testing",
        description="MTA-STS policy mode served at https://mta-sts.<domain>: testing only "
        "reports failures; use enforce once the certificate is publicly trusted (senders "
        "then refuse to deliver without valid TLS); none withdraws the policy",
    )
    mta_sts_max_age: int = Field(
        default=604800,
        ge=604800,
        le=MTA_STS_MAX_MAX_AGE,
        description="seconds senders may cache the MTA-STS policy (one week or more)",
    )


class Config(Section):
    hostname: Domain = Field(description="the mail server's fully qualified name (MX target)")
    domain: Domain = Field(description="the first mail domain")
    project: ProjectName = Field(
        default="mailstack",
        description="Compose project name: fixes the names of containers, networks, volumes",
    )
    mode: Literal["production", "sandbox"] = Field(
        default="production",
        description="sandbox: DNS only from a local zone, no recursion, no RBLs or downloads, "
        "all outbound mail to an internal sink (staging and tests)",
    )
    timezone: TimeZone = Field(default="UTC", description="time zone of logs and the daemons")
    features: Features = Field(default_factory=Features)
    webmail: Webmail = Field(default_factory=Webmail)
    network: Network = Field(default_factory=Network)
    tls: Tls = Field(default_factory=Tls)
    backup: Backup = Field(default_factory=Backup)
    update: Update = Field(default_factory=Update)
    images: Images = Field(default_factory=Images)
    policy: Policy = Field(default_factory=Policy)
    mailboxes: Mailboxes = Field(default_factory=Mailboxes)
    dns: Dns = Field(default_factory=Dns)


# --- loading ---------------------------------------------------------------------------------


def load_config(path: Path) -> Config:
    """Read and validate mailstack.yaml; every problem becomes one ConfigError line."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(path.name, "", None, f"cannot be read ({e.strerror})") from None
    return parse_config(raw, source=path.name)


def parse_config(raw: bytes, source: str = CONFIG_FILE) -> Config:
    data = parse_yaml(raw, source)
    if not isinstance(data, dict):
        raise ConfigError(source, "", None, "must be a mapping of keys to values")
    return validate_config(data, source)


def parse_yaml(raw: bytes, source: str) -> Any:
    """Safe YAML: bounded size, no object construction, no aliases (no billion laughs)."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(source, "", None, f"is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) and event.start_mark is not None:
                mark = event.start_mark
                raise ConfigError(
                    source,
                    "",
                    None,
                    f"line {mark.line + 1}, column {mark.column + 1}: "
                    "YAML aliases (*name) are not allowed",
                )
        return yaml.safe_load(text)
    except UnicodeDecodeError:
        raise ConfigError(source, "", None, "is not UTF-8 text") from None
    except yaml.MarkedYAMLError as e:
        marked = e.problem_mark or e.context_mark
        where = f"line {marked.line + 1}, column {marked.column + 1}: " if marked else ""
        problem = e.problem or e.context or "invalid YAML"
        raise ConfigError(source, "", None, f"{where}YAML syntax error: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(source, "", None, f"YAML syntax error: {e}") from None


def validate_config(data: dict[str, Any], source: str = CONFIG_FILE) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        first = explain(errors[0])
        error = ConfigError(source, first[0], first[1], first[2])
        if len(errors) > 1:
            error.hint = f"{len(errors) - 1} more problem(s) after this one"
        raise error from None


def explain(error: Any) -> tuple[str, object, str]:  # noqa: PLR0911  # one case per error kind
    """Turn one pydantic error into (key path, bad value, what is allowed)."""
    location = [str(part) for part in error["loc"]]
    key = ".".join(location)
    value = error.get("input")
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return key, None, "is not a known key" + _did_you_mean(location)
    if kind == "missing":
        return key, None, "is required"
    if kind == "value_error":
        return key, value if not isinstance(value, dict) else None, str(ctx.get("error", ""))
    if kind in ("less_than_equal", "greater_than_equal") and location[-1] in Ports.model_fields:
        return key, value, "is not a port (1–65535)"
    if kind == "greater_than_equal":
        return key, value, f"is too small (at least {ctx.get('ge')})"
    if kind == "less_than_equal":
        return key, value, f"is too large (at most {ctx.get('le')})"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return key, value, f"is not one of: {expected}"
    simple = {
        "bool_type": "is not true or false",
        "int_type": "is not a whole number",
        "string_type": "is not text",
        "model_type": "is not a mapping of keys to values",
        "dict_type": "is not a mapping of keys to values",
    }
    if kind in simple:
        return key, value, simple[kind]
    return key, value, str(error.get("msg", "is not valid"))


def _did_you_mean(location: list[str]) -> str:
    model: type[BaseModel] = Config
    for part in location[:-1]:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(location[-1], list(model.model_fields), n=1, cutoff=0.6)
    allowed = ", ".join(model.model_fields)
    return f" (did you mean {close[0]}?)" if close else f" (known keys: {allowed})"
