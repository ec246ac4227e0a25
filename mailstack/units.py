"""Sizes like 2G or 500M and durations like 10m or 1h, as operators write them."""

from __future__ import annotations

import re

MAX_QUOTA_BYTES = 2**62  # bigint in PostgreSQL, with room for Dovecot's arithmetic
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


def human_size(value: int) -> str:
    """1536 -> '1.5K' (rounded, for reading; format_size is exact, for writing back)."""
    for unit, factor in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if value >= factor:
            return f"{value / factor:.1f}".removesuffix(".0") + unit
    return f"{value}B"


_DURATION = re.compile(r"^(\d{1,9})\s*([smhd]?)\Z")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds from '90s', '10m', '1h', '2d' or a plain number of seconds."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise ValueError("is not a duration (a number with s, m, h or d, e.g. 10m)")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def format_duration(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        factor = _SECONDS[unit]
        if seconds >= factor and seconds % factor == 0:
            return f"{seconds // factor}{unit}"
    return f"{seconds}s"
