"""The DNS records a stack needs published, as data (pure: no DNS, no I/O).

`mailstack dns records` prints them as zone-file lines, `mailstack check dns` compares them
with what DNS serves, and in sandbox mode the stack's own resolver serves them, so the
sandbox is checked exactly as a production domain would be.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailstack import services
from mailstack.mailauth.dkim import DkimKey
from mailstack.mailauth.policy import MtaStsPolicy, dmarc_record
from mailstack.stack.config import Config
from mailstack.tls.dane import DaneKeys, tlsa_name

TTL = 3600
MX_PREFERENCE = 10
POSTMASTER = "postmaster"
# Names of a mail domain served by the front (its certificate covers them for the first
# domain): the MTA-STS policy host and the mail clients' autoconfiguration names.
MTA_STS_HOST = "mta-sts"
AUTOCONFIG_HOSTS = ("autoconfig", "autodiscover")
PLACEHOLDER_IPV4 = "<public IPv4 address>"
PLACEHOLDER_IPV6 = "<public IPv6 address>"


@dataclass(frozen=True)
class Record:
    """One record to publish: owner name (absolute, no trailing dot), type and zone data."""

    kind: str  # what the check calls it: MX, A, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, SRV, …
    name: str
    type: str
    data: str  # zone-file rdata, e.g. '10 mail.example.org.' or '"v=spf1 mx -all"'
    note: str  # one line: what it is for
    placeholder: bool = False  # data is a placeholder the operator must fill in
    at_provider: bool = False  # reverse DNS: set by whoever owns the address, not in a zone
    ttl: int = TTL

    @property
    def zone_line(self) -> str:
        return f"{self.name}. {self.ttl} IN {self.type} {self.data}"

    @property
    def text(self) -> str:
        """The TXT value as one string (the quoted chunks joined), for comparisons."""
        return "".join(part for part in self.data.split('"')[1::2])


@dataclass(frozen=True)
class RecordGroup:
    """The records of one name: the mail server's hostname, or one mail domain."""

    title: str
    records: tuple[Record, ...]


@dataclass(frozen=True)
class RecordSet:
    hostname: str
    groups: tuple[RecordGroup, ...]

    @property
    def records(self) -> tuple[Record, ...]:
        return tuple(record for group in self.groups for record in group.records)

    def __str__(self) -> str:
        lines = [
            f"; DNS records for the mail server {self.hostname}, in zone-file syntax.",
            "; Publish each group in the zone that holds its names; lines starting with ';'",
            "; are notes. `mailstack check dns` tells what is published and what is missing.",
        ]
        for group in self.groups:
            lines += ["", f"; --- {group.title} ---"]
            lines += [_printed(record) for record in group.records]
        return "\n".join(lines)


def _printed(record: Record) -> str:
    if record.at_provider:
        where = (
            "set dns.public_ipv4 in mailstack.yaml to see it"
            if record.placeholder
            else "ask your hosting provider to set it"
        )
        return f"; reverse DNS ({where}):\n;   {record.zone_line}"
    if record.placeholder:
        return f"; {record.zone_line} ; {record.note}"
    return f"{record.zone_line} ; {record.note}"


def front_address(config: Config) -> str:
    """The front's fixed address on the frontend network. In sandbox mode it stands in for
    the host's public address: the sandbox zone points the hostname and mta-sts.<domain> at
    it, and HTTPS on it answers on port 443."""
    return services.fixed_address(services.FRONT, config.network.frontend_subnet)


def public_ipv4(config: Config) -> str | None:
    """The host's public IPv4: from mailstack.yaml; in sandbox mode the front's address."""
    if config.dns.public_ipv4:
        return config.dns.public_ipv4
    return front_address(config) if config.mode == "sandbox" else None


def mta_sts_policy(config: Config) -> MtaStsPolicy:
    """The policy the front serves for every mail domain: the one MX is the hostname."""
    return MtaStsPolicy(config.dns.mta_sts_mode, (config.hostname,), config.dns.mta_sts_max_age)


def certificate_names(config: Config, domains: Iterable[str] = ()) -> tuple[str, ...]:
    """Names besides the hostname the stack's certificate covers: the web names (MTA-STS
    policy host, autoconfig, autodiscover) of the first domain and of every other given."""
    return tuple(
        f"{host}.{domain}"
        for domain in dict.fromkeys([config.domain, *domains])
        for host in (MTA_STS_HOST, *AUTOCONFIG_HOSTS)
    )


