"""The mail policy sections of mailstack.yaml: DKIM, spam scores and greylisting, refused
attachments, rate limits, login bans (under `policy`), and what DNS publishes for every
mail domain: SPF, DMARC, TLS-RPT and MTA-STS (`dns`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from mailstack.mailauth.policy import MTA_STS_MAX_MAX_AGE, PolicySyntaxError, parse_spf
from mailstack.stack.config_sections import Section
from mailstack.stack.config_types import Extension, IPv4, IPv6, Score
from mailstack.stack.config_values import normalize_address, reject_unsafe_text
from mailstack.units import format_duration, parse_duration

# Attachment types refused by default: executables, scripts, shortcuts, disk images and
# Office formats that carry macros; also when they are inside an archive.
DANGEROUS_EXTENSIONS = (
    "exe", "scr", "com", "pif", "bat", "cmd", "cpl", "dll", "msi", "msp", "msc", "reg",
    "js", "jse", "vbs", "vbe", "vb", "wsf", "wsh", "wsc", "hta", "ps1", "psm1", "jar",
    "lnk", "scf", "url", "inf", "chm", "iso", "img", "vhd", "vhdx", "appx", "msix",
    "docm", "dotm", "xlsm", "xltm", "xlam", "pptm", "potm", "ppsm", "ppam", "sldm",
)  # fmt: skip


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
    mfa: Literal["optional", "required"] = Field(
        default="optional",
        description="the second factor (TOTP) of mailbox users: optional lets each user "
        "enrol or not; required makes the webmail refuse sign-in to a user without one "
        "(needs features.admin)",
    )
    mfa_protocols: Literal["app_passwords_only", "passwords_allowed"] = Field(
        default="app_passwords_only",
        description="what IMAP, SMTP AUTH and ManageSieve accept from a user with a second "
        "factor: app_passwords_only refuses the account password there (only the webmail, "
        "which asks for the code, may use it), so a stolen password alone opens nothing; "
        "passwords_allowed accepts it everywhere",
    )
    dkim: Dkim = Field(default_factory=Dkim)
    spam: Spam = Field(default_factory=Spam)
    attachments: Attachments = Field(default_factory=Attachments)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    bans: Bans = Field(default_factory=Bans)


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
