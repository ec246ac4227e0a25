"""Images: the Debian release (debootstrap when no registry is reachable), the base layer with
the host's apt sources, package plans, and builds whose tags follow the packages in them.

A build of image X: resolve X's plan (packageplan), tag = content_tag(X, plan digest), build
only when no image has that tag, with the plan's digest as a build argument (the install runs
again exactly when the plan changed, and fails unless it installs the plan) and the package
set as a label (read by `check updates` and `version` without running anything).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mailstack.adapters import process
from mailstack.adapters.docker import DOCKER, Build, OneShot
from mailstack.errors import ExternalCommandFailed, MailstackError
from mailstack.images import aptsources, imagerefs, packageplan
from mailstack.images.imagetags import (
    BASE_CONTEXT,
    DEBIAN_IMAGE,
    content_tag,
    context_digest,
    files_digest,
    generated_files,
)
from mailstack.resources import build_contexts_dir
from mailstack.stack.stackdir import Stack

PACKAGES_LABEL = "org.mailstack.packages"
PLAN_LABEL = "org.mailstack.packages.digest"
VENDOR_LABEL = "org.opencontainers.image.vendor=mailstack"
_PLAN_CHANGED_EXIT = 3  # mailstack-packages: the mirror moved between plan and build

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuildResult:
    service: str
    image: str
    seconds: float


@dataclass(frozen=True)
class ImagesResult:
    """What a build run did: the references recorded, the images built, the plans used."""

    references: Mapping[str, str]
    built: tuple[BuildResult, ...]
    plans: Mapping[str, packageplan.Plan]


def reference(registry: str | None, name: str, tag: str | None = None) -> str:
    """An image of mailstack's: mailstack/<name>:<tag>, under the registry when set."""
    prefix = f"{registry}/mailstack" if registry else "mailstack"
    return f"{prefix}/{name}:{tag or content_tag(name)}"


def installed_packages(reference: str) -> dict[str, str]:
    """An image's package set: its label, or dpkg's database for an image built without one."""
    labels = DOCKER.image_labels(reference)
    if PACKAGES_LABEL in labels:
        return packageplan.parse_package_set(labels[PACKAGES_LABEL])
    query = OneShot(
        reference,
        ("-W", "-f", "${db:Status-Status} ${Package} ${Version}\\n"),
        entrypoint="dpkg-query",
    )
    listing = DOCKER.run(query, timeout=120, what=f"dpkg-query in {reference}")
    lines = listing.stdout.decode(errors="replace").splitlines()
    return packageplan.parse_package_set(
        "\n".join(
            line.removeprefix("installed ") for line in lines if line.startswith("installed ")
        )
    )


# --- the Debian release and the base layer ---------------------------------------------------


def debian_mirror(apt_sources: Path | None = None) -> str:
    """The mirror debootstrap uses: from the host's apt sources (never hard-coded)."""
    return aptsources.debootstrap_mirror(aptsources.configured_sources(apt_sources))


def ensure_base_image(rebuild: bool = False, apt_sources: Path | None = None) -> bool:
    """Make the Debian release image with debootstrap; False when it already existed."""
    if DOCKER.has_image(DEBIAN_IMAGE) and not rebuild:
        return False
    mirror = debian_mirror(apt_sources)
    with tempfile.TemporaryDirectory(prefix="mailstack-rootfs-") as rootfs:
        process.run(
            ["debootstrap", "--variant=minbase", aptsources.RELEASE, rootfs, mirror],
            timeout=1800,
            what="debootstrap",
        )
        # Keep the image small: no apt lists or caches from the bootstrap.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (Path(rootfs) / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = process.run(["tar", "-C", rootfs, "-c", "."], timeout=600, what="tar")
        DOCKER.import_rootfs(tar.stdout, DEBIAN_IMAGE)
    return True


def base_layer_files(apt_sources: Path | None) -> dict[str, bytes]:
    """The generated part of the base layer's context: apt's sources and their keyrings."""
    entries = aptsources.image_sources(aptsources.configured_sources(apt_sources))
    keyrings = aptsources.keyring_files(entries)
    in_image = {path: aptsources.image_keyring_path(path, i) for i, path in enumerate(keyrings)}
    files = {
        "apt/sources.list.d/mailstack.sources": aptsources.render_deb822(entries, in_image).encode()
    }
    for host_path, image_path in in_image.items():
        try:
            files["apt/" + image_path.removeprefix("/etc/apt/")] = Path(host_path).read_bytes()
        except OSError as e:
            raise MailstackError(
                f"the apt sources name the keyring {host_path}, which cannot be read "
                f"({e.strerror})",
                hint="fix Signed-By in the apt sources, or install the keyring",
            ) from None
    return files


def ensure_base_layer(apt_sources: Path | None = None) -> str:
    """The base layer for these apt sources (built when missing): mailstack/base:<digest>."""
    ensure_base_image(apt_sources=apt_sources)
    generated = base_layer_files(apt_sources)
    shipped = build_contexts_dir() / BASE_CONTEXT
    identity = {
        **generated,
        "debian-image": (DOCKER.image_id(DEBIAN_IMAGE) or "").encode(),
        "compose/base": context_digest(BASE_CONTEXT).encode(),
    }
    tag = files_digest(identity)[:16]
    layer = f"mailstack/base:{tag}"
    if DOCKER.has_image(layer):
        return layer
    with tempfile.TemporaryDirectory(prefix="mailstack-base-") as scratch:
        context = Path(scratch) / "context"
        shutil.copytree(shipped, context)
        for relative, content in generated.items():
            target = context / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(0o644)
        layer_build = Build(
            context, layer, build_args={"DEBIAN_IMAGE": DEBIAN_IMAGE}, labels=(VENDOR_LABEL,)
        )
        DOCKER.build(layer_build, timeout=600, what="docker build base layer")
    return layer


