"""Mail addresses and domains as the directory holds them: an address split into its local
part and domain, and a punycode domain shown with its Unicode form."""

from __future__ import annotations

import idna

from mailstack.errors import UsageError


def split_address(address: str) -> tuple[str, str]:
    """'Bob@Example.org' -> ('bob', 'example.org'); refused without '@' and a domain."""
    local_part, separator, domain = address.lower().rpartition("@")
    if not separator or not domain:
        raise UsageError(f"{address!r} is not a mail address (local@domain)")
    return local_part, domain


def domain_display(name: str) -> str:
    """'xn--bcher-kva.example' -> 'xn--bcher-kva.example (bücher.example)'."""
    if "xn--" not in name:
        return name
    try:
        return f"{name} ({idna.decode(name)})"
    except idna.IDNAError:
        return name
