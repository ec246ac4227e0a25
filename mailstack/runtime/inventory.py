"""`mailstack version`: what runs here, to grep for an advisory's package.

mailstack's version, the Compose and engine versions, and for a stack every image it records
(.env) with its tag and package set (the image's label: nothing is started).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mailstack import __version__
from mailstack.adapters import process
from mailstack.adapters.compose import compose_command
from mailstack.adapters.docker import DOCKER
from mailstack.errors import MailstackError
from mailstack.images import builder, imagerefs


@dataclass(frozen=True)
class ImageInventory:
    image: str
    reference: str
    present: bool
    packages: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    mailstack: str
    compose: str
    engine: str
    images: tuple[ImageInventory, ...] = ()

    def __str__(self) -> str:
        lines = [
            f"mailstack {self.mailstack}",
            f"docker compose {self.compose or 'not found'}",
            f"docker engine {self.engine or 'not reachable'}",
        ]
        for item in self.images:
            state = f"{len(item.packages)} packages" if item.present else "not built"
            lines.append(f"{item.image}: {item.reference} ({state})")
        return "\n".join(lines)


def inventory(stack_root: Path | None) -> Inventory:
    return Inventory(
        __version__,
        _compose_version(),
        _engine_version(),
        tuple(_image(name, ref) for name, ref in sorted(_recorded(stack_root).items())),
    )


def _recorded(stack_root: Path | None) -> dict[str, str]:
    return imagerefs.read(stack_root) if stack_root is not None else {}


def _image(name: str, reference: str) -> ImageInventory:
    if not DOCKER.has_image(reference):
        return ImageInventory(name, reference, False)
    return ImageInventory(name, reference, True, builder.installed_packages(reference))


def _compose_version() -> str:
    try:
        result = process.run([*compose_command(), "version", "--short"], check=False, timeout=30)
    except MailstackError:
        return ""
    return result.stdout.decode(errors="replace").strip()


def _engine_version() -> str:
    try:
        return DOCKER.server_version()
    except MailstackError:
        return ""
