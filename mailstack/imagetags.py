"""Image tags that follow what is in each build context, not mailstack's version.

A release that leaves a service's build context alone leaves its tag alone, so Compose sees
nothing to change and `mailstack update` does not restart that service (a version in every
tag would restart the whole stack, Postfix included, on every release).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from mailstack.resources import build_contexts_dir

BASE_IMAGE = "mailstack/debian:bookworm"
# Bumped when how an image is built changes outside its context (build arguments, labels).
_SCHEME = "1"
_IGNORED = ("__pycache__", ".pyc")  # what running unit tests leaves beside bansd.py


def content_tag(service: str) -> str:
    """A tag from the service's build context (paths, modes, bytes) and the base image."""
    root = build_contexts_dir() / service
    digest = hashlib.sha256(f"{_SCHEME}\0{BASE_IMAGE}\0{service}\0".encode())
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if not path.is_file() or any(part in relative for part in _IGNORED):
            continue
        mode = path.stat().st_mode & 0o777
        digest.update(f"{relative}\0{mode:o}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def content_tags(services: Iterable[str]) -> dict[str, str]:
    return {service: content_tag(service) for service in services}