def dmarc_report_address(config: Config, domain: str) -> str:
    return config.dns.dmarc_rua or f"{POSTMASTER}@{domain}"


def tls_report_address(config: Config, domain: str) -> str:
    return config.dns.tls_rpt_rua or f"{POSTMASTER}@{domain}"


def host_records(config: Config, dane: DaneKeys | None = None) -> tuple[Record, ...]:
    """The mail server's own name: its addresses, SPF for its HELO name, reverse DNS, and
    (given the keys) DANE's TLSA records for port 25."""
    hostname = config.hostname
    records = list(address_records("A", hostname, config, "the mail server's address"))
    ipv4 = public_ipv4(config)
    ipv6 = config.dns.public_ipv6
    records += address_records("AAAA", hostname, config, "the mail server's IPv6 address")
    records.append(
        Record(
            "SPF",
            hostname,
            "TXT",
            txt("v=spf1 a -all"),
            "SPF of the server's own name (bounces are checked against it)",
        )
    )
    unknown = (
        ("<reversed public IPv4>.in-addr.arpa", True),
        ("<reversed public IPv6>.ip6.arpa", config.network.ipv6),
    )
    for address, (placeholder, wanted) in zip((ipv4, ipv6), unknown, strict=True):
        if address is None and not wanted:
            continue
        reverse = ipaddress.ip_address(address).reverse_pointer if address else placeholder
        records.append(
            Record(
                "PTR",
                reverse,
                "PTR",
                f"{hostname}.",
                "reverse DNS of the public address names the mail server",
                placeholder=address is None,
                at_provider=True,
            )
        )
    return tuple(records) + tlsa_records(config, dane)


def tlsa_records(config: Config, dane: DaneKeys | None) -> tuple[Record, ...]:
    """The served key's and the next key's `3 1 1` records (mailstack.tls.dane)."""
    if dane is None:
        return ()
    notes = (
        "DANE, in a DNSSEC-signed zone only: the key served on port 25",
        "DANE: the next key, published ahead of `mailstack tls rollover`",
    )
    return tuple(
        Record("TLSA", tlsa_name(config.hostname), "TLSA", data, note)
        for data, note in zip(dane.records, notes, strict=False)
    )


def address_records(rtype: str, name: str, config: Config, note: str) -> tuple[Record, ...]:
    """A or AAAA records for a name served from this host (placeholders while unknown)."""
    if rtype == "A":
        address = public_ipv4(config)
        if address:
            return (Record("A", name, "A", address, note),)
        hint = "set dns.public_ipv4 in mailstack.yaml, then run `mailstack dns records` again"
        return (Record("A", name, "A", PLACEHOLDER_IPV4, hint, placeholder=True),)
    if config.dns.public_ipv6:
        return (Record("AAAA", name, "AAAA", config.dns.public_ipv6, note),)
    if config.network.ipv6:
        hint = "set dns.public_ipv6 in mailstack.yaml, then run `mailstack dns records` again"
        return (Record("AAAA", name, "AAAA", PLACEHOLDER_IPV6, hint, placeholder=True),)
    return ()


