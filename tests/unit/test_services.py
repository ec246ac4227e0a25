"""The service registry (mailstack.services) and the rendered compose.yaml say the same:
every service has a record, each record's image, optional feature and fixed address hold."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailstack import services
from mailstack.backup.creation import PAUSED_SERVICES
from mailstack.stack.config import validate_config
from mailstack.stack.render import RenderInputs, render_stack
from tests.conftest import REFERENCE

REPO = Path(__file__).resolve().parents[2]

EVERYTHING_ON: dict[str, Any] = {
    **REFERENCE,
    "mode": "sandbox",
    "features": {"antivirus": True, "webmail": True},
    "monitoring": {"metrics": True},
}
EVERYTHING_OFF: dict[str, Any] = {
    **REFERENCE,
    "mode": "production",
    "features": {"antivirus": False, "webmail": False},
    "policy": {"bans": {"enabled": False}},
}


def _compose(data: dict[str, Any]) -> dict[str, Any]:
    files = render_stack(RenderInputs(validate_config(data), "1"))
    return dict(yaml.safe_load(files["compose.yaml"])["services"])


@pytest.mark.parametrize("data", [EVERYTHING_ON, EVERYTHING_OFF], ids=["all-on", "all-off"])
def test_the_rendered_services_are_exactly_those_whose_record_says_they_run(
    data: dict[str, Any],
) -> None:
    config = validate_config(data)
    rendered = _compose(data)
    assert set(rendered) == {s.name for s in services.SERVICES if s.runs_in(config)}
    for name, service in rendered.items():
        image = str(service["image"])
        assert f"mailstack/{services.named(name).image}:" in image, (name, image)


def test_each_fixed_address_in_compose_yaml_is_the_records() -> None:
    config = validate_config(EVERYTHING_ON)
    subnets = {
        "frontend": ipaddress.ip_network(config.network.frontend_subnet),
        "backend": ipaddress.ip_network(config.network.backend_subnet),
        "metrics": ipaddress.ip_network(config.monitoring.metrics_subnet),
    }
    seen = set()
    for name, service in _compose(EVERYTHING_ON).items():
        for network, settings in (service.get("networks") or {}).items():
            if isinstance(settings, dict) and "ipv4_address" in settings:
                record = services.named(name)
                assert settings["ipv4_address"] == services.fixed_address(
                    record, subnets[network]
                ), (name, network)
                seen.add(name)
    assert seen == services.with_fixed_address()


def test_images_are_built_once_each_and_the_jobs_images_too() -> None:
    assert len(services.IMAGES) == len(set(services.IMAGES))
    assert {"backup", "acme"} <= set(services.IMAGES)
    assert services.SINK.image == services.POSTFIX.image == "postfix"


@pytest.mark.parametrize("data", [EVERYTHING_ON, EVERYTHING_OFF], ids=["all-on", "all-off"])
def test_each_service_gets_back_exactly_the_capabilities_of_its_record(
    data: dict[str, Any],
) -> None:
    for name, service in _compose(data).items():
        assert service["cap_drop"] == ["ALL"], name
        assert tuple(service.get("cap_add", ())) == services.named(name).capabilities, name


def _security_md_capabilities() -> dict[str, tuple[str, ...]]:
    """SECURITY.md's table of capabilities: {container: what it says is added back}."""
    text = (REPO / "SECURITY.md").read_text()
    table = text[text.index("| container | added back | why |") :].split("\n\n", 1)[0]
    said: dict[str, tuple[str, ...]] = {}
    for row in table.splitlines()[2:]:
        containers, added, _why = (cell.strip() for cell in row.strip("|").split("|"))
        capabilities = () if added == "none" else tuple(re.findall(r"`([A-Z_]+)`", added))
        for container in containers.split(", "):
            said[container] = capabilities
    return said


def test_security_md_says_why_for_every_capability_of_every_service() -> None:
    assert _security_md_capabilities() == {s.name: s.capabilities for s in services.SERVICES}


def test_a_fixed_uid_or_gid_means_the_same_user_in_every_image() -> None:
    # compose.yaml's tmpfs mounts and user: lines name these numbers; two images giving one
    # number to two users (or one user two numbers) would hand one's files to the other.
    owners: dict[tuple[str, str], set[str]] = {}
    for dockerfile in sorted((REPO / "compose").glob("*/Dockerfile")):
        commands = re.split(r"&&|\bRUN\b", dockerfile.read_text().replace("\\\n", " "))
        for command in commands:
            words = command.split()
            for kind, option in (("useradd", "--uid"), ("groupadd", "--gid")):
                if kind in words and option in words:
                    number = words[words.index(option) + 1]
                    owners.setdefault((kind, number), set()).add(words[-1])
    assert owners, "no fixed uid found: the pattern no longer matches the Dockerfiles"
    by_name: dict[tuple[str, str], set[str]] = {}
    for (kind, number), names in owners.items():
        assert len(names) == 1, (kind, number, names)
        by_name.setdefault((kind, next(iter(names))), set()).add(number)
    assert all(len(numbers) == 1 for numbers in by_name.values()), by_name


def test_backups_pause_only_services_that_one_host_runs() -> None:
    """`backup create` pauses through Compose on one host: a service of a cluster alone
    (the mailbox back ends) would make Compose refuse the whole pause ("no such service")."""
    config = validate_config(REFERENCE)
    assert PAUSED_SERVICES and all(services.named(name).runs_in(config) for name in PAUSED_SERVICES)
