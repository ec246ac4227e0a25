"""The DNS side of a stack: `dns records` for its mail domains, and `check dns`, which asks
DNS for every one of those records and judges what it serves.

Queries go to one resolver (by default the stack's own Unbound, on its frontend address)
with dnspython; the MTA-STS policy is fetched over HTTPS as a sending server would (the
policy host's address from DNS, port 443, SNI, certificate verified, no redirects).
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from mailstack import services
from mailstack.accounts import directory
from mailstack.errors import MailstackError, UsageError
from mailstack.mailauth import dkim
from mailstack.mailauth.dkim import DkimKey
from mailstack.mailauth.dnsrecords import (
    MTA_STS_HOST,
    Record,
    RecordSet,
    domain_records,
    host_records,
    mta_sts_policy,
    public_ipv4,
    record_set,
)
from mailstack.mailauth.policy import (
    SPF_LOOKUP_LIMIT,
    PolicySyntaxError,
    count_spf_lookups,
    is_spf,
    parse_dmarc,
    parse_mta_sts_policy,
    parse_mta_sts_txt,
    parse_spf,
    parse_tls_rpt,
)
from mailstack.stack.config import Config
from mailstack.stack.stackdir import Stack
from mailstack.tls import dane
from mailstack.tls.dane import DaneKeys, TlsaAnswer, tlsa_name
from mailstack.verdict import FAIL, PASS, WARN, Verdict

QUERY_TIMEOUT = 5.0
HTTPS_TIMEOUT = 10.0
MAX_POLICY_BYTES = 64 * 1024


@dataclass(frozen=True)
class CheckRow:
    group: str  # the hostname or the mail domain
    kind: str  # MX, SPF, DKIM, …
    name: str  # the DNS name (or URL) looked at
    expected: str
    found: str
    verdict: Verdict
    fix: str  # one line; empty when it passes


@dataclass(frozen=True)
class DnsCheckReport:
    resolver: str
    rows: tuple[CheckRow, ...]

    @property
    def ok(self) -> bool:
        return all(row.verdict != FAIL for row in self.rows)

    @property
    def failures(self) -> tuple[CheckRow, ...]:
        return tuple(row for row in self.rows if row.verdict == FAIL)


class DnsLookupFailed(MailstackError):
    pass


def stack_resolver_address(config: Config) -> str:
    """The stack resolver's address on the frontend network (reachable from the host)."""
    return services.fixed_address(services.RESOLVER, config.network.frontend_subnet)


