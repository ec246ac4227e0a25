"""Backup targets: the `backup.target` of mailstack.yaml (or `restore --from`) as a restic
repository: a local path, sftp://user@host[:port]/path or s3[+http]://host[:port]/bucket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mailstack.errors import UsageError
from mailstack.stack.config_values import check_backup_target


@dataclass(frozen=True)
class Target:
    """Where the repository is, as given (`location`) and as restic names it (`repository`)."""

    kind: Literal["local", "sftp", "s3"]
    location: str
    repository: str
    host: str = ""
    port: int = 0
    user: str = ""
    path: str = ""

    def __str__(self) -> str:
        return self.location


def parse_target(location: str) -> Target:
    """The target of mailstack.yaml (or `restore --from`) as a restic repository."""
    try:
        check_backup_target(location)
    except ValueError as e:
        raise UsageError(f"target: {location[:120]!r} {e}") from None
    if location.startswith("/"):
        return Target("local", location, "/repo", path=location)
    scheme, rest = location.split("://", 1)
    authority, _, path = rest.partition("/")
    path = "/" + path
    user, _, hostport = authority.rpartition("@")
    host, port = hostport, 0
    if hostport.startswith("["):
        host, _, after = hostport[1:].partition("]")
        port = int(after[1:]) if after.startswith(":") else 0
    elif ":" in hostport:
        host, _, number = hostport.partition(":")
        port = int(number)
    if scheme == "sftp":
        return Target("sftp", location, f"sftp:{user}@{host}:{path}", host, port or 22, user, path)
    protocol = "http" if scheme == "s3+http" else "https"
    endpoint = f"{host}:{port}" if port else host
    if ":" in host:
        endpoint = f"[{host}]:{port}" if port else f"[{host}]"
    return Target("s3", location, f"s3:{protocol}://{endpoint}{path}", host, port, path=path)