# --- plans and builds --------------------------------------------------------------------------


def resolve_plans(base_layer: str, names: Sequence[str]) -> dict[str, packageplan.Plan]:
    return packageplan.resolve(base_layer, str(build_contexts_dir()), list(names))


def build_image(
    service: str, image: str, *, base_layer: str, plan: packageplan.Plan | None = None
) -> None:
    contexts = build_contexts_dir()
    dockerfile = contexts / service / "Dockerfile"
    if not dockerfile.is_file():
        raise MailstackError(f"no build context for {service} ({dockerfile} is missing)")
    build_args = {"BASE_IMAGE": base_layer}
    labels: tuple[str, ...] = (VENDOR_LABEL,)
    if plan is not None:
        build_args["PACKAGES_DIGEST"] = plan.digest
        labels += (
            f"{PLAN_LABEL}={plan.digest}",
            f"{PACKAGES_LABEL}={packageplan.package_set_text(plan.packages)}",
        )
    generated = generated_files(service)
    if not generated:
        image_build = Build(contexts, image, dockerfile, build_args, labels)
        DOCKER.build(image_build, timeout=3600, what=f"docker build {service}")
        return
    # Its own context plus the generated files, in a scratch copy (the shipped tree is
    # never written).
    with tempfile.TemporaryDirectory(prefix=f"mailstack-{service}-") as scratch:
        context = Path(scratch)
        shutil.copytree(contexts / service, context / service)
        for relative, content in generated.items():
            target = context / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(0o644)
        image_build = Build(context, image, context / service / "Dockerfile", build_args, labels)
        DOCKER.build(image_build, timeout=3600, what=f"docker build {service}")


def build_current(
    names: Sequence[str],
    *,
    apt_sources: Path | None = None,
    progress: Progress | None = None,
    plans: Mapping[str, packageplan.Plan] | None = None,
    retry: bool = True,
) -> ImagesResult:
    """Each named image at Debian's newest packages: resolved, tagged by content, built when
    no image has its tag. A mirror that moves during the build is resolved again, once."""
    layer = ensure_base_layer(apt_sources)
    if plans is None:
        _say(progress, "resolving the newest Debian packages for each image")
        plans = resolve_plans(layer, names)
    built: list[BuildResult] = []
    references: dict[str, str] = {}
    missing = []
    for name in names:
        references[name] = reference(None, name, content_tag(name, plans[name].digest))
        if not DOCKER.has_image(references[name]):
            missing.append(name)
    for index, name in enumerate(missing):
        _say(progress, f"building {name} ({index + 1}/{len(missing)})")
        started = time.monotonic()
        try:
            build_image(name, references[name], base_layer=layer, plan=plans[name])
        except ExternalCommandFailed as e:
            if not retry or "the Debian mirror changed during the build" not in e.output:
                raise
            _say(progress, "the Debian mirror changed during the build: resolving again")
            return build_current(names, apt_sources=apt_sources, progress=progress, retry=False)
        built.append(BuildResult(name, references[name], time.monotonic() - started))
    return ImagesResult(references, tuple(built), plans)


def pull_all(images: dict[str, str]) -> None:
    for image in sorted(set(images.values())):
        DOCKER.pull(image)


def pull_and_record(root: Path, registry: str, names: Sequence[str]) -> dict[str, str]:
    """images.registry: pull the named images and record them in .env."""
    pulled = {name: reference(registry, name) for name in names}
    pull_all(pulled)
    imagerefs.write(root, pulled)
    return pulled


def ensure_images(
    root: Path,
    names: Sequence[str],
    *,
    registry: str | None,
    apt_sources: Path | None,
    progress: Progress | None = None,
) -> dict[str, str]:
    """The recorded reference of each named image, made (built or pulled) and recorded when
    it is missing: what one-shot jobs (backup, acme) and a fresh host need."""
    recorded = imagerefs.read(root)
    have = {name: recorded[name] for name in names if name in recorded}
    missing = [name for name in names if name not in have or not DOCKER.has_image(have[name])]
    if not missing:
        return have
    if registry:
        return {**have, **pull_and_record(root, registry, missing)}
    result = build_current(missing, apt_sources=apt_sources, progress=progress)
    imagerefs.write(root, result.references)
    return {**have, **result.references}


def _say(progress: Progress | None, message: str) -> None:
    if progress:
        progress(message)


def wanted(stack: Stack) -> list[str]:
    """Every image the stack uses: its services' and the one-shot jobs' (backup, acme)."""
    names = {imagerefs.image_name(reference) for reference in stack.compose.images().values()}
    names.add("backup")  # no service runs it: `mailstack backup` starts it for each job
    if stack.config.tls.mode == "acme":  # likewise run by `mailstack tls renew`
        names.add("acme")
    return sorted(names)
