"""mailstack.adapters.docker: one-shot containers and builds as data; their command lines are pure."""

from __future__ import annotations

import itertools
from pathlib import Path

from mailstack.adapters.docker import Bind, Build, OneShot


def test_a_one_shot_job_is_hardened_unlogged_and_offline_unless_asked() -> None:
    argv = OneShot("mailstack/backup:abc", ("snapshots",)).argv()
    assert argv[:3] == ["docker", "run", "--rm"]
    assert argv[argv.index("--security-opt") + 1] == "no-new-privileges:true"
    assert argv[argv.index("--cap-drop") + 1] == "ALL" and "--cap-add" not in argv
    assert argv[argv.index("--network") + 1] == "none"
    # A job's output (a decrypted dump) never lands in Docker's log files on the host.
    assert argv[argv.index("--log-driver") + 1] == "none"
    assert argv[-2:] == ["mailstack/backup:abc", "snapshots"]


def test_every_option_of_a_job_lands_before_the_image_and_its_command_after() -> None:
    job = OneShot(
        "img:1",
        ("--flag", "value"),
        entrypoint="pg_restore",
        name="stack-job",
        hostname="mailstack-backup",
        network="host",
        binds=(Bind("/srv/repo", "/repo"), Bind("/etc/key", "/run/key", read_only=True)),
        env=(("RESTIC_REPOSITORY", "/repo"),),
        tmpfs=("/tmp:mode=1777",),
        cap_add=("DAC_READ_SEARCH",),
        read_only=True,
        log=True,
    )
    argv = job.argv()
    image = argv.index("img:1")
    assert argv[image + 1 :] == ["--flag", "value"]
    options = argv[:image]
    adjacent = set(itertools.pairwise(options))
    assert {
        ("--name", "stack-job"),
        ("--hostname", "mailstack-backup"),
        ("--network", "host"),
        ("--volume", "/srv/repo:/repo"),
        ("--volume", "/etc/key:/run/key:ro"),
        ("--env", "RESTIC_REPOSITORY=/repo"),
        ("--tmpfs", "/tmp:mode=1777"),
        ("--cap-add", "DAC_READ_SEARCH"),
        ("--entrypoint", "pg_restore"),
    } <= adjacent
    assert "--read-only" in options and "--log-driver" not in options


def test_the_package_resolver_keeps_apt_s_privileges_and_the_bridge() -> None:
    argv = OneShot("base:1", ("plan",), network="bridge", hardened=False).argv()
    assert "--cap-drop" not in argv and "--security-opt" not in argv
    assert argv[argv.index("--network") + 1] == "bridge"


def test_a_build_names_its_file_arguments_and_labels_then_the_context() -> None:
    build = Build(
        Path("/ctx"),
        "mailstack/postfix:abc",
        Path("/ctx/postfix/Dockerfile"),
        {"BASE_IMAGE": "mailstack/base:1", "PACKAGES_DIGEST": "d"},
        ("org.opencontainers.image.vendor=mailstack",),
    )
    assert build.argv() == [
        "docker", "build", "--tag", "mailstack/postfix:abc",
        "--file", "/ctx/postfix/Dockerfile",
        "--build-arg", "BASE_IMAGE=mailstack/base:1",
        "--build-arg", "PACKAGES_DIGEST=d",
        "--label", "org.opencontainers.image.vendor=mailstack",
        "/ctx",
    ]  # fmt: skip
