"""The syntax of the TXT policies a mail domain publishes (pure: no DNS, no I/O).

SPF (RFC 7208), DMARC (RFC 7489), MTA-STS (RFC 8461) and TLS-RPT (RFC 8460). Each parser
returns the parsed value or raises PolicySyntaxError with one line saying what is wrong;
stack/config_policy.py uses them to validate mailstack.yaml, dnscheck.py to judge what DNS serves.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4: more DNS-querying terms is a permerror
MTA_STS_MIN_MAX_AGE = 86400  # RFC 8461 3.2 allows less; senders then re-fetch all the time
MTA_STS_MAX_MAX_AGE = 31557600
MTA_STS_MODES = ("enforce", "testing", "none")
DMARC_POLICIES = ("none", "quarantine", "reject")

_SPF_QUALIFIERS = "+-~?"
_SPF_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
# Terms that cost one DNS lookup each (RFC 7208 4.6.4); "all", ip4 and ip6 cost none.
_SPF_LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})
_SPF_DOMAIN_SPEC = re.compile(r"^[A-Za-z0-9%{}._+/=-]{1,253}\Z")
_SPF_CIDR = re.compile(r"^(?:/(\d{1,2}))?(?://(\d{1,3}))?\Z")
_DMARC_TAG = re.compile(r"^[a-z]{1,16}\Z")
_MAILTO = re.compile(r"^mailto:[^@\s,;!]+@[A-Za-z0-9.-]+(?:![0-9]+[kmgt]?)?$", re.IGNORECASE)
_HTTPS_URI = re.compile(r"^https://[A-Za-z0-9.-]+(?::\d+)?(?:/[^\s;,]*)?\Z")
_STS_ID = re.compile(r"^[A-Za-z0-9]{1,32}\Z")
_STS_MX = re.compile(r"^(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}\Z")


class PolicySyntaxError(ValueError):
    """A published (or configured) policy record that does not parse; the text says why."""


# --- SPF -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpfTerm:
    qualifier: str  # "+", "-", "~", "?" ("" for modifiers)
    name: str  # mechanism or modifier name, lower case
    value: str  # domain-spec, address or "" (without the ":" or "=")

    @property
    def costs_lookup(self) -> bool:
        return self.name in _SPF_LOOKUP_TERMS


@dataclass(frozen=True)
class SpfRecord:
    terms: tuple[SpfTerm, ...]

    @property
    def direct_lookups(self) -> int:
        return sum(1 for term in self.terms if term.costs_lookup)

    @property
    def followed(self) -> tuple[str, ...]:
        """Domains whose own SPF record is evaluated too: include targets and the redirect."""
        return tuple(
            term.value
            for term in self.terms
            if term.name in ("include", "redirect") and "%" not in term.value
        )


def is_spf(text: str) -> bool:
    return text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")


def parse_spf(text: str) -> SpfRecord:
    """Parse an SPF record (RFC 7208 section 12 grammar, macros accepted as opaque text)."""
    if not is_spf(text):
        raise PolicySyntaxError("does not start with 'v=spf1'")
    if len(text) > 450:
        raise PolicySyntaxError(f"is {len(text)} characters long (keep SPF under 450)")
    terms: list[SpfTerm] = []
    modifiers: set[str] = set()
    for word in text.split()[1:]:
        term = _spf_term(word)
        if not term.qualifier:
            if term.name in modifiers and term.name in ("redirect", "exp"):
                raise PolicySyntaxError(f"has the modifier {term.name}= twice")
            modifiers.add(term.name)
        terms.append(term)
    return SpfRecord(tuple(terms))


def _spf_term(word: str) -> SpfTerm:  # noqa: PLR0912  # one check per kind of term
    if any(ord(ch) < 0x21 or ord(ch) > 0x7E for ch in word):
        raise PolicySyntaxError(f"term {word[:40]!r} has a character SPF does not allow")
    modifier = re.match(r"^([A-Za-z][A-Za-z0-9._-]*)=(.*)$", word)
    if modifier:
        name, value = modifier.group(1).lower(), modifier.group(2)
        if name in ("redirect", "exp") and not _SPF_DOMAIN_SPEC.match(value):
            raise PolicySyntaxError(f"{name}= needs a domain, not {value[:40]!r}")
        return SpfTerm("", name, value)
    qualifier = word[0] if word[0] in _SPF_QUALIFIERS else "+"
    body = word[1:] if word[0] in _SPF_QUALIFIERS else word
    name, sep, value = body.partition(":")
    name = name.lower()
    if "/" in name and name.split("/", 1)[0] in ("a", "mx"):
        name, cidr = name.split("/", 1)
        value, sep = "", ""
        _spf_cidr("/" + cidr, word)
    if name not in _SPF_MECHANISMS:
        raise PolicySyntaxError(f"has an unknown mechanism {word[:40]!r}")
    if name == "all":
        if sep:
            raise PolicySyntaxError("'all' takes no value")
        return SpfTerm(qualifier, name, "")
    if name in ("ip4", "ip6"):
        _spf_network(name, value, word)
        return SpfTerm(qualifier, name, value)
    if name in ("include", "exists") and not value:
        raise PolicySyntaxError(f"{name}: needs a domain ({word[:40]!r})")
    if sep and value:
        domain, slash, cidr = value.partition("/")
        if not _SPF_DOMAIN_SPEC.match(domain):
            raise PolicySyntaxError(f"{word[:40]!r} does not name a domain")
        if slash:
            _spf_cidr("/" + cidr, word)
        value = domain
    elif sep:
        raise PolicySyntaxError(f"{word[:40]!r} has an empty domain after ':'")
    return SpfTerm(qualifier, name, value)


def _spf_cidr(cidr: str, word: str) -> None:
    match = _SPF_CIDR.match(cidr)
    if not match or (match.group(1) and int(match.group(1)) > 32):
        raise PolicySyntaxError(f"{word[:40]!r} has an invalid prefix length")
    if match.group(2) and int(match.group(2)) > 128:
        raise PolicySyntaxError(f"{word[:40]!r} has an invalid IPv6 prefix length")


def _spf_network(name: str, value: str, word: str) -> None:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise PolicySyntaxError(f"{word[:40]!r} is not an {name} network") from None
    if network.version != int(name[-1]):
        raise PolicySyntaxError(f"{word[:40]!r} is not an {name} network")


# Looks up a domain's SPF record: its text, or None when the domain publishes none.
SpfFetch = Callable[[str], "str | None"]


def count_spf_lookups(record: SpfRecord, fetch: SpfFetch, limit: int = SPF_LOOKUP_LIMIT) -> int:
    """DNS-querying terms of a record and of every record it includes or redirects to.

    Stops counting once past the limit (a loop or a deep tree is a permerror either way).
    A followed domain that publishes no SPF record raises PolicySyntaxError (a permerror).
    """
    total = 0
    pending = [record]
    while pending and total <= limit:
        current = pending.pop()
        total += current.direct_lookups
        for domain in current.followed:
            if total > limit:
                break
            text = fetch(domain)
            if text is None:
                raise PolicySyntaxError(f"includes {domain}, which publishes no SPF record")
            pending.append(parse_spf(text))
    return total


# --- DMARC -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DmarcRecord:
    policy: str
    subdomain_policy: str | None
    rua: tuple[str, ...]  # addresses, without "mailto:" and size limits
    tags: tuple[tuple[str, str], ...]


def parse_dmarc(text: str) -> DmarcRecord:  # noqa: PLR0912  # one check per tag
    """Parse a DMARC record (RFC 7489 6.3/6.4): v=DMARC1 first, p= required, known tags."""
    parts = [part.strip() for part in text.split(";")]
    if parts and parts[-1] == "":
        parts.pop()
    tags: list[tuple[str, str]] = []
    for part in parts:
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _DMARC_TAG.match(name):
            raise PolicySyntaxError(f"{part[:40]!r} is not a tag=value pair")
        tags.append((name, value))
    if not tags or tags[0] != ("v", "DMARC1"):
        raise PolicySyntaxError("does not start with 'v=DMARC1'")
    values = dict(tags)
    if len(values) != len(tags):
        raise PolicySyntaxError("repeats a tag")
    if "p" not in values:
        raise PolicySyntaxError("has no p= tag (the policy is required)")
    for tag in ("p", "sp"):
        if tag in values and values[tag] not in DMARC_POLICIES:
            raise PolicySyntaxError(f"{tag}={values[tag][:20]} is not none, quarantine or reject")
    for tag in ("adkim", "aspf"):
        if tag in values and values[tag] not in ("r", "s"):
            raise PolicySyntaxError(f"{tag}={values[tag][:20]} is not r or s")
    if "pct" in values and not (values["pct"].isdigit() and 0 <= int(values["pct"]) <= 100):
        raise PolicySyntaxError(f"pct={values['pct'][:20]} is not a number from 0 to 100")
    if "ri" in values and not values["ri"].isdigit():
        raise PolicySyntaxError(f"ri={values['ri'][:20]} is not a number of seconds")
    if "fo" in values and not re.match(r"^[01ds](?::[01ds])*$", values["fo"]):
        raise PolicySyntaxError(f"fo={values['fo'][:20]} is not a list of 0, 1, d, s")
    rua: list[str] = []
    for tag in ("rua", "ruf"):
        for uri in filter(None, (u.strip() for u in values.get(tag, "").split(","))):
            if not _MAILTO.match(uri):
                raise PolicySyntaxError(f"{tag}: {uri[:60]!r} is not a mailto: address")
            if tag == "rua":
                rua.append(uri[len("mailto:") :].split("!", 1)[0].lower())
    return DmarcRecord(values["p"], values.get("sp"), tuple(rua), tuple(tags))


def dmarc_record(policy: str, rua: str | None) -> str:
    text = f"v=DMARC1; p={policy}"
    return f"{text}; rua=mailto:{rua}" if rua else text


# --- MTA-STS and TLS-RPT ------------------------------------------------------------------


@dataclass(frozen=True)
class MtaStsPolicy:
    mode: str
    mx: tuple[str, ...]
    max_age: int

    @property
    def lines(self) -> tuple[str, ...]:
        return (
            "version: STSv1",
            f"mode: {self.mode}",
            *(f"mx: {pattern}" for pattern in self.mx),
            f"max_age: {self.max_age}",
        )

    @property
    def text(self) -> str:
        """The policy file as served (RFC 8461 3.2: CRLF line endings)."""
        return "".join(f"{line}\r\n" for line in self.lines)

    @property
    def policy_id(self) -> str:
        """The _mta-sts TXT id: changes whenever the policy text changes."""
        return hashlib.sha256(self.text.encode("ascii")).hexdigest()[:20]

    def covers(self, host: str) -> bool:
        """Whether an MX host name matches one of the policy's mx patterns (RFC 8461 4.1)."""
        host = host.rstrip(".").lower()
        for pattern in self.mx:
            if pattern.startswith("*."):
                head, _, tail = host.partition(".")
                if head and tail == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def parse_mta_sts_policy(text: str) -> MtaStsPolicy:
    """Parse a fetched policy file; LF line endings are accepted as senders do."""
    fields: dict[str, list[str]] = {}
    for raw in text.replace("\r\n", "\n").split("\n"):
        if not raw.strip():
            continue
        key, sep, value = raw.partition(":")
        if not sep:
            raise PolicySyntaxError(f"line {raw[:40]!r} is not 'key: value'")
        fields.setdefault(key.strip(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicySyntaxError("has no 'version: STSv1' line")
    mode = (fields.get("mode") or [""])[0]
    if mode not in MTA_STS_MODES:
        raise PolicySyntaxError(f"mode {mode[:20]!r} is not enforce, testing or none")
    max_age_text = (fields.get("max_age") or [""])[0]
    if not max_age_text.isdigit() or int(max_age_text) > MTA_STS_MAX_MAX_AGE:
        raise PolicySyntaxError(f"max_age {max_age_text[:20]!r} is not 0 to {MTA_STS_MAX_MAX_AGE}")
    mx = tuple(value.lower() for value in fields.get("mx", []))
    for pattern in mx:
        if not _STS_MX.match(pattern):
            raise PolicySyntaxError(f"mx {pattern[:60]!r} is not a host name pattern")
    if mode != "none" and not mx:
        raise PolicySyntaxError(f"mode {mode} needs at least one mx line")
    return MtaStsPolicy(mode, mx, int(max_age_text))


def parse_mta_sts_txt(text: str) -> str:
    """The id of an _mta-sts TXT record ('v=STSv1; id=...')."""
    tags = _semicolon_tags(text)
    if not tags or tags[0] != ("v", "STSv1"):
        raise PolicySyntaxError("does not start with 'v=STSv1'")
    found = dict(tags)
    if not _STS_ID.match(found.get("id", "")):
        raise PolicySyntaxError("has no id= of 1 to 32 letters and digits")
    return found["id"]


def parse_tls_rpt(text: str) -> tuple[str, ...]:
    """The report addresses (mailto: without the scheme, or https: URIs) of a TLS-RPT record."""
    tags = _semicolon_tags(text)
    if not tags or tags[0] != ("v", "TLSRPTv1"):
        raise PolicySyntaxError("does not start with 'v=TLSRPTv1'")
    found = dict(tags)
    if "rua" not in found:
        raise PolicySyntaxError("has no rua= (where reports go)")
    destinations: list[str] = []
    for uri in filter(None, (u.strip() for u in found["rua"].split(","))):
        if _MAILTO.match(uri):
            destinations.append(uri[len("mailto:") :].split("!", 1)[0].lower())
        elif _HTTPS_URI.match(uri):
            destinations.append(uri)
        else:
            raise PolicySyntaxError(f"rua: {uri[:60]!r} is not a mailto: or https: URI")
    return tuple(destinations)


def _semicolon_tags(text: str) -> list[tuple[str, str]]:
    tags: list[tuple[str, str]] = []
    for part in text.split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise PolicySyntaxError(f"{part.strip()[:40]!r} is not a tag=value pair")
        tags.append((name.strip(), value.strip()))
    return tags
