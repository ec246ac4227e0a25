"""Image tags that follow what is in each image, not mailstack's version.

A tag is a digest of the image's build context, the base layer's own files (compose/base) and
the package versions the image gets (its plan, images.packageplan). Rebuilding with nothing
new upstream gives the same tag, so Compose recreates nothing; a Debian fix gives a new tag to
exactly the images that contain the fixed package; a release that leaves a service's context
alone leaves its tag alone (a version in every tag would restart the whole stack, Postfix
included, on every release).
"""

from __future__ import annotations

import hashlib

from mailstack.resources import build_contexts_dir, package_dir

DEBIAN_IMAGE = "mailstack/debian:bookworm"  # debootstrap'd release (images.ensure_debian_image)
BASE_CONTEXT = "base"  # compose/base: the layer every image builds on
# Bumped when how an image is built changes outside its context (build arguments, labels).
_SCHEME = "2"
_IGNORED = ("__pycache__", ".pyc")  # what running unit tests leaves beside bansd.py
UNRESOLVED = "unresolved"  # the plan digest before any was resolved (images.registry)
# Images that run mailstack's own core: the build adds the package's source to their context
# (generated_files), so the image holds exactly the host's version and its tag follows it.
RUNS_MAILSTACK = frozenset({"admin"})
_PACKAGE_FILES = (".py", ".sql")


def context_digest(context: str) -> str:
    """sha256 over a build context's files: relative paths, modes and bytes."""
    root = build_contexts_dir() / context
    digest = hashlib.sha256(f"{context}\0".encode())
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if not path.is_file() or any(part in relative for part in _IGNORED):
            continue
        mode = path.stat().st_mode & 0o777
        digest.update(f"{relative}\0{mode:o}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def content_tag(image: str, plan_digest: str = UNRESOLVED) -> str:
    """The tag of an image built from its context on the base layer with its plan."""
    digest = hashlib.sha256(f"{_SCHEME}\0{image}\0{plan_digest}\0".encode())
    digest.update(context_digest(image).encode())
    digest.update(context_digest(BASE_CONTEXT).encode())
    generated = generated_files(image)
    if generated:
        digest.update(files_digest(generated).encode())
    return digest.hexdigest()[:16]


def generated_files(image: str) -> dict[str, bytes]:
    """What a build adds to an image's context, by path in the context: for an image that
    runs mailstack's core, the package's source (its modules and migrations; no tests)."""
    if image not in RUNS_MAILSTACK:
        return {}
    root = package_dir()
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and path.suffix in _PACKAGE_FILES and "__pycache__" not in relative:
            files[f"{image}/mailstack/{relative}"] = path.read_bytes()
    return files


def files_digest(files: dict[str, bytes]) -> str:
    """sha256 over named contents (a generated build context)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{len(files[name])}\0".encode())
        digest.update(files[name])
    return digest.hexdigest()
