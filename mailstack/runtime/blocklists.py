"""The server's public addresses against the major DNS blocklists (`check health`, production
mode): the names to ask and the judging of the answers (pure). mailstack.runtime.healthprobes
asks the stack's own resolver (Unbound) and calls these.

A DNSBL is asked for the A record of the address's reversed labels under its zone (IPv4:
its four octets reversed; IPv6: its 32 nibbles reversed, RFC 5782). NXDOMAIN (or no A record)
means not listed; an answer in 127.0.0.0/8 means listed, its last octet saying why. Spamhaus
answers errors about the query itself in 127.255.255.0/24 (a public or open resolver, too many
queries, a wrong zone name): those are not listings and must never be counted as one, so the
whole range is an error for every list. Any other answer (an address outside 127/8: a resolver
that rewrites NXDOMAIN) and SERVFAIL, REFUSED or no answer at all are errors too: the address
could not be checked, which warns, while a listing fails (much of the mail the stack sends is
refused while it lasts).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mailstack.runtime.health import HealthItem
from mailstack.verdict import FAIL, PASS, WARN

NAME = "dns blocklists"


@dataclass(frozen=True)
class Blocklist:
    zone: str
    title: str
    ipv6: bool  # whether the list answers for IPv6 addresses
    codes: Mapping[int, str]  # the last octet of 127.0.0.x: what the listing means


SPAMHAUS_ERRORS = {
    252: "a typing error in the DNSBL name",
    254: "the query came through a public or open resolver",
    255: "too many queries",
}
ZEN_CODES = {2: "SBL", 3: "SBL CSS", 4: "XBL", 9: "SBL DROP", 10: "PBL (ISP)",
             11: "PBL (Spamhaus)", 30: "BCL"}  # fmt: skip
# The combined Spamhaus list (SBL, CSS, XBL, PBL), SpamCop's and Barracuda's reputation list:
# those most receivers ask. SpamCop and Barracuda list IPv4 only.
BLOCKLISTS = (
    Blocklist("zen.spamhaus.org", "Spamhaus ZEN", True, ZEN_CODES),
    Blocklist("bl.spamcop.net", "SpamCop", False, {2: "listed"}),
    Blocklist("b.barracudacentral.org", "Barracuda", False, {2: "poor reputation"}),
)
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_ERRORS = ipaddress.ip_network("127.255.255.0/24")


def query_name(address: str, zone: str) -> str:
    """The name to ask: 192.0.2.1 under zen.spamhaus.org is 1.2.0.192.zen.spamhaus.org; an
    IPv6 address is its 32 nibbles, reversed."""
    pointer = ipaddress.ip_address(address).reverse_pointer  # …in-addr.arpa / …ip6.arpa
    return f"{pointer.rsplit('.', 2)[0]}.{zone}"


def queries(addresses: Sequence[str]) -> tuple[tuple[str, Blocklist, str], ...]:
    """(address, list, name to ask) for each address and each list that covers its family."""
    return tuple(
        (address, blocklist, query_name(address, blocklist.zone))
        for address in addresses
        for blocklist in BLOCKLISTS
        if blocklist.ipv6 or ipaddress.ip_address(address).version == 4
    )


@dataclass(frozen=True)
class Answer:
    rcode: str  # NOERROR, NXDOMAIN, SERVFAIL, REFUSED, …; "" when none came
    addresses: tuple[str, ...] = ()  # the A records of the answer


@dataclass(frozen=True)
class Finding:
    state: str  # "listed", "clean" or "error"
    why: str  # the listing's meaning or the error, "" when clean


def classify(blocklist: Blocklist, answer: Answer) -> Finding:
    """One list's answer about one address."""
    if answer.rcode == "NXDOMAIN" or (answer.rcode == "NOERROR" and not answer.addresses):
        return Finding("clean", "")
    if answer.rcode != "NOERROR":
        return Finding("error", answer.rcode or "no answer")
    listed: list[str] = []
    for text in answer.addresses:
        try:
            code = ipaddress.ip_address(text)
        except ValueError:
            return Finding("error", f"not an address: {text[:60]}")
        if code in _ERRORS:
            meaning = SPAMHAUS_ERRORS.get(int(code) & 0xFF, "an error code, not a listing")
            return Finding("error", f"{text} ({meaning})")
        if code.version != 4 or code not in _LOOPBACK:
            return Finding("error", f"{text} is not a blocklist answer (a rewritten NXDOMAIN?)")
        octet = int(code) & 0xFF
        listed.append(f"{text}: {blocklist.codes.get(octet, 'listed')}")
    return Finding("listed", ", ".join(listed))


def judge(addresses: Sequence[str], answers: Mapping[str, Answer]) -> HealthItem:
    """Every (address, list) pair's answer ({name asked: answer}; a missing one is an error)."""
    if not addresses:
        return HealthItem(
            NAME,
            "",
            WARN,
            "no public address known to check",
            "set dns.public_ipv4 (and dns.public_ipv6) in mailstack.yaml",
        )
    listed: list[str] = []
    errors: list[str] = []
    asked = queries(addresses)
    for address, blocklist, name in asked:
        found = classify(blocklist, answers.get(name, Answer("")))
        if found.state == "listed":
            listed.append(f"{address} on {blocklist.title} ({found.why})")
        elif found.state == "error":
            errors.append(f"{blocklist.zone} for {address}: {found.why}")
    if listed:
        return HealthItem(
            NAME,
            "",
            FAIL,
            "listed: " + "; ".join(listed),
            "find why (an open relay, a stolen password: `mailstack logs postfix`), stop it, "
            "then ask each list for removal",
        )
    if errors:
        return HealthItem(
            NAME,
            "",
            WARN,
            f"{len(errors)} of {len(asked)} lookups gave no verdict: " + "; ".join(errors[:3]),
            "the resolver asks the lists itself: `mailstack logs resolver`; an error code "
            "(127.255.255.x) is the list refusing the query, not a listing",
        )
    titles = ", ".join(blocklist.title for blocklist in BLOCKLISTS)
    return HealthItem(NAME, "", PASS, f"{', '.join(addresses)} on none of {titles}")
