"""The bytes of an aggregate report attachment, unpacked in memory within fixed bounds.

A DMARC or TLS-RPT report comes from anyone who can send mail to the rua address, so its
attachment is hostile until read: gzip and zip are unpacked here in bounded chunks (never
one unbounded `read()`), stopping at a decompressed-size limit and at a compression-ratio
limit, so a zip or gzip bomb costs at most one limit's worth of memory. A zip must hold
exactly one member with a plain file name (no directory part, no '..'): nothing is ever
written to disk. The format is decided by the bytes (gzip and zip magic), never by the
name or media type a stranger declared.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass

from mailstack.errors import MailstackError

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """How much a report may weigh: compressed (as attached), unpacked, and the ratio of the
    two once past `ratio_floor` (small files compress far better than big ones may)."""

    compressed_bytes: int = 10 * 1024 * 1024
    decompressed_bytes: int = 32 * 1024 * 1024
    ratio: int = 100
    ratio_floor: int = 1024 * 1024


DEFAULT_LIMITS = Limits()


class ArchiveRefused(MailstackError):
    """An attachment that is not unpacked: too big, too compressed, or not one plain file."""


def unpack(data: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[str, bytes]:
    """(format, content): 'gzip', 'zip' or 'plain' and the unpacked bytes; ArchiveRefused
    naming the limit or the rule broken."""
    if len(data) > limits.compressed_bytes:
        raise ArchiveRefused(
            f"attachment of {len(data)} bytes is over the {limits.compressed_bytes}-byte limit"
        )
    if data.startswith(GZIP_MAGIC):
        return "gzip", _gunzip(data, limits)
    if data.startswith(ZIP_MAGIC):
        return "zip", _unzip(data, limits)
    if len(data) > limits.decompressed_bytes:
        raise ArchiveRefused(
            f"report of {len(data)} bytes is over the {limits.decompressed_bytes}-byte limit"
        )
    return "plain", data


class _Budget:
    """Counts unpacked bytes against both limits as they come, chunk by chunk."""

    def __init__(self, compressed: int, limits: Limits) -> None:
        self.compressed = max(compressed, 1)
        self.limits = limits
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes, consumed: int | None = None) -> None:
        """One more unpacked chunk; `consumed`: the compressed bytes read so far, where
        known (the ratio is then judged as the bytes come, not only against the whole)."""
        self.size += len(chunk)
        if self.size > self.limits.decompressed_bytes:
            raise ArchiveRefused(
                f"unpacks to more than the {self.limits.decompressed_bytes}-byte limit "
                f"(from {self.compressed} bytes): refused as a decompression bomb"
            )
        read = max(min(consumed or self.compressed, self.compressed), 1)
        if self.size > self.limits.ratio_floor and self.size / read > self.limits.ratio:
            raise ArchiveRefused(
                f"unpacks more than {self.limits.ratio} times its compressed size "
                f"({self.compressed} bytes): refused as a decompression bomb"
            )
        self.parts.append(chunk)

    def content(self) -> bytes:
        return b"".join(self.parts)


def _gunzip(data: bytes, limits: Limits) -> bytes:
    """Every gzip member in turn (a file may hold several), at most CHUNK bytes a step."""
    budget = _Budget(len(data), limits)
    pending = data
    try:
        while pending:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            while not inflater.eof:
                chunk = inflater.decompress(pending, CHUNK)
                pending = inflater.unconsumed_tail
                budget.add(chunk, len(data) - len(pending))
                if not chunk and not pending:
                    raise ArchiveRefused("gzip data ends before its end marker (truncated)")
            pending = inflater.unused_data
            if pending and not pending.startswith(GZIP_MAGIC):
                raise ArchiveRefused("gzip data has bytes after its end that are not gzip")
    except zlib.error as e:
        raise ArchiveRefused(f"gzip data is damaged: {e}") from None
    return budget.content()


def _unzip(data: bytes, limits: Limits) -> bytes:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise ArchiveRefused(f"zip data is damaged: {e}") from None
    if len(members) != 1:
        raise ArchiveRefused(f"zip holds {len(members)} members; a report holds exactly one")
    member = members[0]
    _check_member(member, limits)
    budget = _Budget(len(data), limits)
    try:
        with archive.open(member) as stream:
            while chunk := stream.read(CHUNK):
                budget.add(chunk)
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError, zlib.error) as e:
        raise ArchiveRefused(f"zip member {_shown(member.filename)} is damaged: {e}") from None
    return budget.content()


def _check_member(member: zipfile.ZipInfo, limits: Limits) -> None:
    name = member.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or len(parts) > 1 or ".." in parts or ":" in name:
        raise ArchiveRefused(
            f"zip member {_shown(name)} has a directory part or '..'; a report is one plain file"
        )
    if member.flag_bits & 0x1:
        raise ArchiveRefused(f"zip member {_shown(name)} is encrypted")
    if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArchiveRefused(
            f"zip member {_shown(name)} uses compression method {member.compress_type}; "
            "only stored and deflate are read"
        )
    if member.file_size > limits.decompressed_bytes:
        raise ArchiveRefused(
            f"zip member {_shown(name)} declares {member.file_size} bytes, over the "
            f"{limits.decompressed_bytes}-byte limit: refused as a decompression bomb"
        )


def _shown(name: str) -> str:
    printable = "".join(c if c.isprintable() else "?" for c in name)
    return repr(printable[:80])
