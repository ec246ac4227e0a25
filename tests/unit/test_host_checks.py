"""Host-facing checks that need no Docker: Compose version, subnet overlap, mirrors, sizes."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest

from mailstack.adapters import compose
from mailstack.errors import DockerUnavailable, UsageError
from mailstack.runtime.lifecycle import check_subnets, routes_from_proc
from mailstack.stack.config import validate_config
from mailstack.units import parse_size


def fake_program(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_compose_v1_is_refused_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_program(tmp_path, "docker", "exit 1")  # a docker CLI without the compose plugin
    fake_program(tmp_path, "docker-compose", "echo 1.29.2")
    monkeypatch.setenv("PATH", str(tmp_path))
    compose.compose_command.cache_clear()
    try:
        with pytest.raises(DockerUnavailable, match="Compose v1 is not supported"):
            compose.compose_command()
    finally:
        compose.compose_command.cache_clear()


def test_compose_v2_standalone_binary_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_program(tmp_path, "docker-compose", "echo v2.40.3")
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + "/nonexistent")
    compose.compose_command.cache_clear()
    try:
        assert compose.compose_command() == ("docker-compose",)
    finally:
        compose.compose_command.cache_clear()


def test_subnet_overlapping_a_host_network_is_refused() -> None:
    config = validate_config(
        {
            "hostname": "mail.example.org",
            "domain": "example.org",
            "network": {"frontend_subnet": "10.1.2.0/24"},
        }
    )
    existing = [("docker network other_default", ipaddress.IPv4Network("10.1.0.0/16"))]
    with pytest.raises(UsageError, match=r"network.frontend_subnet: 10.1.2.0/24 overlaps"):
        check_subnets(config, existing)
    check_subnets(config, [("host route", ipaddress.IPv4Network("192.168.1.0/24"))])


def test_routes_skip_default_route_and_docker_bridges(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n"
        "eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
        "br-1234\t00501DAC\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
    )
    assert routes_from_proc(table) == [ipaddress.IPv4Network("192.168.1.0/24")]


@pytest.mark.parametrize(
    ("text", "expected"), [("2G", 2 * 1024**3), ("500M", 500 * 1024**2), ("0", 0), ("1KiB", 1024)]
)
def test_sizes_as_operators_write_them(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["2 GB of space", "-1G", "1.5G", "G", ""])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)
