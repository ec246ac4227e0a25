"""The value rules of mailstack.yaml: pure checks of one value each, and the annotated types
the sections are built from.

A check returns the value (normalised where it says so) or raises ValueError with the
"allowed" half of the message; config.explain adds the key and the value. No value that
passes can break out of a line of a daemon's configuration.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import unicodedata
import urllib.parse
import zoneinfo
from functools import cache

import idna

MAX_TEXT = 253

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}\Z")
_REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9._-]+)*\Z")
_EXTENSION = re.compile(r"^[a-z0-9]{1,16}\Z")
_BACKUP_URL = re.compile(
    r"^(?P<scheme>sftp|s3|s3\+http)://(?:(?P<user>[a-z_][a-z0-9_.-]{0,31})@)?"
    r"(?P<host>[A-Za-z0-9.-]{1,253}|\[[0-9a-fA-F:]+\])(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[A-Za-z0-9._/~+-]*)$"
)
_ENGINE_URL = re.compile(
    r"^ssh://(?:(?P<user>[a-z_][a-z0-9_.-]{0,31})@)?"
    r"(?P<host>[A-Za-z0-9.-]{1,253}|\[[0-9a-fA-F:]+\])(?::(?P<port>[0-9]{1,5}))?$"
)
_SSH_KEY_TYPES = (
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
)  # fmt: skip
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}\Z")


# --- value checks (pure; raise ValueError with the "allowed" half of the message) ---------


def reject_unsafe_text(value: str, limit: int = MAX_TEXT) -> str:
    """Refuse text that could break out of a config line: controls, newlines, templates."""
    if len(value) > limit:
        raise ValueError(f"is too long ({len(value)} characters; at most {limit})")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError("contains a control character (newline, tab, NUL, …)")
    if "{{" in value or "{%" in value or "${" in value:
        raise ValueError("contains a template sequence ({{, {% or ${)")
    return value


def normalize_domain(value: str) -> str:
    """A DNS name per RFC 1123, IDN accepted and returned as lower-case punycode."""
    reject_unsafe_text(value)
    name = value.strip().rstrip(".")
    if not name or name != value.rstrip("."):
        raise ValueError("is not a domain name (no spaces allowed)")
    try:
        ascii_name = idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError as e:
        raise ValueError(f"is not a valid domain name ({e})") from None
    ascii_name = ascii_name.lower()
    if len(ascii_name) > 253:
        raise ValueError("is not a domain name (longer than 253 characters)")
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise ValueError("is not a fully qualified domain name (needs at least one dot)")
    for label in labels:
        if not _LABEL.match(label):
            raise ValueError(
                "is not a domain name (letters, digits and inner hyphens only, labels 1–63)"
            )
    if labels[-1].isdigit():
        raise ValueError("is not a domain name (the top-level label is numeric)")
    return ascii_name


# Letters of these scripts look alike (Cyrillic U+0430 is "a"); one label mixing them is a lure.
_CONFUSABLE_SCRIPTS = frozenset({"LATIN", "GREEK", "CYRILLIC"})


def mixed_scripts(domain: str) -> list[str]:
    """The look-alike scripts (Latin, Greek, Cyrillic) mixed in one label of a normalised
    domain, e.g. ["Cyrillic", "Latin"]; empty when none is."""
    for label in domain.split("."):
        if not label.startswith("xn--"):
            continue
        try:
            text = idna.decode(label)
        except idna.IDNAError:
            continue  # normalize_domain produced it; nothing to compare then
        scripts = {unicodedata.name(ch, "").split(" ")[0] for ch in text if ch.isalpha()}
        mixed = scripts & _CONFUSABLE_SCRIPTS
        if len(mixed) > 1:
            return sorted(script.capitalize() for script in mixed)
    return []


def normalize_address(value: str) -> str:
    """A mail address local@domain; the domain normalised like any domain name."""
    reject_unsafe_text(value, limit=320)
    local, sep, domain = value.rpartition("@")
    if not sep or not local:
        raise ValueError("is not a mail address (local@domain)")
    if not _LOCAL_PART.match(local) or local.startswith(".") or ".." in local:
        raise ValueError("is not a mail address (unsupported characters in the local part)")
    return f"{local}@{normalize_domain(domain)}"


def check_ip(value: str, version: int) -> str:
    reject_unsafe_text(value, limit=64)
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"is not an IPv{version} address") from None
    if address.version != version:
        raise ValueError(f"is not an IPv{version} address")
    return str(address)


def check_subnet(value: str) -> str:
    reject_unsafe_text(value, limit=64)
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError("is not a network in CIDR form (e.g. 172.30.53.0/24)") from None
    # Some services have fixed addresses up to .81 (render.py); Docker hands out the others
    # from the upper half of the first /24 (ip_range), so the two never meet.
    if network.version != 4 or not network.is_private or network.prefixlen > 24:
        raise ValueError("is not a private IPv4 network of /24 or larger")
    return str(network)


def check_absolute_path(value: str) -> str:
    reject_unsafe_text(value, limit=4096)
    if not value.startswith("/"):
        raise ValueError("is not an absolute path")
    if any(ch in value for ch in "\"'\\;`$"):
        raise ValueError("is not a plain path (quotes, backslashes, ; ` $ are not allowed)")
    return value


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_timezone(value: str) -> str:
    reject_unsafe_text(value, limit=64)
    if value not in _timezones():
        close = difflib.get_close_matches(value, sorted(_timezones()), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"is not a time zone of the tz database{hint}")
    return value


def check_project(value: str) -> str:
    if not _PROJECT.match(value):
        raise ValueError("is not a project name (lower-case letters, digits, - and _; 1–63)")
    return value


def check_feed_url(value: str) -> str:
    reject_unsafe_text(value, limit=500)
    parsed = urllib.parse.urlsplit(value)
    local = parsed.hostname in ("127.0.0.1", "localhost", "::1")
    if not parsed.hostname or not (parsed.scheme == "https" or (parsed.scheme == "http" and local)):
        raise ValueError("is not an https:// URL (http:// only on the loopback address)")
    return value


def check_mirror_url(value: str) -> str:
    """A ClamAV private mirror: http(s)://host[:port][/path]. Plain http is allowed (a mirror on
    the local network commonly is): freshclam verifies each database's digital signature."""
    reject_unsafe_text(value, limit=500)
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("is not an http:// or https:// URL with a host")
    if " " in value or parsed.username or parsed.password or parsed.query or parsed.fragment:
        raise ValueError(
            "has spaces, credentials, a query or a fragment (allowed: scheme, host, port, path)"
        )
    return value


