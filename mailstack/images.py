"""Images: the Debian base image (debootstrap when no registry is reachable) and the builds."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailstack import process
from mailstack.errors import MailstackError
from mailstack.imagetags import BASE_IMAGE, content_tag
from mailstack.render import IMAGE_SERVICES
from mailstack.resources import build_contexts_dir

SUITE = "bookworm"
APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))


@dataclass(frozen=True)
class BuildResult:
    service: str
    image: str
    seconds: float


def reference(registry: str | None, name: str, tag: str | None = None) -> str:
    """An image of mailstack's: mailstack/<name>:<tag>, under the registry when set; the tag
    follows the build context (imagetags.content_tag) unless given."""
    prefix = f"{registry}/mailstack" if registry else "mailstack"
    return f"{prefix}/{name}:{tag or content_tag(name)}"


def image_exists(reference: str) -> bool:
    result = process.run(["docker", "image", "inspect", reference], check=False, timeout=60)
    return result.returncode == 0


def debian_mirror(sources: tuple[Path, ...] = APT_SOURCES) -> str:
    """The host's configured Debian mirror, read from its apt sources (never hard-coded)."""
    for text in _apt_source_texts(sources):
        mirror = mirror_from_sources(text)
        if mirror:
            return mirror
    raise MailstackError(
        "no Debian mirror found in the host's apt sources",
        hint="configure apt (/etc/apt/sources.list.d/debian.sources), or set images.registry",
    )


def mirror_from_sources(text: str) -> str | None:
    """The first Debian archive URI in a sources.list or deb822 .sources text."""
    uris: list[str] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if line.startswith("URIs:"):
            uris += line.removeprefix("URIs:").split()
        elif line.startswith("deb "):
            parts = [part for part in line.split() if not part.startswith("[")]
            if len(parts) >= 2:
                uris.append(parts[1])
    for uri in uris:
        if re.match(r"^https?://", uri) and "security" not in uri and "debian" in uri:
            return uri
    return None


def _apt_source_texts(sources: tuple[Path, ...]) -> list[str]:
    texts: list[str] = []
    for source in sources:
        if source.is_dir():
            texts += [p.read_text(errors="replace") for p in sorted(source.glob("*.sources"))]
            texts += [p.read_text(errors="replace") for p in sorted(source.glob("*.list"))]
        elif source.is_file():
            texts.append(source.read_text(errors="replace"))
    return texts


def ensure_base_image(rebuild: bool = False) -> bool:
    """Make the base image with debootstrap and import it; False when it already existed."""
    if image_exists(BASE_IMAGE) and not rebuild:
        return False
    mirror = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="mailstack-rootfs-") as rootfs:
        process.run(
            ["debootstrap", "--variant=minbase", SUITE, rootfs, mirror],
            timeout=1800,
            what="debootstrap",
        )
        # Keep the image small: no apt lists or caches from the bootstrap.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (Path(rootfs) / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = process.run(["tar", "-C", rootfs, "-c", "."], timeout=600, what="tar")
        process.run(
            ["docker", "import", "-", BASE_IMAGE],
            input=tar.stdout,
            timeout=600,
            what="docker import",
        )
    return True


def build_order(services: tuple[str, ...] = IMAGE_SERVICES) -> list[str]:
    return list(services)


def build_image(service: str, image: str, *, pull_base: bool = False) -> None:
    contexts = build_contexts_dir()
    dockerfile = contexts / service / "Dockerfile"
    if not dockerfile.is_file():
        raise MailstackError(f"no build context for {service} ({dockerfile} is missing)")
    argv = [
        "docker",
        "build",
        "--tag",
        image,
        "--file",
        str(dockerfile),
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "--label",
        "org.opencontainers.image.vendor=mailstack",
    ]
    if pull_base:
        argv.append("--pull")
    process.run([*argv, str(contexts)], timeout=3600, what=f"docker build {service}")


def build_all(
    images: dict[str, str], progress: Callable[[str, int, int], None] | None = None
) -> list[BuildResult]:
    """Build every service image in `images` ({service: reference}); layer cache reused."""
    import time  # noqa: PLC0415  # only builds need a clock

    ensure_base_image()
    results: list[BuildResult] = []
    order = [service for service in build_order() if service in images]
    for index, service in enumerate(order):
        if progress:
            progress(service, index, len(order))
        started = time.monotonic()
        build_image(service, images[service])
        results.append(BuildResult(service, images[service], time.monotonic() - started))
    return results


def pull_all(images: dict[str, str]) -> None:
    for image in sorted(set(images.values())):
        process.run(["docker", "pull", image], timeout=1800, what=f"docker pull {image}")