def domain_records(config: Config, domain: str, keys: Iterable[DkimKey]) -> tuple[Record, ...]:
    """Everything one mail domain publishes so mail to and from it works and authenticates."""
    hostname = config.hostname
    ports, pop3 = config.network.ports, config.features.pop3
    dmarc_to = dmarc_report_address(config, domain)
    policy = mta_sts_policy(config)
    records = [
        Record("MX", domain, "MX", f"{MX_PREFERENCE} {hostname}.", "mail for the domain"),
        Record("SPF", domain, "TXT", txt(config.dns.spf), "SPF: the servers that send its mail"),
    ]
    records += [
        Record(
            "DKIM",
            key.record_name,
            "TXT",
            key.zone_data,
            f"DKIM key, selector {key.selector}"
            + ("" if key.active else " (published, not signing: rotation overlap)"),
        )
        for key in sorted(keys, key=lambda key: (not key.active, key.selector))
        if key.domain == domain
    ]
    records.append(
        Record(
            "DMARC",
            f"_dmarc.{domain}",
            "TXT",
            txt(dmarc_record(config.dns.dmarc_policy, dmarc_to)),
            f"DMARC policy; aggregate reports to {dmarc_to}",
        )
    )
    report_domain = dmarc_to.rpartition("@")[2]
    if report_domain != domain:
        records.append(
            Record(
                "DMARC",
                f"{domain}._report._dmarc.{report_domain}",
                "TXT",
                txt("v=DMARC1"),
                f"in the zone of {report_domain}: it accepts DMARC reports for {domain}",
            )
        )
    records.append(
        Record(
            "MTA-STS",
            f"_mta-sts.{domain}",
            "TXT",
            txt(f"v=STSv1; id={policy.policy_id}"),
            f"MTA-STS: a policy (mode {policy.mode}) is served; the id changes with it",
        )
    )
    records += address_records(
        "A", f"{MTA_STS_HOST}.{domain}", config, "MTA-STS policy host (HTTPS)"
    )
    records += address_records(
        "AAAA", f"{MTA_STS_HOST}.{domain}", config, "MTA-STS policy host (HTTPS)"
    )
    records.append(
        Record(
            "TLS-RPT",
            f"_smtp._tls.{domain}",
            "TXT",
            txt(f"v=TLSRPTv1; rua=mailto:{tls_report_address(config, domain)}"),
            "TLS-RPT: where senders report TLS failures",
        )
    )
    services = (
        ("_submissions._tcp", ports.submissions, "mail submission, implicit TLS (RFC 8314)"),
        ("_submission._tcp", ports.submission, "mail submission, STARTTLS (RFC 6186)"),
        ("_imaps._tcp", ports.imaps, "IMAP, implicit TLS (RFC 6186)"),
        *((("_pop3s._tcp", ports.pop3s, "POP3, implicit TLS (RFC 6186)"),) if pop3 else ()),
        ("_autodiscover._tcp", ports.https, "mail client autodiscovery"),
    )
    records += [
        Record("SRV", f"{service}.{domain}", "SRV", f"0 1 {port} {hostname}.", note)
        for service, port, note in services
    ]
    if config.features.dav:  # calendars and contacts: where, and under which path (RFC 6764)
        for service, what in (("_caldavs._tcp", "calendars"), ("_carddavs._tcp", "contacts")):
            records += [
                Record("SRV", f"{service}.{domain}", "SRV", f"0 1 {ports.https} {hostname}.",
                       f"{what} (CalDAV/CardDAV over TLS)"),
                Record("SRV", f"{service}.{domain}", "TXT", txt("path=/dav/"),
                       f"{what}: the path on that host"),
            ]  # fmt: skip
    records += [
        Record("autoconfig", f"{host}.{domain}", "CNAME", f"{hostname}.", "mail client setup")
        for host in AUTOCONFIG_HOSTS
    ]
    return tuple(records)


def record_set(
    config: Config,
    domains: Sequence[str],
    keys: Iterable[DkimKey],
    dane: DaneKeys | None = None,
) -> RecordSet:
    """The records of the mail server and of each given mail domain."""
    keys = tuple(keys)
    groups = [RecordGroup(f"mail server {config.hostname}", host_records(config, dane))]
    groups += [
        RecordGroup(f"mail domain {domain}", domain_records(config, domain, keys))
        for domain in domains
    ]
    return RecordSet(config.hostname, tuple(groups))


def sandbox_zone(config: Config, keys: Sequence[DkimKey]) -> list[tuple[str, str, str]]:
    """What the sandbox resolver serves: the records `dns records` prints for the first
    domain (PTR included: in the sandbox the stack is its own provider), plus the DKIM keys
    of every other domain, as (owner name, type, zone data)."""
    served = [*host_records(config), *domain_records(config, config.domain, keys)]
    served += [
        Record("DKIM", key.record_name, "TXT", key.zone_data, "")
        for key in keys
        if key.domain != config.domain
    ]
    # The web names of those domains too: the stack's certificate covers them (ACME asks).
    others = [key.domain for key in keys if key.domain != config.domain]
    first = set(certificate_names(config))
    served += [
        Record("web", name, "CNAME", f"{config.hostname}.", "")
        for name in certificate_names(config, others)
        if name not in first
    ]
    # Aliases of the hostname are served flattened (as many DNS providers do): Unbound does
    # not follow a CNAME in its local data, and ACME validation of those names asks for A.
    host_addresses = [r for r in served if r.name == config.hostname and r.type in ("A", "AAAA")]
    flat: list[tuple[str, str, str]] = []
    for record in served:
        if record.placeholder:
            continue
        if record.type == "CNAME" and record.data == f"{config.hostname}.":
            flat += [(record.name, address.type, address.data) for address in host_addresses]
        else:
            flat.append((record.name, record.type, record.data))
    return flat


def txt(text: str) -> str:
    """TXT data in zone-file form: quoted strings of at most 255 characters each."""
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join(f'"{chunk}"' for chunk in chunks)