def normalize_extension(value: str) -> str:
    """A file name extension, lower case, without the dot ("EXE" and ".exe" become "exe")."""
    reject_unsafe_text(value, limit=32)
    extension = value.strip().lower().removeprefix(".")
    if not _EXTENSION.match(extension):
        raise ValueError("is not a file extension (letters and digits only, 1–16, e.g. exe)")
    return extension


def check_registry(value: str) -> str:
    reject_unsafe_text(value)
    if not _REGISTRY.match(value):
        raise ValueError("is not a registry (host[:port][/path], lower case)")
    return value


def check_node_name(value: str) -> str:
    """A cluster node's name: its hostname as Swarm shows it (one DNS label)."""
    if not _LABEL.match(value):
        raise ValueError("is not a node name (its hostname: a-z, 0-9 and -, 1-63, one label)")
    return value


def check_engine_url(value: str) -> str:
    """How mailstack reaches a node's Docker engine: ssh://[user@]host[:port], the docker
    CLI's own SSH transport, or unix:///path when mailstack runs on that node (the engine's
    API never on the network)."""
    reject_unsafe_text(value, limit=300)
    if value.startswith("unix://"):
        check_absolute_path(value.removeprefix("unix://"))
        return value
    match = _ENGINE_URL.match(value)
    if not match:
        raise ValueError("is not an engine address (ssh://[user@]host[:port] or unix:///path)")
    _check_host_and_port(match, "an engine address")
    return value


def check_backup_target(value: str) -> str:
    """A local absolute path, sftp://user@host[:port]/path or s3[+http]://host[:port]/bucket."""
    reject_unsafe_text(value, limit=1024)
    if value.startswith("/"):
        if ":" in value:  # Docker's volume syntax (-v SOURCE:TARGET:MODE) would split it
            raise ValueError("is not a usable path for a backup target: ':' is not allowed")
        return check_absolute_path(value)
    match = _BACKUP_URL.match(value)
    if not match:
        raise ValueError(
            "is not a backup target (an absolute path, sftp://user@host[:port]/path or "
            "s3://host[:port]/bucket[/prefix])"
        )
    _check_host_and_port(match, "a backup target")
    if match["scheme"] == "sftp" and not match["user"]:
        raise ValueError("is not an sftp target (needs a user: sftp://user@host/path)")
    if match["scheme"] != "sftp" and match["user"]:
        raise ValueError("is not an s3 target (no user@ part; the key id is s3_access_key_id)")
    return value


def _check_host_and_port(match: re.Match[str], what: str) -> None:
    """A URL's host (a name or an address, IPv6 in brackets) and optional port."""
    host = match["host"].removeprefix("[").removesuffix("]")
    if not _is_ip(host):
        try:
            normalize_domain(host)
        except ValueError:
            raise ValueError(f"is not {what} ({host!r} is not a host name)") from None
    if match["port"] and not 1 <= int(match["port"]) <= 65535:
        raise ValueError(f"is not {what} (the port is not 1–65535)")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def check_ssh_host_key(value: str) -> str:
    reject_unsafe_text(value, limit=16384)
    parts = value.split()
    if len(parts) < 2 or parts[0] not in _SSH_KEY_TYPES or not _BASE64.match(parts[1]):
        raise ValueError(
            'is not an SSH public host key ("ssh-ed25519 AAAA…"; types: '
            + ", ".join(_SSH_KEY_TYPES)
            + ")"
        )
    return f"{parts[0]} {parts[1]}"


def check_daily_time(value: str) -> str:
    if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", value):
        raise ValueError("is not a time of day (HH:MM, 24-hour, e.g. 03:30)")
    return value


def check_daily_time_or_off(value: str) -> str:
    if value != "off" and not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", value):
        raise ValueError('is neither "off" nor a time of day (HH:MM, 24-hour, e.g. 07:00)')
    return value


def check_window(value: str) -> str:
    start, dash, end = value.partition("-")
    if not dash:
        raise ValueError("is not a time window (HH:MM-HH:MM, 24-hour, e.g. 04:00-06:00)")
    check_daily_time(start)
    check_daily_time(end)
    if start == end:
        raise ValueError("is an empty window (start and end are the same time)")
    return value
