"""Which image each part of a stack runs: `<stack>/.env`, written by mailstack after a build.

compose.yaml names every image as `${MAILSTACK_IMAGE_<NAME>:-mailstack/<name>:unbuilt}`, and
Compose reads `.env` in the project directory for those values, so a security update changes
one file mailstack owns, never a file the operator may have edited, and `docker compose` run
by hand sees the same images as mailstack. The one reader and writer of that file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from mailstack.stack.stackdir import atomic_write

ENV_FILE = ".env"
UNBUILT_TAG = "unbuilt"
_LINE = re.compile(r"^MAILSTACK_IMAGE_(?P<key>[A-Z0-9_]+)=(?P<reference>\S+)\Z")
_HEADER = (
    "# Written by mailstack: the image each service runs (their tags follow the packages in\n"
    "# them; `mailstack build` and `mailstack update` change them). Do not edit.\n"
)


def variable(image: str) -> str:
    """The Compose variable that names an image: mta-sts -> MAILSTACK_IMAGE_MTA_STS."""
    return "MAILSTACK_IMAGE_" + image.upper().replace("-", "_")


def placeholder(image: str, prefix: str = "mailstack") -> str:
    """What compose.yaml falls back to before a build: a reference no image has."""
    return f"{prefix}/{image}:{UNBUILT_TAG}"


def compose_reference(image: str, prefix: str = "mailstack") -> str:
    """The image: value in compose.yaml."""
    return "${" + variable(image) + ":-" + placeholder(image, prefix) + "}"


def image_name(reference: str) -> str:
    """The image (build context) a reference is of: registry/mailstack/postfix:tag -> postfix."""
    return reference.rsplit("/", 1)[-1].split(":", 1)[0]


def read(root: Path) -> dict[str, str]:
    """{image: reference} as recorded; {} before the first build."""
    path = root / ENV_FILE
    if not path.is_file():
        return {}
    found: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        match = _LINE.match(line.strip())
        if match:
            found[image_name(match["reference"])] = match["reference"]
    return found


def write(root: Path, references: Mapping[str, str]) -> bool:
    """Record references (merged over what is recorded); False when nothing changed."""
    merged = {**read(root), **references}
    lines = [f"{variable(image)}={merged[image]}\n" for image in sorted(merged)]
    content = (_HEADER + "".join(lines)).encode()
    path = root / ENV_FILE
    if path.is_file() and path.read_bytes() == content:
        return False
    atomic_write(path, content, 0o644)
    return True
