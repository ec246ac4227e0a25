"""The service registry (mailstack.services) and the rendered compose.yaml say the same:
every service has a record, each record's image, optional feature and fixed address hold."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
import yaml

from mailstack import services
from mailstack.stack.config import validate_config
from mailstack.stack.render import RenderInputs, render_stack
from tests.conftest import REFERENCE

EVERYTHING_ON: dict[str, Any] = {
    **REFERENCE,
    "mode": "sandbox",
    "features": {"antivirus": True, "webmail": True},
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
