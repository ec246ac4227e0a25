"""Sizes like 2G or 500M, as operators write them."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^(\d{1,9})\s*([KMGT]?)i?B?$", re.IGNORECASE)
_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """Bytes from '2G', '500M', '1024', '0' (binary units)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError("is not a size (a number with an optional K, M, G or T, e.g. 2G)")
    return int(match.group(1)) * _FACTORS[match.group(2).upper()]


def format_size(value: int) -> str:
    for unit in ("T", "G", "M", "K"):
        factor = _FACTORS[unit]
        if value >= factor and value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)