class Lookup:
    """DNS questions to one resolver; an empty answer (NXDOMAIN, no data) is an empty list."""

    def __init__(self, nameserver: str, timeout: float = QUERY_TIMEOUT) -> None:
        self.nameserver = nameserver
        self._resolver = dns.resolver.Resolver(configure=False)
        self._resolver.nameservers = [nameserver]
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        # AD in the question asks a validating resolver to say whether DNSSEC proved the
        # answer (RFC 6840 5.7): DANE records count only then.
        self._resolver.flags = dns.flags.RD | dns.flags.AD

    def records(self, name: str, rtype: str) -> list[str]:
        return self.validated_records(name, rtype)[0]

    def validated_records(self, name: str, rtype: str) -> tuple[list[str], bool]:
        """The answer's records, and whether the resolver validated them (its AD bit)."""
        try:
            answer = self._resolver.resolve(
                dns.name.from_text(name), rtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            return [], False  # only records are judged by their proof
        except dns.resolver.NoNameservers as e:
            raise DnsLookupFailed(f"{name} {rtype}: the resolver failed to answer ({e})") from None
        except dns.exception.Timeout:
            raise DnsLookupFailed(
                f"the resolver {self.nameserver} does not answer ({name} {rtype})",
                hint="is the stack up (`mailstack status`)? or pass --resolver IP",
            ) from None
        validated = bool(answer.response.flags & dns.flags.AD)
        if answer.rrset is None:
            return [], validated
        if rtype == "TXT":
            return [
                b"".join(rdata.strings).decode("utf-8", errors="replace") for rdata in answer.rrset
            ], validated
        return sorted(rdata.to_text() for rdata in answer.rrset), validated

    def addresses(self, name: str) -> list[str]:
        return self.records(name, "A") + self.records(name, "AAAA")

    def ptr(self, address: str) -> list[str]:
        return [
            name.rstrip(".").lower()
            for name in self.records(dns.reversename.from_address(address).to_text(), "PTR")
        ]


# Fetches a URL over HTTPS from a given address: (status, content type, body).
PolicyFetch = Callable[[str, str], tuple[int, str, str]]


def https_fetcher(cafile: Path | None) -> PolicyFetch:
    """GET https://HOST/.well-known/mta-sts.txt from ADDRESS:443 with SNI HOST, verified
    against cafile (the stack's CA) or the system's trusted CAs."""

    def fetch(host: str, address: str) -> tuple[int, str, str]:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with (
            socket.create_connection((address, 443), timeout=HTTPS_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(
                f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n"
                "User-Agent: mailstack-check-dns\r\nConnection: close\r\n\r\n".encode("ascii")
            )
            response = http.client.HTTPResponse(tls)
            response.begin()
            body = response.read(MAX_POLICY_BYTES).decode("utf-8", errors="replace")
            return response.status, response.getheader("Content-Type") or "", body

    return fetch


def check_dns(
    config: Config,
    domains: Sequence[str],
    keys: Sequence[DkimKey],
    lookup: Lookup,
    fetch: PolicyFetch,
    *,
    own_ca: bool,
    dane: DaneKeys | None = None,
) -> DnsCheckReport:
    """Every expected record of the mail server and the given domains, judged."""
    rows = _host_rows(config, lookup, dane)
    for domain in domains:
        rows += domain_rows(config, domain, keys, lookup, fetch, own_ca=own_ca)
    return DnsCheckReport(lookup.nameserver, tuple(rows))


def domain_rows(
    config: Config,
    domain: str,
    keys: Sequence[DkimKey],
    lookup: Lookup,
    fetch: PolicyFetch,
    *,
    own_ca: bool,
) -> list[CheckRow]:
    """One mail domain's expected records judged, then its MTA-STS policy fetched."""
    rows = [
        _judge(config, domain, record, lookup) for record in domain_records(config, domain, keys)
    ]
    return rows + _mta_sts_policy_rows(config, domain, lookup, fetch, own_ca=own_ca)


# --- the mail server's own name -------------------------------------------------------------------


def _host_rows(config: Config, lookup: Lookup, dane: DaneKeys | None) -> list[CheckRow]:
    hostname = config.hostname
    rows = [_judge(config, hostname, record, lookup) for record in host_records(config)]
    rows = [row for row in rows if row.kind != "PTR"]
    if dane is not None:
        rows.append(tlsa_row(config.hostname, lookup, dane))
    known = public_ipv4(config)
    addresses = [known] if known else lookup.records(hostname, "A")
    if config.dns.public_ipv6:
        addresses.append(config.dns.public_ipv6)
    if not addresses:
        rows.append(
            CheckRow(
                hostname,
                "PTR",
                "reverse DNS",
                f"PTR of the public address = {hostname}",
                "no address to check",
                FAIL,
                f"publish the A record of {hostname} (or set dns.public_ipv4)",
            )
        )
    forward = set(lookup.addresses(hostname))
    for address in addresses:
        names = lookup.ptr(address)
        confirmed = hostname in names and address in forward
        found = ", ".join(names) or "no PTR"
        if hostname in names and address not in forward:
            found += f" (but {hostname} does not resolve to {address})"
        rows.append(
            CheckRow(
                hostname,
                "PTR",
                dns.reversename.from_address(address).to_text().rstrip("."),
                f"{hostname} (forward-confirmed)",
                found,
                PASS if confirmed else FAIL,
                ""
                if confirmed
                else f"ask the provider of {address} to set its PTR (reverse DNS) to {hostname}",
            )
        )
    return rows


def tlsa_answer(lookup: Lookup, hostname: str) -> TlsaAnswer:
    """Port 25's TLSA records, whether DNSSEC proved them, and whether it proves the
    hostname's own address (the zone is signed)."""
    published, validated = lookup.validated_records(tlsa_name(hostname), "TLSA")
    return published, validated, lookup.validated_records(hostname, "A")[1]


def tlsa_row(hostname: str, lookup: Lookup, keys: DaneKeys) -> CheckRow:
    """DANE's records for port 25 against the served key and the next one."""
    published, validated, zone_signed = tlsa_answer(lookup, hostname)
    judged = dane.judge(
        published, validated=validated, zone_signed=zone_signed, keys=keys, hostname=hostname
    )
    return CheckRow(
        hostname,
        "TLSA",
        tlsa_name(hostname),
        " + ".join(keys.records),
        judged.found,
        judged.verdict,
        judged.fix,
    )


# --- one expected record --------------------------------------------------------------------------


def _judge(config: Config, group: str, record: Record, lookup: Lookup) -> CheckRow:  # noqa: PLR0911, PLR0912  # one case per kind
    def row(
        expected: str, found: str, ok: bool, fix: str, verdict: Verdict | None = None
    ) -> CheckRow:
        return CheckRow(
            group,
            record.kind,
            record.name,
            expected,
            found,
            verdict or (PASS if ok else FAIL),
            "" if ok else fix,
        )

    publish = f"publish: {record.zone_line}"
    if record.type in ("A", "AAAA"):
        found = lookup.records(record.name, record.type)
        if record.placeholder:
            ok = bool(found)
            hint = "set dns.public_ipv4/6 in mailstack.yaml and publish the address record"
            return row("an address of this host", ", ".join(found) or "none", ok, hint)
        return row(record.data, ", ".join(found) or "none", record.data in found, publish)
    if record.type == "MX":
        found = lookup.records(record.name, "MX")
        targets = {answer.split()[-1].rstrip(".").lower() for answer in found}
        return row(record.data, "; ".join(found) or "none", config.hostname in targets, publish)
    if record.type == "SRV":
        found = lookup.records(record.name, "SRV")
        wanted = record.data.split()
        matching = [
            answer
            for answer in found
            if answer.split()[2:] == [wanted[2], wanted[3]]
            or answer.split()[2:] == [wanted[2], wanted[3].rstrip(".")]
        ]
        return row(record.data, "; ".join(found) or "none", bool(matching), publish)
    if record.type == "CNAME":
        return _judge_alias(config, record, lookup, row, publish)
    if record.kind == "SPF":
        return _judge_spf(record, lookup, row, publish)
    if record.kind == "DKIM":
        return _judge_dkim(record, lookup, row, publish)
    if record.kind == "DMARC":
        return _judge_dmarc(record, lookup, row, publish)
    if record.kind == "MTA-STS":
        found = lookup.records(record.name, "TXT")
        sts = [text for text in found if text.startswith("v=STSv1")]
        expected = record.text
        if len(sts) != 1:
            shown = "none" if not sts else f"{len(sts)} records (senders ignore them all)"
            return row(expected, shown, False, publish)
        try:
            policy_id = parse_mta_sts_txt(sts[0])
        except PolicySyntaxError as e:
            return row(expected, f"{sts[0]} (it {e})", False, publish)
        wanted_id = parse_mta_sts_txt(expected)
        stale = "" if policy_id == wanted_id else " (an old id: senders keep the old policy)"
        return row(expected, sts[0] + stale, policy_id == wanted_id, publish)
    if record.kind == "TLS-RPT":
        found = [text for text in lookup.records(record.name, "TXT") if text.startswith("v=TLSRPT")]
        if len(found) != 1:
            return row(
                record.text, "none" if not found else f"{len(found)} records", False, publish
            )
        try:
            destinations = parse_tls_rpt(found[0])
        except PolicySyntaxError as e:
            return row(record.text, f"{found[0]} (it {e})", False, publish)
        return row(
            record.text, found[0], set(parse_tls_rpt(record.text)) <= set(destinations), publish
        )
    if record.type == "TXT":  # any other text record: one of the name's texts is it
        texts = lookup.records(record.name, "TXT")
        return row(record.text, "; ".join(texts) or "none", record.text in texts, publish)
    found = lookup.records(record.name, record.type)
    return row(record.data, "; ".join(found) or "none", record.data in found, publish)


Row = Callable[..., CheckRow]


def _judge_alias(
    config: Config, record: Record, lookup: Lookup, row: Row, publish: str
) -> CheckRow:
    target = [name.rstrip(".").lower() for name in lookup.records(record.name, "CNAME")]
    if config.hostname in target:
        return row(record.data, f"CNAME {target[0]}.", True, publish)
    # An address record is as good as the alias when it leads to the same host.
    addresses = set(lookup.addresses(record.name))
    host = set(lookup.addresses(config.hostname))
    found = ", ".join(sorted(addresses)) or "none"
    return row(record.data, found, bool(addresses) and addresses <= host, publish)


def _judge_spf(record: Record, lookup: Lookup, row: Row, publish: str) -> CheckRow:
    expected = record.text
    found = [text for text in lookup.records(record.name, "TXT") if is_spf(text)]
    if not found:
        return row(expected, "none", False, publish)
    if len(found) > 1:
        return row(expected, " | ".join(found), False, "publish one SPF record only: " + publish)
    text = found[0]
    try:
        parsed = parse_spf(text)
        lookups = count_spf_lookups(parsed, lambda domain: _spf_of(lookup, domain))
    except PolicySyntaxError as e:
        return row(expected, f"{text} (it {e})", False, publish)
    if lookups > SPF_LOOKUP_LIMIT:
        return row(
            expected,
            f"{text} ({lookups} DNS lookup{'' if lookups == 1 else 's'})",
            False,
            f"receivers fail it with a permerror: at most {SPF_LOOKUP_LIMIT} DNS lookups "
            "(include, a, mx, ptr, exists, redirect); flatten it, then " + publish,
        )
    same = " ".join(text.lower().split()) == " ".join(expected.lower().split())
    return row(
        expected,
        f"{text} ({lookups} DNS lookup{'' if lookups == 1 else 's'})",
        same,
        publish + " (or set dns.spf in mailstack.yaml to the record you want)",
    )


def _spf_of(lookup: Lookup, domain: str) -> str | None:
    found = [text for text in lookup.records(domain, "TXT") if is_spf(text)]
    return found[0] if len(found) == 1 else None


def _judge_dkim(record: Record, lookup: Lookup, row: Row, publish: str) -> CheckRow:
    expected = record.text
    short = f"{expected[:40]}…"
    found = lookup.records(record.name, "TXT")
    if not found:
        return row(short, "none", False, publish)
    if len(found) > 1:
        return row(short, f"{len(found)} TXT records", False, "publish one record: " + publish)
    tags = {
        part.split("=", 1)[0].strip(): part.split("=", 1)[1].strip().replace(" ", "")
        for part in found[0].split(";")
        if "=" in part
    }
    wanted = {
        part.split("=", 1)[0].strip(): part.split("=", 1)[1].strip() for part in expected.split(";")
    }
    shown = f"{found[0][:40]}…"
    if tags.get("p") != wanted["p"]:
        what = "no key (p=)" if not tags.get("p") else "a different key"
        return row(short, f"{shown} ({what})", False, publish)
    if tags.get("v", "DKIM1") != "DKIM1" or tags.get("k", "rsa") != wanted["k"]:
        return row(short, f"{shown} (wrong v= or k=)", False, publish)
    return row(short, f"{shown} (the key in dkim/)", True, publish)


def _judge_dmarc(record: Record, lookup: Lookup, row: Row, publish: str) -> CheckRow:
    expected = record.text
    found = [text for text in lookup.records(record.name, "TXT") if text.startswith("v=DMARC1")]
    if not found:
        return row(expected, "none", False, publish)
    if len(found) > 1:
        return row(expected, " | ".join(found), False, "publish one DMARC record: " + publish)
    if expected == "v=DMARC1":  # the report authorisation of another domain
        return row(expected, found[0], True, publish)
    try:
        published = parse_dmarc(found[0])
    except PolicySyntaxError as e:
        return row(expected, f"{found[0]} (it {e})", False, publish)
    wanted = parse_dmarc(expected)
    same = published.policy == wanted.policy and set(wanted.rua) <= set(published.rua)
    return row(
        expected,
        found[0],
        same,
        publish + " (or set dns.dmarc_policy/dmarc_rua in mailstack.yaml)",
    )


# --- the MTA-STS policy, fetched ------------------------------------------------------------------


def _mta_sts_policy_rows(  # noqa: PLR0911  # one verdict per way a fetch fails
    config: Config, domain: str, lookup: Lookup, fetch: PolicyFetch, *, own_ca: bool
) -> list[CheckRow]:
    host = f"{MTA_STS_HOST}.{domain}"
    url = f"https://{host}/.well-known/mta-sts.txt"
    wanted = mta_sts_policy(config)
    expected = f"mode {wanted.mode}, mx {', '.join(wanted.mx)}, max_age {wanted.max_age}"

    def row(found: str, ok: bool, fix: str) -> list[CheckRow]:
        return [
            CheckRow(
                domain,
                "MTA-STS policy",
                url,
                expected,
                found,
                PASS if ok else FAIL,
                "" if ok else fix,
            )
        ]

    addresses = lookup.records(host, "A") + lookup.records(host, "AAAA")
    if not addresses:
        return row("no address for " + host, False, f"publish the A record of {host}")
    try:
        status, content_type, body = fetch(host, addresses[0])
    except ssl.SSLCertVerificationError as e:
        return row(
            f"certificate not trusted ({e.verify_message})",
            False,
            f"the certificate of the front must cover {host} and be trusted",
        )
    except (OSError, http.client.HTTPException) as e:
        return row(
            f"HTTPS to {addresses[0]}:443 failed ({e})",
            False,
            "is the front up and port 443 reachable?",
        )
    if status != 200:
        return row(
            f"HTTP {status}", False, "the front must answer 200 (senders follow no redirects)"
        )
    if not content_type.startswith("text/plain"):
        return row(f"Content-Type {content_type}", False, "the policy must be served as text/plain")
    try:
        policy = parse_mta_sts_policy(body)
    except PolicySyntaxError as e:
        return row(f"a broken policy ({e})", False, "serve the policy of `mailstack render`")
    found = f"mode {policy.mode}, mx {', '.join(policy.mx)}, max_age {policy.max_age}"
    mx_hosts = [answer.split()[-1].rstrip(".").lower() for answer in lookup.records(domain, "MX")]
    uncovered = [mx for mx in mx_hosts if not policy.covers(mx)]
    if uncovered:
        return row(
            found + f" (does not cover the MX {', '.join(uncovered)})",
            False,
            "every MX host must match an mx line of the policy",
        )
    if (policy.mode, policy.mx, policy.max_age) != (wanted.mode, wanted.mx, wanted.max_age):
        return row(
            found,
            False,
            "the front serves another policy: run `mailstack render` and restart front",
        )
    rows = row(found, True, "")
    if own_ca and config.mode != "sandbox":
        rows.append(
            CheckRow(
                domain,
                "MTA-STS policy",
                url,
                "a publicly trusted certificate",
                "the stack's own CA (tls.mode selfsigned)",
                WARN,
                "senders cannot verify it, so they ignore the policy (with mode enforce they "
                "may not deliver at all): use tls.mode acme (or manual with a public certificate)",
            )
        )
    return rows


# --- on a stack directory -------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordsResult:
    records: RecordSet
    note: str  # why the list may be incomplete; empty when it is not


def mail_domains(stack: Stack, requested: str | None) -> tuple[list[str], str]:
    """The mail domains to look at: the directory's (the stack running), else mailstack.yaml's."""
    config = stack.config
    note = ""
    try:
        running = stack.compose.running_services()
    except MailstackError:
        running = set()
    if "db" in running:
        known = [domain.name for domain in directory.list_domains(stack.compose) if domain.active]
    else:
        known = [config.domain]
        note = (
            "the stack is not running: only the domain of mailstack.yaml is listed "
            "(domains added with `mailstack domain add` are read from the running stack)"
        )
    if requested is not None:
        if requested not in known and requested != config.domain:
            raise UsageError(
                f"DOMAIN: {requested!r} is not a mail domain of this stack "
                f"(mail domains: {', '.join(known)})",
                hint=f"add it first: mailstack domain add {requested}",
            )
        return [requested], ""
    # The first domain of mailstack.yaml first, the others in the directory's order.
    return [config.domain, *(name for name in known if name != config.domain)], note


def stack_records(stack: Stack, requested: str | None) -> RecordsResult:
    domains, note = mail_domains(stack, requested)
    root = stack.dir.root
    keys = dkim.published_keys(root, ed25519_on=stack.config.policy.dkim.ed25519)
    return RecordsResult(record_set(stack.config, domains, keys, dane.load_keys(root)), note)


def check_stack(stack: Stack, requested: str | None, resolver: str | None) -> DnsCheckReport:
    """`check dns`: the stack's resolver (its cache flushed for these names) unless given one."""
    domains, _ = mail_domains(stack, requested)
    config = stack.config
    lookup = stack_lookup(stack, resolver, [config.hostname, *domains])
    own_ca = config.tls.mode == "selfsigned"
    cafile = stack.dir.root / "tls" / "ca.pem" if own_ca else None
    return check_dns(
        config,
        domains,
        dkim.published_keys(stack.dir.root, ed25519_on=config.policy.dkim.ed25519),
        lookup,
        https_fetcher(cafile),
        own_ca=own_ca,
        dane=dane.load_keys(stack.dir.root),
    )


def stack_lookup(stack: Stack, resolver: str | None, names: Sequence[str]) -> Lookup:
    """Questions to the given resolver; without one, to the stack's own, its cache flushed
    for these names (and the names below them) first."""
    if resolver is not None:
        return Lookup(resolver)
    flush_cache(stack, names)
    return Lookup(stack_resolver_address(stack.config))


def flush_cache(stack: Stack, names: Sequence[str]) -> None:
    """Forget what the stack's Unbound cached for these names: the check sees DNS as it is now."""
    for name in names:
        stack.compose.run(
            [
                "exec",
                "-T",
                "resolver",
                "unbound-control",
                "-c",
                "/etc/mailstack/resolver/unbound.conf",
                "flush_zone",
                name,
            ],
            check=False,
            timeout=60,
        )
